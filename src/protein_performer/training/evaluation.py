"""The one evaluation loop (the trainer's validation and ``evaluate`` both run it), and held-out
accuracy and perplexity of a saved model beside the empirical baseline (the paper's Table 2).

Which positions count: the collator's labels (the 15% selected positions for mlm, every one of them
shown as ``<mask>``; every next token for causal), with masks fixed by the dataset's seed and each
sample's index, so the numbers are deterministic.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor
from torch.nn import functional as F
from tqdm import tqdm

from ..data import DEFAULT_CORPUS_PATH, IGNORE_INDEX, EncodedCorpus
from ..devices import resolve_device
from ..rundir import RunDir
from .config import TrainConfig
from .distributed import Distributed
from .objective import amino_acid_frequencies, forward_logits, make_collator, make_dataset


@torch.no_grad()
def evaluate_dataset(model: torch.nn.Module, dataset, collator, *, batch_size: int, max_sequences: int | None = None,
                     precision: str = "bf16", frequencies: list[float] | None = None, dist: Distributed | None = None,
                     lockstep: bool = False, progress: bool = False) -> dict:
    """Loss (mean cross-entropy), accuracy and perplexity over the predicted positions of the first
    ``max_sequences`` samples (all when None), in batches of ``batch_size``; with ``frequencies``
    ``[V]`` also ``baseline_accuracy`` and ``baseline_perplexity`` of predicting from them.

    With ``dist``, batches are dealt out round-robin over the ranks and the sums reduced. ``lockstep``
    (sharded models, whose every forward is a collective) makes a rank without a batch left run its
    first batch again and discard the result, so all ranks call the model equally often.
    ``progress``: a bar of sequences on stderr (changes nothing computed).
    """
    dist = dist or Distributed()
    was_training = model.training
    model.eval()
    stop = len(dataset) if max_sequences is None else min(len(dataset), max_sequences)
    starts = list(range(0, stop, batch_size))
    mine = starts[dist.rank::dist.world_size]
    rounds = -(-len(starts) // dist.world_size) if lockstep else len(mine)
    log_freq = torch.tensor(frequencies).log() if frequencies is not None else None
    best = int(log_freq.argmax()) if log_freq is not None else -1
    device = next(model.parameters()).device
    # Summed on the device and read once at the end (no host sync per batch); counts from the CPU labels.
    nll = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    base_nll, total, base_correct = 0.0, 0, 0
    bar = tqdm(total=sum(min(stop, s + batch_size) - s for s in mine), unit="seq", desc="evaluate", disable=not progress,
               leave=False, dynamic_ncols=True)
    for i in range(rounds):
        start = mine[i] if i < len(mine) else starts[0]
        indices = range(start, min(stop, start + batch_size))
        batch = collator([dataset[g] for g in indices], [dataset.generator_for(g) for g in indices])
        logits, labels = forward_logits(model, batch, precision)
        if i >= len(mine):
            continue
        bar.update(len(indices))
        nll += F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum").double()
        correct += ((logits.argmax(-1) == labels) & (labels != IGNORE_INDEX)).sum()
        target: Tensor = batch["labels"][batch["labels"] != IGNORE_INDEX]  # on the CPU
        total += target.numel()
        if log_freq is not None:
            base_nll -= log_freq[target].sum().item()
            base_correct += int((target == best).sum())
    bar.close()
    model.train(was_training)
    nll, total, correct, base_nll, base_correct = dist.sum([float(nll), total, int(correct), base_nll, base_correct], device)
    mean = nll / max(total, 1)
    result = {"loss": mean, "accuracy": correct / max(total, 1), "perplexity": math.exp(mean), "tokens": int(total)}
    if log_freq is not None:
        result.update(baseline_accuracy=base_correct / max(total, 1), baseline_perplexity=math.exp(base_nll / max(total, 1)))
    return result


def evaluate(checkpoint: str | os.PathLike, data: str | os.PathLike | None = None, *, batch_size: int = 8,
             max_sequences: int | None = None, seq_len: int | None = None, seed: int = 0,
             device: str | torch.device | None = None, progress: bool = False) -> dict:
    """Accuracy and perplexity of a saved model on masked positions (mlm) or next tokens (causal), and
    the same for predicting from the training split's amino-acid frequencies. Default data: the test
    split of the embedded corpus; FASTA or JSON lines (:meth:`EncodedCorpus.from_file`). Crops as in
    training (its ``seq_len`` unless given). ``device``: :func:`~protein_performer.devices.resolve_device`
    (default: CUDA when available). ``progress``: a bar on stderr."""
    if batch_size < 1 or (max_sequences is not None and max_sequences < 1):
        raise ValueError(f"`batch_size` and `max_sequences` must be positive, got {batch_size} and {max_sequences}")
    target = resolve_device(device)
    run = RunDir(checkpoint)
    model = run.load_model().to(target)
    config = model.config
    recorded = run.read_train_config()
    tc = TrainConfig.from_dict(recorded, source=run.train_config) if recorded is not None else TrainConfig()
    tc = tc.replace(seed=seed, seq_len=seq_len if seq_len is not None else tc.seq_len)
    corpus = EncodedCorpus.from_file(data) if data is not None else EncodedCorpus.from_fasta(DEFAULT_CORPUS_PATH, split="test")
    if len(corpus) == 0:
        raise ValueError(f"no sequences to evaluate in {data or DEFAULT_CORPUS_PATH}")
    frequencies = run.read_frequencies(config.vocab_size)
    if frequencies is None:
        frequencies = amino_acid_frequencies(EncodedCorpus.from_file(tc.data, split="train"), with_eos=config.causal)
    dataset = make_dataset(corpus, tc, train=False)
    result = evaluate_dataset(model, dataset, make_collator(config, evaluation=True), batch_size=batch_size, max_sequences=max_sequences,
                              precision=tc.precision, frequencies=frequencies, progress=progress)
    return {
        "accuracy": result["accuracy"], "perplexity": result["perplexity"],
        "baseline_accuracy": result["baseline_accuracy"], "baseline_perplexity": result["baseline_perplexity"],
        "tokens": result["tokens"], "sequences": min(len(dataset), max_sequences or len(dataset)), "objective": config.objective,
    }
