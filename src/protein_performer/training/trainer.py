"""The training loop: data by global step, gradient accumulation, redraws per optimizer step,
periodic validation, metrics, atomic checkpoints and exact resume.

What step ``s`` trains on, how it is masked, and when projections are redrawn depend only on the
seed and ``s``; dropout draws from the global torch RNG, whose state is checkpointed. So a run resumed
from any checkpoint ends with exactly the weights of an uninterrupted run with the same seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import math
import time
import warnings
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
from .distributed import Distributed
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

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch_size", "micro_batch_size", "max_steps", "save_every", "eval_every", "eval_sequences",
                     "log_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"invalid training setting: --{name.replace('_', '-')} must be a positive integer, "
                                 f"got {getattr(self, name)!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"invalid training setting: --warmup-steps must be 0 or more, got {self.warmup_steps!r}")
        if not self.lr >= 0:
            raise ValueError(f"invalid training setting: --lr must be 0 or more, got {self.lr!r}")
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"invalid training setting: --precision must be bf16 or fp32, got {self.precision!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def derived_seed(*parts) -> int:
    """A 63-bit seed that depends only on ``parts`` (e.g. ``(seed, "redraw", step)``)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big") >> 1


def seeded_generator(*parts) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(*parts))


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
def validate(model: PerformerLM, dataset, collator, *, batch_size: int, max_sequences: int, precision: str,
             dist: Distributed | None = None, lockstep: bool = False) -> dict:
    """Loss, accuracy, perplexity on the first ``max_sequences`` samples (fixed masks: deterministic).

    With ``dist``, batches are dealt out round-robin over the ranks and the sums reduced. ``lockstep``
    (sharded models, whose every forward is a collective) makes a rank without a batch left run its
    first batch again and discard the result, so all ranks call the model equally often.
    """
    dist = dist or Distributed()
    was_training = model.training
    model.eval()
    total_loss, total, correct = 0.0, 0, 0
    stop = min(len(dataset), max_sequences)
    starts = list(range(0, stop, batch_size))
    mine = starts[dist.rank::dist.world_size]
    rounds = -(-len(starts) // dist.world_size) if lockstep else len(mine)
    for i in range(rounds):
        start = mine[i] if i < len(mine) else starts[0]
        indices = range(start, min(stop, start + batch_size))
        batch = collator([dataset[g] for g in indices], [dataset.generator_for(g) for g in indices])
        loss, n, c = lm_loss(model, batch, precision)
        if i < len(mine):
            total_loss, total, correct = total_loss + loss.item(), total + n, correct + c
    model.train(was_training)
    total_loss, total, correct = dist.sum([total_loss, total, correct], next(model.parameters()).device)
    mean = total_loss / max(total, 1)
    return {"loss": mean, "accuracy": correct / max(total, 1), "perplexity": math.exp(mean), "tokens": int(total)}


def parameter_names(model: PerformerLM) -> tuple[list[str], list[str]]:
    """Names of the parameters with and without weight decay (decay on matrices only, not on biases,
    LayerNorms or embeddings), in the order the optimizer numbers them."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "embed" not in name else no_decay).append(name)
    return decay, no_decay


def parameter_groups(model: PerformerLM, weight_decay: float) -> list[dict]:
    params = dict(model.named_parameters())
    decay, no_decay = parameter_names(model)
    return [{"params": [params[n] for n in decay], "weight_decay": weight_decay},
            {"params": [params[n] for n in no_decay], "weight_decay": 0.0}]


def rank_slice(batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """The part ``[start, stop)`` of a global batch that ``rank`` trains on: contiguous, disjoint,
    together exactly the batch."""
    if batch_size % world_size:
        raise ValueError(f"--batch-size {batch_size} does not split evenly over {world_size} processes: choose a multiple of {world_size}")
    share = batch_size // world_size
    return rank * share, (rank + 1) * share


def warmup_factor(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


class Trainer:
    """Trains a :class:`PerformerLM` on a corpus; see the module docstring for what fixes each step.

    Data parallel (``dist`` from :func:`~protein_performer.training.distributed.from_env` under
    ``torchrun``): every rank builds the same model, trains on its slice of each global batch
    (:func:`rank_slice`) under ``DistributedDataParallel``, or ``fully_shard`` (FSDP) with ``fsdp``,
    and redraws the same projections; rank 0 logs and writes checkpoints, consolidated into the
    single-process format. The loss is normalized by the predicted positions of the whole global
    batch, so the update does not depend on the number of ranks. Each rank has its own dropout
    stream (rank 0 continues the single-process one); all streams are checkpointed.
    """

    def __init__(self, run_dir: Path, model_config: PerformerConfig, train_config: TrainConfig, *, corpus: EncodedCorpus,
                 device: torch.device | None = None, init_weights: Path | None = None, resume: bool = False,
                 dist: Distributed | None = None, fsdp: bool = False):
        if model_config.vocab_size < len(DEFAULT_ALPHABET):
            raise ValueError(f"invalid model config: vocab_size {model_config.vocab_size} is smaller than the alphabet's "
                             f"{len(DEFAULT_ALPHABET)} tokens")
        self.run_dir, self.config, self.tc = run_dir, model_config, train_config
        self.dist, self.fsdp = dist or Distributed(), fsdp
        self.batch_slice = rank_slice(train_config.batch_size, self.dist.rank, self.dist.world_size)
        if fsdp and not torch.distributed.is_initialized():
            raise ValueError("--fsdp shards the model over processes: launch with torchrun (see docs/distributed.md)")
        self.device = device or self.dist.device()
        self.train_data = make_dataset(corpus.select("train"), train_config, train=True)
        valid = corpus.select("valid")
        self.valid_data = make_dataset(valid, train_config, train=False) if len(valid) else None
        self.collator = make_collator(model_config)
        self.frequencies = amino_acid_frequencies(corpus.select("train"), with_eos=model_config.causal)
        torch.manual_seed(train_config.seed)
        self.model = PerformerLM(model_config).to(self.device)
        self.step = 0
        self.history: list[dict] = []
        checkpoint = ckpt.latest_checkpoint(run_dir) if resume else None
        self.resumed = checkpoint is not None
        if checkpoint is not None:
            ckpt.load_weights(self.model, checkpoint)
        elif init_weights is not None:
            ckpt.load_weights(self.model, init_weights)
        self.dist.check_identical(self._projections(), "random projections")
        self._names = [n for group in parameter_names(self.model) for n in group]  # optimizer numbering
        self.engine = self._wrap()
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, train_config.weight_decay), lr=train_config.lr,
            betas=(train_config.beta1, train_config.beta2), eps=train_config.eps,
        )
        if checkpoint is not None:
            self._restore(checkpoint)
        elif self.dist.rank > 0:
            torch.manual_seed(derived_seed(train_config.seed, "dropout", self.dist.rank))

    def _wrap(self) -> torch.nn.Module:
        """The module the training forward runs through: the model itself, DDP around it, or the model
        sharded in place (each block, then the root with embeddings and the tied head)."""
        if self.fsdp:
            from torch.distributed.fsdp import fully_shard

            # Outputs are never modified in place, the case this warning is about.
            warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
            for block in self.model.blocks:
                fully_shard(block)
            fully_shard(self.model)
            return self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            # Buffers are the random projections: redrawn identically on every rank, never broadcast
            # (the option's name changed in torch 2.13).
            sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters \
                else "broadcast_buffers"
            return DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                           **{sync: False})
        return self.model

    def _projections(self) -> list[Tensor]:
        return [layer.projection for layer in self.model.favor_layers()]

    # -- state -------------------------------------------------------------------------------------
    def _restore(self, checkpoint: Path) -> None:
        tensors, state = ckpt.load_trainer_state(checkpoint)
        optimizer = ckpt.optimizer_state(tensors, state["optimizer"])
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.model, self.optimizer, _by_name(optimizer, self._names),
                                     options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(optimizer)
        self.step = state["step"]
        suffix = f".rank{self.dist.rank}" if self.dist.rank else ""
        if f"rng.torch{suffix}" in tensors:
            torch.set_rng_state(tensors[f"rng.torch{suffix}"])
            if self.device.type == "cuda" and f"rng.cuda{suffix}" in tensors:
                torch.cuda.set_rng_state(tensors[f"rng.cuda{suffix}"])
        else:  # more ranks than the run that wrote the checkpoint: a fresh stream for this one
            torch.manual_seed(derived_seed(self.tc.seed, "dropout", self.dist.rank, self.step))
        self.history = [row for row in self._read_metrics() if row.get("step", 0) <= self.step]

    def _read_metrics(self) -> list[dict]:
        path = self.run_dir / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []

    def save(self) -> None:
        """A checkpoint of the whole run (all ranks take part; rank 0 writes)."""
        rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None}
        rngs = {}
        for rank, states in enumerate(self.dist.gather(rng)):
            for kind, value in states.items():
                if value is not None:
                    rngs[f"rng.{kind}" + (f".rank{rank}" if rank else "")] = value
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

            weights, optimizer = get_state_dict(self.model, self.optimizer,
                                                options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            optimizer = _by_index(optimizer, self._names) if self.dist.is_main else None
        else:
            weights, optimizer = self.model.state_dict(), self.optimizer.state_dict()
        if self.dist.is_main:
            ckpt.save_checkpoint(
                self.run_dir, self.step, config=self.config, weights=weights, optimizer=optimizer, rng=rngs,
                trainer_state={"frequencies": self.frequencies, "world_size": self.dist.world_size},
                train_config=self.tc.to_dict(),
            )
            _atomic_json(self.run_dir / "frequencies.json", {"frequencies": self.frequencies})
            # metrics.jsonl is rewritten from history, so a resumed run never shows steps twice.
            _atomic_text(self.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))
            plot_training_curves(self.history, self.run_dir / "training_curves.png")
        self.dist.barrier()

    # -- one optimizer step --------------------------------------------------------------------------
    def _gradient_sync(self, enabled: bool):
        """Gradient accumulation: reduce gradients across ranks only on the last micro-batch."""
        if self.fsdp:
            self.model.set_requires_gradient_sync(enabled)
        elif self.dist.enabled and not enabled:
            return self.engine.no_sync()
        return contextlib.nullcontext()

    def train_step(self) -> dict:
        tc, step, world = self.tc, self.step, self.dist.world_size
        if self.config.attention == "favor" and self.config.redraw_interval and step > 0 and step % self.config.redraw_interval == 0:
            self.model.redraw_projections(seeded_generator(tc.seed, "redraw", step))
            self.dist.check_identical(self._projections(), "random projections")
        for group in self.optimizer.param_groups:
            group["lr"] = tc.lr * warmup_factor(step, tc.warmup_steps)
        lo, hi = self.batch_slice
        micro = []
        for start in range(lo, hi, tc.micro_batch_size):
            part = self.train_data.step_batch(step, tc.batch_size, start, min(hi, start + tc.micro_batch_size))
            micro.append(self.collator(part.samples, part.generators))
        local_predicted = sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in micro)
        predicted = max(int(self.dist.sum([local_predicted], self.device)[0]), 1)
        total_loss, correct, tokens = 0.0, 0, 0
        for i, batch in enumerate(micro):
            with self._gradient_sync(i == len(micro) - 1):
                loss, _, c = lm_loss(self.engine, batch, tc.precision)
                # Normalized by the whole global batch; DDP/FSDP average over ranks, hence the factor.
                (loss * world / predicted).backward()
            total_loss, correct = total_loss + loss.item(), correct + c
            tokens += int((~batch["padding_mask"]).sum())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.clip_norm)
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
            grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        total_loss, correct, tokens = self.dist.sum([total_loss, correct, tokens], self.device)
        return {"loss": total_loss / predicted, "accuracy": correct / predicted,
                "grad_norm": float(grad_norm), "tokens": int(tokens), "lr": self.optimizer.param_groups[0]["lr"]}

    def fit(self, *, progress: bool = True) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        tc, main = self.tc, self.dist.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.config.save(self.run_dir / ckpt.CONFIG_FILE)
            _atomic_json(self.run_dir / ckpt.TRAIN_CONFIG, tc.to_dict())
        writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step) if main else None
        bar = tqdm(total=tc.max_steps, initial=self.step, disable=not (progress and main), unit="step", dynamic_ncols=True)
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
                                      max_sequences=tc.eval_sequences, precision=tc.precision, dist=self.dist, lockstep=self.fsdp)
                row.update({f"valid/{k}": v for k, v in last_valid.items()})
            if self.step % tc.log_every == 0 or "valid/loss" in row or self.step == tc.max_steps:
                self.history.append(row)
                for key, value in row.items():
                    if writer is not None and key != "step":
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
        if writer is not None:
            writer.close()
        return last_valid or {}


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _atomic_json(path: Path, value: dict) -> None:
    _atomic_text(path, json.dumps(value, indent=2) + "\n")


def _by_name(optimizer: dict, names: list[str]) -> dict:
    """An optimizer state dict with numbered parameters → keyed by parameter name (for FSDP)."""
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in optimizer["param_groups"]]
    return {"state": {names[int(i)]: v for i, v in optimizer["state"].items()}, "param_groups": groups}


def _by_index(optimizer: dict, names: list[str]) -> dict:
    """Inverse of :func:`_by_name`: the layout a single-process run writes."""
    index = {name: i for i, name in enumerate(names)}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in optimizer["param_groups"]]
    return {"state": {index[n]: v for n, v in optimizer["state"].items()}, "param_groups": groups}
