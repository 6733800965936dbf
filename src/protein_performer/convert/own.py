"""This project's own checkpoints (typically an exact-attention run) → the same weights under new
attention settings. Nothing is mapped: the attention layers have the same parameters either way;
only the random projections are new. The training settings and frequencies travel along, so
``protein-performer evaluate`` reads the converted model as it read the source."""

from __future__ import annotations

from pathlib import Path

from ..rundir import RunDir, read_safetensors
from .common import ConversionError, Converted


def read_own(directory: Path) -> Converted:
    run = RunDir(directory)
    try:
        config = run.read_config()
    except (ValueError, TypeError) as err:
        raise ConversionError(f"{run.config} is not a valid protein-performer config ({err})") from None
    tensors = {k: v for k, v in read_safetensors(run.weights).items() if not k.endswith(".attn.projection")}
    return Converted(config, tensors)
