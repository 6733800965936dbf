"""Held-out accuracy and perplexity beside the empirical baseline (the paper's Table 2)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch.nn import functional as F

from ..data import DEFAULT_CORPUS_PATH, IGNORE_INDEX, EncodedCorpus
from ..data.jsonlines import read_json_lines, residue_problem
from .checkpoint import TRAIN_CONFIG, load_checkpoint
from .trainer import TrainConfig, amino_acid_frequencies, autocast, make_collator, make_dataset


def read_corpus(path: str | os.PathLike, *, split: str | None = None) -> EncodedCorpus:
    """FASTA (plain or .gz), or JSON lines with ``id`` and ``sequence`` (e.g. the PDB evaluation set)."""
    path = Path(path)
    if ".jsonl" in path.suffixes:
        expected = "a JSON object with 'id' and 'sequence'"
        ids, sequences = [], []
        for where, row in read_json_lines(path, expected=expected):
            try:
                record_id, sequence = row["id"], row["sequence"].strip().upper()
            except (KeyError, AttributeError):
                raise ValueError(f"{where}: expected {expected}") from None
            problem = residue_problem(sequence)
            if problem:
                raise ValueError(f"{where}: record {record_id!r} has {problem}: fix or remove it")
            ids.append(str(record_id)), sequences.append(sequence)
        if not sequences:
            raise ValueError(f"{path} holds no sequences")
        return EncodedCorpus.from_sequences(sequences, ids)
    return EncodedCorpus.from_fasta(path, split=split)


@torch.no_grad()
def evaluate(checkpoint: str | os.PathLike, data: str | os.PathLike | None = None, *, batch_size: int = 8,
             max_sequences: int | None = None, seq_len: int | None = None, seed: int = 0) -> dict:
    """Accuracy and perplexity on masked positions (mlm) or next tokens (causal), and the same for
    predicting from the training split's amino-acid frequencies. Default data: the test split of the
    embedded corpus. Masks are fixed by ``seed``: the numbers are deterministic."""
    if batch_size < 1 or (max_sequences is not None and max_sequences < 1):
        raise ValueError(f"--batch-size and --max-sequences must be positive, got {batch_size} and {max_sequences}")
    checkpoint = Path(checkpoint)
    model, config = load_checkpoint(checkpoint)
    train_path = checkpoint / TRAIN_CONFIG
    tc = TrainConfig(**json.loads(train_path.read_text())) if train_path.exists() else TrainConfig()
    tc.seed = seed
    if seq_len is not None:
        tc.seq_len = seq_len
    corpus = read_corpus(data) if data is not None else EncodedCorpus.from_fasta(DEFAULT_CORPUS_PATH, split="test")
    if len(corpus) == 0:
        raise ValueError(f"no sequences to evaluate in {data or DEFAULT_CORPUS_PATH}")
    freq_path = checkpoint / "frequencies.json"
    if freq_path.exists():
        frequencies = torch.tensor(json.loads(freq_path.read_text())["frequencies"])
    else:
        frequencies = torch.tensor(amino_acid_frequencies(EncodedCorpus.from_fasta(tc.data, split="train"), with_eos=config.causal))
    log_freq = frequencies.log()
    dataset = make_dataset(corpus, tc, train=False)
    collator = make_collator(config)
    device = next(model.parameters()).device
    stop = len(dataset) if max_sequences is None else min(len(dataset), max_sequences)
    nll = base_nll = 0.0
    total = correct = base_correct = 0
    best = int(frequencies.argmax())
    for start in range(0, stop, batch_size):
        idx = range(start, min(stop, start + batch_size))
        batch = collator([dataset[g] for g in idx], [dataset.generator_for(g) for g in idx])
        labels = batch["labels"].to(device)
        with autocast(tc.precision, device):
            logits = model(batch["tokens"].to(device), batch["padding_mask"].to(device))["logits"].float()
        keep = labels != IGNORE_INDEX
        target = labels[keep]
        nll += F.cross_entropy(logits[keep], target, reduction="sum").item()
        correct += int((logits[keep].argmax(-1) == target).sum())
        base_nll -= log_freq[target.cpu()].sum().item()
        base_correct += int((target == best).sum())
        total += int(keep.sum())
    return {
        "accuracy": correct / total, "perplexity": math.exp(nll / total),
        "baseline_accuracy": base_correct / total, "baseline_perplexity": math.exp(base_nll / total),
        "tokens": total, "sequences": stop, "objective": config.objective,
    }
