"""Training and evaluation: compose data and model; know nothing about the command line.

- ``config.py``: :class:`TrainConfig`; ``run.py``: :func:`start_training` (resume or new, decided once).
- ``trainer.py``: :class:`Trainer`, the loop; ``state.py``: its optimizer and generator state.
- ``objective.py``: datasets, collators, loss and baseline per objective.
- ``evaluate.py``: the one evaluation loop, and :func:`evaluate` of a saved model.
- ``distributed.py``: ``torch.distributed`` under ``torchrun``; ``plots.py``: training curves.
"""

from .config import TrainConfig
from .evaluation import evaluate, evaluate_dataset
from .run import start_training
from .trainer import Trainer

__all__ = ["TrainConfig", "Trainer", "evaluate", "evaluate_dataset", "start_training"]
