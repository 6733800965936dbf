"""Protein language models: ``PerformerConfig`` and ``PerformerLM`` (knows nothing about files)."""

from .config import PRESETS, PerformerConfig, preset
from .performer import NoLanguageModelHead, PerformerLM

__all__ = ["PRESETS", "NoLanguageModelHead", "PerformerConfig", "PerformerLM", "preset"]
