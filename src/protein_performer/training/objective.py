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


def make_collator(config: PerformerConfig, *, evaluation: bool = False):
    """The objective's collator. Masked LM trains with BERT's corruption (of the 15% selected, 80%
    ``<mask>``, 10% a random residue, 10% unchanged); ``evaluation`` shows every selected position as
    ``<mask>`` (the same positions: the draws are the same), so the score counts only predictions made
    without seeing the answer. An unchanged position is copied from the input (near 100% right) and a
    random one is almost never right: averaging them in measures the corruption, not the model."""
    if config.causal:
        return CausalLMCollator(DEFAULT_ALPHABET)
    if evaluation:
        return MaskedLMCollator(DEFAULT_ALPHABET, mask_token_prob=1.0, random_token_prob=0.0)
    return MaskedLMCollator(DEFAULT_ALPHABET)


def make_dataset(corpus: EncodedCorpus, train_config: TrainConfig, *, train: bool):
    cls = PackedDataset if train_config.concat else SingleSequenceDataset
    return cls(corpus, train_config.seq_len, train=train, seed=train_config.seed)


def amino_acid_frequencies(corpus: EncodedCorpus, *, with_eos: bool) -> list[float]:
    """Token frequencies ``[V]`` of a corpus's prediction targets (residues, plus one ``<eos>`` per
    protein for next-token models): the paper's empirical baseline. Add-one smoothed."""
    counts = corpus.residue_counts(len(DEFAULT_ALPHABET)).astype(np.float64)
    if with_eos:
        counts[DEFAULT_ALPHABET.eos_idx] += len(corpus)
    counts[list(DEFAULT_ALPHABET.residue_idx)] += 1
    return (counts / counts.sum()).tolist()


def autocast(precision: str, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """A collated batch on ``device``; a tensor already there is kept, not copied. To a GPU the CPU
    tensors go through pinned memory, without the host waiting for the copy: it queues the compute
    behind it on the same stream."""
    pin = device.type == "cuda"
    return {k: (v.pin_memory() if pin and v.device.type == "cpu" else v).to(device, non_blocking=pin) for k, v in batch.items()}


def forward_logits(model: torch.nn.Module, batch: dict[str, Tensor], precision: str) -> tuple[Tensor, Tensor]:
    """``(logits [B, L, V] float32, labels [B, L])`` of a collated batch, on the model's device."""
    device = next(model.parameters()).device
    batch = to_device(batch, device)
    with autocast(precision, device):
        logits = model(batch["tokens"], batch["padding_mask"])["logits"]
    return logits.float(), batch["labels"]


def lm_loss(model: torch.nn.Module, batch: dict[str, Tensor], precision: str) -> tuple[Tensor, Tensor]:
    """The training loss: summed cross-entropy over predicted positions, and how many of them are
    right (a 0-d tensor), both on the model's device: reading them is left to the caller, once a step."""
    logits, labels = forward_logits(model, batch, precision)
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    correct = ((logits.argmax(-1) == labels) & (labels != IGNORE_INDEX)).sum()
    return loss, correct
