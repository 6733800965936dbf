"""The training loop: data by global step, gradient accumulation, redraws per optimizer step,
periodic validation, metrics, atomic checkpoints and exact resume.

What step ``s`` trains on, how it is masked, and when projections are redrawn depend only on the
seed and ``s``; dropout draws from the global torch RNG, whose state is checkpointed. So a run resumed
from any checkpoint ends with exactly the weights of an uninterrupted run with the same seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from tqdm import tqdm

from ..data import (
    DEFAULT_ALPHABET,
    DEFAULT_CORPUS_PATH,
    IGNORE_INDEX,
    CausalLMCollator,
    EncodedCorpus,
    MaskedLMCollator,
    PackedDataset,
    SingleSequenceDataset,
)
from ..model import PerformerConfig, PerformerLM
from . import checkpoint as ckpt
from .plots import plot_training_curves


@dataclass
class TrainConfig:
    data: str = str(DEFAULT_CORPUS_PATH)
    seq_len: int = 1024
    concat: bool = False
    batch_size: int = 32  # sequences per optimizer step (the global batch)
    micro_batch_size: int = 8  # sequences per forward pass (gradient accumulation)
    max_steps: int = 1000
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-9
    clip_norm: float = 0.5
    precision: str = "bf16"  # "bf16" autocast or "fp32"
    save_every: int = 200
    eval_every: int = 200
    eval_sequences: int = 256
    log_every: int = 10
    seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def seeded_generator(*parts) -> torch.Generator:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "big") >> 1)


def make_collator(config: PerformerConfig):
    return CausalLMCollator(DEFAULT_ALPHABET) if config.causal else MaskedLMCollator(DEFAULT_ALPHABET)


def make_dataset(corpus: EncodedCorpus, train_config: TrainConfig, *, train: bool):
    cls = PackedDataset if train_config.concat else SingleSequenceDataset
    return cls(corpus, train_config.seq_len, train=train, seed=train_config.seed)


def amino_acid_frequencies(corpus: EncodedCorpus, *, with_eos: bool) -> list[float]:
    """Token frequencies ``[V]`` of a corpus's prediction targets (residues, plus one ``<eos>`` per
    protein for next-token models): the paper's empirical baseline. Add-one smoothed."""
    counts = np.bincount(corpus.residues, minlength=len(DEFAULT_ALPHABET)).astype(np.float64)
    if with_eos:
        counts[DEFAULT_ALPHABET.eos_idx] += len(corpus)
    counts[list(DEFAULT_ALPHABET.residue_idx)] += 1
    return (counts / counts.sum()).tolist()


def autocast(precision: str, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def lm_loss(model: PerformerLM, batch: dict[str, Tensor], precision: str) -> tuple[Tensor, int, int]:
    """Summed cross-entropy over predicted positions, the number of them, and how many are right."""
    device = next(model.parameters()).device
    tokens, labels = batch["tokens"].to(device), batch["labels"].to(device)
    with autocast(precision, device):
        logits = model(tokens, batch["padding_mask"].to(device))["logits"]
    logits = logits.float()
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    predicted = labels != IGNORE_INDEX
    correct = (logits.argmax(-1) == labels) & predicted
    return loss, int(predicted.sum()), int(correct.sum())


@torch.no_grad()
def validate(model: PerformerLM, dataset, collator, *, batch_size: int, max_sequences: int, precision: str) -> dict:
    """Loss, accuracy, perplexity on the first ``max_sequences`` samples (fixed masks: deterministic)."""
    was_training = model.training
    model.eval()
    total_loss, total, correct = 0.0, 0, 0
    stop = min(len(dataset), max_sequences)
    for start in range(0, stop, batch_size):
        indices = range(start, min(stop, start + batch_size))
        batch = collator([dataset[g] for g in indices], [dataset.generator_for(g) for g in indices])
        loss, n, c = lm_loss(model, batch, precision)
        total_loss, total, correct = total_loss + loss.item(), total + n, correct + c
    model.train(was_training)
    mean = total_loss / max(total, 1)
    return {"loss": mean, "accuracy": correct / max(total, 1), "perplexity": math.exp(mean), "tokens": total}


def parameter_groups(model: PerformerLM, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (not on biases, LayerNorms or embeddings)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "embed" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_factor(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


class Trainer:
    def __init__(self, run_dir: Path, model_config: PerformerConfig, train_config: TrainConfig, *, corpus: EncodedCorpus,
                 device: torch.device | None = None, init_weights: Path | None = None):
        self.run_dir, self.config, self.tc = run_dir, model_config, train_config
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.train_data = make_dataset(corpus.select("train"), train_config, train=True)
        valid = corpus.select("valid")
        self.valid_data = make_dataset(valid, train_config, train=False) if len(valid) else None
        self.collator = make_collator(model_config)
        self.frequencies = amino_acid_frequencies(corpus.select("train"), with_eos=model_config.causal)
        torch.manual_seed(train_config.seed)
        self.model = PerformerLM(model_config).to(self.device)
        if init_weights is not None:
            ckpt.load_weights(self.model, init_weights)
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, train_config.weight_decay), lr=train_config.lr,
            betas=(train_config.beta1, train_config.beta2), eps=train_config.eps,
        )
        self.step = 0
        self.history: list[dict] = []

    # -- state -------------------------------------------------------------------------------------
    def resume(self) -> bool:
        latest = ckpt.latest_checkpoint(self.run_dir)
        if latest is None:
            return False
        ckpt.load_weights(self.model, latest)
        tensors, state = ckpt.load_trainer_state(latest)
        ckpt.restore_optimizer(self.optimizer, tensors, state["optimizer"])
        torch.set_rng_state(tensors["rng.torch"])
        self.step = state["step"]
        self.history = [row for row in self._read_metrics() if row.get("step", 0) <= self.step]
        return True

    def _read_metrics(self) -> list[dict]:
        path = self.run_dir / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []

    def save(self) -> None:
        ckpt.save_checkpoint(
            self.run_dir, self.step, self.model, self.config, self.optimizer,
            {"frequencies": self.frequencies}, self.tc.to_dict(),
        )
        _atomic_json(self.run_dir / "frequencies.json", {"frequencies": self.frequencies})
        # metrics.jsonl is rewritten from history, so a resumed run never shows steps twice.
        _atomic_text(self.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))
        plot_training_curves(self.history, self.run_dir / "training_curves.png")

    # -- one optimizer step --------------------------------------------------------------------------
    def train_step(self) -> dict:
        tc, step = self.tc, self.step
        if self.config.attention == "favor" and self.config.redraw_interval and step > 0 and step % self.config.redraw_interval == 0:
            self.model.redraw_projections(seeded_generator(tc.seed, "redraw", step))
        for group in self.optimizer.param_groups:
            group["lr"] = tc.lr * warmup_factor(step, tc.warmup_steps)
        micro = []
        for start in range(0, tc.batch_size, tc.micro_batch_size):
            part = self.train_data.step_batch(step, tc.batch_size, start, min(tc.batch_size, start + tc.micro_batch_size))
            micro.append(self.collator(part.samples, part.generators))
        predicted = sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in micro)
        total_loss, correct, tokens = 0.0, 0, 0
        for batch in micro:
            loss, _, c = lm_loss(self.model, batch, tc.precision)
            (loss / max(predicted, 1)).backward()
            total_loss, correct = total_loss + loss.item(), correct + c
            tokens += int((~batch["padding_mask"]).sum())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.clip_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {"loss": total_loss / max(predicted, 1), "accuracy": correct / max(predicted, 1),
                "grad_norm": float(grad_norm), "tokens": tokens, "lr": self.optimizer.param_groups[0]["lr"]}

    def fit(self, *, progress: bool = True) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        tc = self.tc
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config.save(self.run_dir / ckpt.CONFIG_FILE)
        _atomic_json(self.run_dir / ckpt.TRAIN_CONFIG, tc.to_dict())
        writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step)
        bar = tqdm(total=tc.max_steps, initial=self.step, disable=not progress, unit="step", dynamic_ncols=True)
        self.model.train()
        window_tokens, window_start = 0, time.perf_counter()
        last_valid = None
        while self.step < tc.max_steps:
            stats = self.train_step()
            window_tokens += stats["tokens"]
            elapsed = time.perf_counter() - window_start
            stats["tokens_per_s"] = window_tokens / max(elapsed, 1e-9)
            row = {"step": self.step, **{f"train/{k}": v for k, v in stats.items()}}
            if self.valid_data is not None and (self.step % tc.eval_every == 0 or self.step == tc.max_steps):
                last_valid = validate(self.model, self.valid_data, self.collator, batch_size=tc.micro_batch_size,
                                      max_sequences=tc.eval_sequences, precision=tc.precision)
                row.update({f"valid/{k}": v for k, v in last_valid.items()})
            if self.step % tc.log_every == 0 or "valid/loss" in row or self.step == tc.max_steps:
                self.history.append(row)
                for key, value in row.items():
                    if key != "step":
                        writer.add_scalar(key, value, self.step)
                window_tokens, window_start = 0, time.perf_counter()
            postfix = {"loss": f"{stats['loss']:.3f}", "acc": f"{stats['accuracy']:.3f}", "tok/s": f"{stats['tokens_per_s']:.0f}"}
            if last_valid:
                postfix["val_acc"] = f"{last_valid['accuracy']:.3f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
            if self.step % tc.save_every == 0 or self.step == tc.max_steps:
                self.save()
        bar.close()
        writer.close()
        return last_valid or {}


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _atomic_json(path: Path, value: dict) -> None:
    _atomic_text(path, json.dumps(value, indent=2) + "\n")
