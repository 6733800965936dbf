"""Protein language models: ``PerformerConfig`` and ``PerformerLM`` (knows nothing about files)."""

from .config import PRESETS, PerformerConfig, preset
from .performer import PerformerLM

__all__ = ["PRESETS", "PerformerConfig", "PerformerLM", "preset"]
