"""What a language-model objective needs, for training and evaluation alike: its dataset regime, its
collator (masked or next token), its loss, and the empirical baseline's token frequencies."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from ..data import (
    DEFAULT_ALPHABET,
    IGNORE_INDEX,
    CausalLMCollator,
    EncodedCorpus,
    MaskedLMCollator,
    PackedDataset,
    SingleSequenceDataset,
)
from ..model import PerformerConfig
from .config import TrainConfig


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


def forward_logits(model: torch.nn.Module, batch: dict[str, Tensor], precision: str) -> tuple[Tensor, Tensor]:
    """``(logits [B, L, V] float32, labels [B, L])`` of a collated batch, on the model's device."""
    device = next(model.parameters()).device
    tokens, labels = batch["tokens"].to(device), batch["labels"].to(device)
    with autocast(precision, device):
        logits = model(tokens, batch["padding_mask"].to(device))["logits"]
    return logits.float(), labels


def lm_loss(model: torch.nn.Module, batch: dict[str, Tensor], precision: str) -> tuple[Tensor, int, int]:
    """The training loss: summed cross-entropy over predicted positions, the number of them, and how
    many are right."""
    logits, labels = forward_logits(model, batch, precision)
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    predicted = labels != IGNORE_INDEX
    correct = (logits.argmax(-1) == labels) & predicted
    return loss, int(predicted.sum()), int(correct.sum())
