"""This project's own checkpoints (typically an exact-attention run) → the same weights under new
attention settings. Nothing is mapped: the attention layers have the same parameters either way;
only the random projections are new. ``train_config.json`` and ``frequencies.json`` travel along, so
``protein-performer evaluate`` reads the converted model as it read the source."""

from __future__ import annotations

from pathlib import Path

from ..model import PerformerConfig
from ..training.checkpoint import MODEL_FILE, read_safetensors
from .common import ConversionError, Converted

COMPANION_FILES = ("train_config.json", "frequencies.json")


def read_own(directory: Path) -> Converted:
    try:
        config = PerformerConfig.load(directory / "config.json")
    except (ValueError, TypeError) as err:
        raise ConversionError(f"{directory / 'config.json'} is not a valid protein-performer config ({err})") from None
    tensors = {k: v for k, v in read_safetensors(directory / MODEL_FILE).items() if not k.endswith(".attn.projection")}
    return Converted(config, tensors)
