"""Collators: a list of token samples -> a padded batch with labels for a language-model loss.

Both return ``dict(tokens=[B, L] long, labels=[B, L] long, padding_mask=[B, L] bool)``, ``L`` the
longest sample, ``padding_mask`` True at padding, ``labels`` ``IGNORE_INDEX`` (-100, what
``torch.nn.functional.cross_entropy`` ignores by default) wherever nothing is predicted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .alphabet import DEFAULT_ALPHABET, Alphabet

IGNORE_INDEX = -100


def _row_generators(
    generator: torch.Generator | Sequence[torch.Generator] | None, batch_size: int
) -> list[torch.Generator | None]:
    if generator is None or isinstance(generator, torch.Generator):
        return [generator] * batch_size
    if len(generator) != batch_size:
        raise ValueError(f"got {len(generator)} generators for {batch_size} samples")
    return list(generator)


class MaskedLMCollator:
    """BERT-style masking for bidirectional models.

    Of each sample's residue positions (specials, ``<unk>`` and padding are never candidates),
    ``mask_prob`` (15%) are chosen for prediction: the count is ``floor(mask_prob * n + u)``,
    ``u ~ U[0, 1)`` (exactly 15% in expectation, at least one). A chosen position becomes ``<mask>``
    with probability ``mask_token_prob`` (80%), a uniformly random standard amino acid (possibly the
    same one) with ``random_token_prob`` (10%), else stays (10%). ``labels`` hold the original token
    at chosen positions only.

    Randomness comes only from ``generator``: one generator is drawn from row by row; a sequence of
    generators (one per sample, e.g. :meth:`GlobalIndexDataset.generator_for`) makes each sample's
    masking independent of which other samples share its batch (data-parallel slices agree).
    """

    def __init__(
        self,
        alphabet: Alphabet = DEFAULT_ALPHABET,
        *,
        mask_prob: float = 0.15,
        mask_token_prob: float = 0.8,
        random_token_prob: float = 0.1,
    ) -> None:
        if not 0.0 < mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}")
        if mask_token_prob < 0 or random_token_prob < 0 or mask_token_prob + random_token_prob > 1.0:
            raise ValueError("mask_token_prob and random_token_prob must be >= 0 and sum to at most 1")
        self.alphabet = alphabet
        self.mask_prob = mask_prob
        self.mask_token_prob = mask_token_prob
        self.random_token_prob = random_token_prob
        self._candidate = torch.zeros(len(alphabet), dtype=torch.bool)  # [V]: maskable token ids
        self._candidate[list(alphabet.residue_idx)] = True
        self._standard = torch.tensor(alphabet.standard_idx, dtype=torch.long)

    def __call__(
        self,
        samples: Sequence[Tensor | np.ndarray | Sequence[int]],
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> dict[str, Tensor]:
        """Samples ``[T_i]`` -> ``tokens`` (masked input), ``labels``, ``padding_mask``, each ``[B, L]``."""
        original, padding_mask = self.alphabet.pad(samples)
        tokens = original.clone()
        labels = torch.full_like(original, IGNORE_INDEX)
        for b, g in enumerate(_row_generators(generator, len(original))):
            row = original[b]
            # Padding is pad_idx, not a residue, so it can never be a candidate.
            candidates = self._candidate[row].nonzero().squeeze(1)  # [n]
            n = len(candidates)
            if n == 0:
                continue
            # Randomized rounding: unbiased 15% even for short rows (plain rounding is not).
            count = max(1, int(self.mask_prob * n + torch.rand((), generator=g).item()))
            chosen = candidates[torch.randperm(n, generator=g)[:count]]  # [k]
            action = torch.rand(count, generator=g)  # [k]
            labels[b, chosen] = row[chosen]
            as_mask = chosen[action < self.mask_token_prob]
            as_random = chosen[(action >= self.mask_token_prob) & (action < self.mask_token_prob + self.random_token_prob)]
            tokens[b, as_mask] = self.alphabet.mask_idx
            tokens[b, as_random] = self._standard[torch.randint(len(self._standard), (len(as_random),), generator=g)]
        return {"tokens": tokens, "labels": labels, "padding_mask": padding_mask}


class CausalLMCollator:
    """Next-token labels for unidirectional models: ``labels[b, t] = tokens[b, t + 1]``.

    The last real position of each sample and all padding get ``IGNORE_INDEX``. Deterministic;
    ``generator`` is accepted (and ignored) so training loops can call either collator alike.
    """

    def __init__(self, alphabet: Alphabet = DEFAULT_ALPHABET) -> None:
        self.alphabet = alphabet

    def __call__(
        self,
        samples: Sequence[Tensor | np.ndarray | Sequence[int]],
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> dict[str, Tensor]:
        """Samples ``[T_i]`` -> ``tokens``, ``labels`` (shifted by one), ``padding_mask``, each ``[B, L]``."""
        tokens, padding_mask = self.alphabet.pad(samples)
        labels = torch.full_like(tokens, IGNORE_INDEX)
        labels[:, :-1] = tokens[:, 1:]
        # A label is real only if its target position t + 1 is real (not padding).
        labels[:, :-1].masked_fill_(padding_mask[:, 1:], IGNORE_INDEX)
        return {"tokens": tokens, "labels": labels, "padding_mask": padding_mask}
