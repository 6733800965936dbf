"""``TrainConfig``: the training settings, saved as ``train_config.json`` beside the model.

Errors name a setting in backquotes (``batch_size``); the command line shows it as its option.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import DEFAULT_CORPUS_PATH

PRECISIONS = ("bf16", "fp32")
LR_SCHEDULES = ("constant", "linear", "cosine")


def schedule_factor(step: int, *, warmup_steps: int, max_steps: int, schedule: str, final_ratio: float) -> float:
    """The learning rate of optimizer step ``step`` (0-based) as a fraction of the peak: a linear warmup
    over ``warmup_steps``, then constant, or a linear or cosine decay reaching ``final_ratio`` at ``max_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(max((step - warmup_steps) / max(max_steps - warmup_steps, 1), 0.0), 1.0)
    shape = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return final_ratio + (1.0 - final_ratio) * shape


def native_bf16() -> bool:
    """Whether bf16 autocast is fast here: a CUDA GPU with bf16, or a CPU with AVX-512 BF16 or AMX
    (elsewhere PyTorch emulates bf16 products at about 1 GFLOP/s, some 20 times slower than fp32)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own CPU feature probes
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def default_precision() -> str:
    """bf16 where the hardware computes it natively, fp32 elsewhere (a run records what it chose)."""
    return "bf16" if native_bf16() else "fp32"


@dataclass
class TrainConfig:
    data: str = str(DEFAULT_CORPUS_PATH)
    data_fingerprint: str = ""  # of the file when the run started (size and ends): resume refuses another
    seq_len: int = 1024
    concat: bool = False
    batch_size: int = 32  # sequences per optimizer step (the global batch)
    micro_batch_size: int = 8  # sequences per forward pass (gradient accumulation)
    max_steps: int = 1000
    lr: float = 1e-3
    warmup_steps: int = 100
    lr_schedule: str = "constant"  # after the warmup: "constant", or a "linear" / "cosine" decay to min_lr_ratio × lr
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-9
    clip_norm: float = 0.5
    precision: str = dataclasses.field(default_factory=default_precision)  # "bf16" autocast or "fp32"
    save_every: int = 200
    keep_every: int = 0  # checkpoints at multiples of it are kept besides the last two (0: only the last two)
    eval_every: int = 200
    eval_sequences: int = 256
    log_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch_size", "micro_batch_size", "max_steps", "save_every", "eval_every", "eval_sequences",
                     "log_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"invalid training setting: `{name}` must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.keep_every, int) or self.keep_every < 0:
            raise ValueError(f"invalid training setting: `keep_every` must be 0 or more, got {self.keep_every!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"invalid training setting: `warmup_steps` must be 0 or more, got {self.warmup_steps!r}")
        if not (isinstance(self.lr, (int, float)) and 0 <= self.lr < math.inf):
            raise ValueError(f"invalid training setting: `lr` must be a finite number, 0 or more, got {self.lr!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ValueError(f"invalid training setting: `seed` must be an integer from 0 to 2**63 - 1, got {self.seed!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"invalid training setting: `lr_schedule` must be one of {', '.join(LR_SCHEDULES)}, "
                             f"got {self.lr_schedule!r}")
        if not (isinstance(self.min_lr_ratio, (int, float)) and 0 <= self.min_lr_ratio <= 1):
            raise ValueError(f"invalid training setting: `min_lr_ratio` must be from 0 to 1, got {self.min_lr_ratio!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"invalid training setting: `precision` must be bf16 or fp32, got {self.precision!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based)."""
        return self.lr * schedule_factor(step, warmup_steps=self.warmup_steps, max_steps=self.max_steps,
                                         schedule=self.lr_schedule, final_ratio=self.min_lr_ratio)

    @classmethod
    def from_dict(cls, values: dict, *, source: str | Path = "training settings") -> TrainConfig:
        """``values`` as :meth:`to_dict` wrote them (e.g. ``train_config.json``); errors name ``source``."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{source} is not a protein-performer training config (unknown settings: {', '.join(unknown)})")
        try:
            return cls(**values)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)
