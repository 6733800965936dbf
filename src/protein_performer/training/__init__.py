"""Training and evaluation: compose data and model; know nothing about the command line."""

from .trainer import TrainConfig, Trainer, validate

__all__ = ["TrainConfig", "Trainer", "validate"]
