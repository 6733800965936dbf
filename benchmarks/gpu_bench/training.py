"""The training items: end-to-end masked-LM training throughput of ``PerformerLM`` for each preset,
length and attention kind ("favor", "softmax"): AdamW steps on random batches, bf16 autocast on a GPU,
tokens/s = B·L·steps / time after the warmup steps. The batch holds about ``--train-tokens`` tokens and
halves on OOM.

The batches are made here, not by ``protein_performer.data``'s ``MaskedLMCollator``: that package reads
FASTA through biopython, which a bare GPU image lacks, and throughput does not depend on which tokens
are masked. Tokens are uniform over the residue ids, 15% of positions are predicted and shown as
``<mask>``, no padding."""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
import torch.nn.functional as F
from attention_bench.device import synchronize

from protein_performer.model import PRESETS, PerformerConfig, PerformerLM, preset

from .options import SMOKE_MODEL
from .record import MIB, Recorder, free_memory, is_oom

ATTENTIONS = ("favor", "softmax")
# The rivals part: every attention kind of the model, as in benchmarks/rivals.py on the CPU.
RIVALS = ("favor", "softmax", "local", "linear", "reformer", "linformer")
FIRST_RESIDUE = 5  # the alphabet's ids: <pad> <mask> <cls> <eos> <unk>, then the residues
MASK_SHARE = 0.15
IGNORE = -100  # cross_entropy's default ignore_index, as the collators use


def random_batch(config: PerformerConfig, batch: int, length: int, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    """A masked-LM batch: ``tokens``, ``labels`` (``IGNORE`` where not predicted), ``padding_mask``, each ``[B, L]``."""
    gen = torch.Generator().manual_seed(seed)
    original = torch.randint(FIRST_RESIDUE, config.vocab_size, (batch, length), generator=gen)
    chosen = torch.rand(batch, length, generator=gen) < MASK_SHARE
    data = {"tokens": original.masked_fill(chosen, config.mask_idx), "labels": original.masked_fill(~chosen, IGNORE),
            "padding_mask": torch.zeros(batch, length, dtype=torch.bool)}
    return {k: v.to(device) for k, v in data.items()}


def _steps(model: PerformerLM, batch: int, args: argparse.Namespace, length: int, device: torch.device) -> dict[str, Any]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = random_batch(model.config, batch, length, device, args.seed)
    bf16 = args.dtype == "bf16"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(data["tokens"], data["padding_mask"])["logits"]
        loss = F.cross_entropy(logits.float().flatten(0, 1), data["labels"].flatten(), ignore_index=IGNORE)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.train_warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.train_steps):
        step()
    synchronize(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / MIB if device.type == "cuda" else None
    return {"batch": batch, "steps": args.train_steps, "tokens_per_s": batch * length * args.train_steps / seconds,
            "step_ms": 1e3 * seconds / args.train_steps, "peak_mib": peak}


def train_item(args: argparse.Namespace, name: str, attention: str, length: int, device: torch.device) -> dict[str, Any]:
    """Throughput of one configuration; on OOM the batch halves (down to 1) and the OOMs are listed.
    Linformer is built for the one length it runs at (and learned positions, which it needs)."""
    fixed_length = {"positions": "learned", "max_len": length} if attention == "linformer" else {}
    overrides = {"attention": attention, "objective": "mlm", **(SMOKE_MODEL if args.smoke else {}), **fixed_length}
    config = preset(name, **overrides)
    torch.manual_seed(args.seed)
    model = PerformerLM(config).to(device)
    batch, ooms = max(1, args.train_tokens // length), []
    while True:
        try:
            values = _steps(model, batch, args, length, device)
            break
        except Exception as exc:
            if not is_oom(exc) or batch == 1:
                raise
        ooms.append(batch)
        model.zero_grad(set_to_none=True)
        free_memory(device)
        batch //= 2
    return {**values, "parameters": model.num_parameters(), "oom_batches": ooms}


def _describe(item: dict) -> str:
    peak = "" if item.get("peak_mib") is None else f", peak {item['peak_mib']:.0f} MiB"
    return f"{item['tokens_per_s']:.0f} tokens/s (B={item['batch']}, {item['step_ms']:.1f} ms/step{peak})"


def run_training(rec: Recorder, args: argparse.Namespace, device: torch.device) -> None:
    for name in args.train_presets:
        for length in args.train_lengths:
            for attention in ATTENTIONS:
                key = {"preset": name, "attention": attention, "length": length}
                if name not in PRESETS:
                    rec.note("train", key, f"unknown preset; PRESETS has {', '.join(PRESETS)}")
                else:
                    rec.measure("train", key, lambda n=name, a=attention, L=length: train_item(args, n, a, L, device), _describe)


def run_rivals(rec: Recorder, args: argparse.Namespace, device: torch.device) -> None:
    """Training throughput and peak memory of every attention kind at ``--rival-lengths`` (preset
    ``args.rival_preset``); a kind whose package is missing is recorded with that note."""
    for length in args.rival_lengths:
        for attention in RIVALS:
            key = {"preset": args.rival_preset, "attention": attention, "length": length}
            rec.measure("rivals", key, lambda a=attention, L=length: train_item(args, args.rival_preset, a, L, device), _describe)
