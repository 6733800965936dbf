"""The paper's two training regimes over an :class:`~protein_performer.data.corpus.EncodedCorpus`, addressed by global step.

Regimes (arXiv 2009.14794 §4.4):

- :class:`SingleSequenceDataset`: one protein per sample, ``<cls> residues <eos>``, residues cropped
  so the sample fits ``seq_len`` (a random window in training, the first window in evaluation).
- :class:`PackedDataset`: all proteins joined as ``residues <eos> residues <eos> ...`` and cut into
  non-overlapping windows of ``seq_len`` (8192 in the paper).

Addressing. Every sample has a *global index* ``g``. With global batch size ``B`` the batch of
optimizer step ``s`` is the samples ``g`` in ``[s*B, (s+1)*B)``; a data-parallel rank (or a
gradient-accumulation micro-step) takes the slice ``[s*B + i0, s*B + i1)``. In training ``g`` runs
on across epochs (epoch ``g // len(dataset)``, each epoch a fresh permutation). What sample ``g`` is,
its crop, and the generator its masking draws from depend only on ``(seed, g)``, so a resumed run
or a run on a different number of ranks or workers sees exactly the same data at every step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..seeding import stable_hash
from .alphabet import DEFAULT_ALPHABET, Alphabet
from .corpus import EncodedCorpus


class StepBatch(NamedTuple):
    """The samples of one step (or one slice of it), ready for a collator:
    ``collator(batch.samples, batch.generators)``."""

    indices: range  # global sample indices
    samples: list[Tensor]  # each long [T_i]
    generators: list[torch.Generator]  # one per sample, seeded from (seed, global index)


class GlobalIndexDataset(Dataset[Tensor]):
    """Shared addressing for both regimes: global sample index -> item (sequence or window).

    Subclasses define ``_num_items()`` and ``_make_sample(item, g)``. ``len()`` is one epoch. In
    training, ``g`` may be any non-negative integer (epoch ``g // len``, fresh permutation per
    epoch); in evaluation ``g`` is the item itself, in order, and must be ``< len``.
    """

    _stream_tag = 0  # keeps the two regimes' random streams apart for the same seed

    def __init__(self, *, train: bool, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.train = train
        self.seed = seed
        # (epoch, permutation) of the last epoch used, one tuple so a reader never mixes two epochs.
        self._perm_cache: tuple[int, np.ndarray] = (-1, np.zeros(0, dtype=np.int64))

    def _num_items(self) -> int:
        raise NotImplementedError

    def _make_sample(self, item: int, index: int) -> Tensor:
        raise NotImplementedError

    def __len__(self) -> int:
        return self._num_items()

    def item_of(self, index: int) -> int:
        """The sequence (or window) that global sample ``index`` shows."""
        n = self._num_items()
        if index < 0 or (not self.train and index >= n):
            raise IndexError(f"global sample index {index} out of range (eval: 0..{n - 1}; train: >= 0)")
        if not self.train:
            return index
        epoch, pos = divmod(index, n)
        cached_epoch, perm = self._perm_cache
        if epoch != cached_epoch:  # steps walk the epochs in order, so caching one is enough
            perm = np.random.default_rng([self.seed, self._stream_tag, epoch]).permutation(n)
            self._perm_cache = (epoch, perm)
        return int(perm[pos])

    def __getitem__(self, index: int) -> Tensor:
        """Sample at global index ``index``: long ``[T]``."""
        return self._make_sample(self.item_of(index), index)

    def generator_for(self, index: int) -> torch.Generator:
        """A fresh generator for sample ``index`` (its masking), seeded from ``(seed, index)``."""
        return torch.Generator().manual_seed(stable_hash(self.seed, self._stream_tag, "collate", index))

    def steps_per_epoch(self, batch_size: int) -> int:
        """Evaluation: steps to cover the data once (last one short). Training: ``len // B``."""
        n = self._num_items()
        return n // batch_size if self.train else math.ceil(n / batch_size)

    def step_indices(self, step: int, batch_size: int, start: int = 0, stop: int | None = None) -> range:
        """Global indices of samples ``[start:stop]`` of the batch of ``step`` (batch size ``B``).

        Evaluation batches are clipped at the end of the data (empty past it).
        """
        stop = batch_size if stop is None else stop
        if step < 0 or not 0 <= start <= stop <= batch_size:
            raise ValueError(f"need step >= 0 and 0 <= start <= stop <= batch_size, got {step}, {start}, {stop}")
        first, last = step * batch_size + start, step * batch_size + stop
        if not self.train:
            n = self._num_items()
            first, last = min(first, n), min(last, n)
        return range(first, last)

    def step_batch(self, step: int, batch_size: int, start: int = 0, stop: int | None = None) -> StepBatch:
        """Samples ``[start:stop]`` of the batch of ``step``, with their masking generators."""
        indices = self.step_indices(step, batch_size, start, stop)
        return StepBatch(indices, [self[g] for g in indices], [self.generator_for(g) for g in indices])

    def iter_steps(self, batch_size: int, *, start_step: int = 0, start: int = 0, stop: int | None = None) -> Iterator[StepBatch]:
        """Step batches from ``start_step`` on: endless in training, one pass in evaluation."""
        step = start_step
        while self.train or step < self.steps_per_epoch(batch_size):
            yield self.step_batch(step, batch_size, start, stop)
            step += 1


class SingleSequenceDataset(GlobalIndexDataset):
    """Regime (a): one protein per sample, ``<cls> residues <eos>``, at most ``seq_len`` tokens.

    Proteins longer than ``seq_len - 2`` residues are cropped to a window of ``seq_len - 2``
    residues: uniformly placed in training (from ``(seed, g)``), the first one in evaluation.
    """

    _stream_tag = 1

    def __init__(
        self,
        corpus: EncodedCorpus,
        seq_len: int = 1024,
        *,
        train: bool = True,
        seed: int = 0,
        alphabet: Alphabet = DEFAULT_ALPHABET,
    ) -> None:
        super().__init__(train=train, seed=seed)
        if seq_len < 3:
            raise ValueError(f"seq_len must be >= 3 (<cls>, one residue, <eos>), got {seq_len}")
        if len(corpus) == 0:
            raise ValueError("the corpus is empty")
        self.corpus = corpus
        self.seq_len = seq_len
        self.cls_idx, self.eos_idx = alphabet.cls_idx, alphabet.eos_idx

    def _num_items(self) -> int:
        return len(self.corpus)

    def _make_sample(self, item: int, index: int) -> Tensor:
        residues = self.corpus[item]
        window = self.seq_len - 2
        begin = 0
        if len(residues) > window and self.train:
            begin = stable_hash(self.seed, self._stream_tag, "crop", index) % (len(residues) - window + 1)
        out = np.empty(min(len(residues), window) + 2, dtype=np.int64)
        out[0], out[-1] = self.cls_idx, self.eos_idx
        out[1:-1] = residues[begin : begin + window]
        return torch.from_numpy(out)


class PackedDataset(GlobalIndexDataset):
    """Regime (b): the corpus as one stream ``residues <eos> residues <eos> ...`` (corpus order),
    cut into non-overlapping windows of ``seq_len`` tokens; each sample is one window ``[seq_len]``.

    The windows are fixed; training visits them in a fresh permutation each epoch. ``drop_last``
    drops the final partial window (else it is a shorter sample, which the collator pads).
    """

    _stream_tag = 2

    def __init__(
        self,
        corpus: EncodedCorpus,
        seq_len: int = 8192,
        *,
        train: bool = True,
        seed: int = 0,
        drop_last: bool = True,
        alphabet: Alphabet = DEFAULT_ALPHABET,
    ) -> None:
        super().__init__(train=train, seed=seed)
        if seq_len < 1:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        self.seq_len = seq_len
        self.corpus, self.eos_idx = corpus, alphabet.eos_idx
        # The stream is never built: protein i occupies [ends[i] - len_i - 1, ends[i]) of it, its
        # <eos> last, and a window is gathered from the proteins it overlaps (8 bytes per protein).
        self.ends = np.cumsum(corpus.lengths + 1)
        total = int(self.ends[-1]) if len(self.ends) else 0
        full, tail = divmod(total, seq_len)
        self.num_windows = full + (1 if tail and not drop_last else 0)
        if self.num_windows == 0:
            raise ValueError(f"the corpus ({total} tokens with <eos>) is shorter than one window of {seq_len}")

    def _num_items(self) -> int:
        return self.num_windows

    def _make_sample(self, item: int, index: int) -> Tensor:
        start = item * self.seq_len
        stop = min(start + self.seq_len, int(self.ends[-1]))
        out = np.empty(stop - start, dtype=np.int64)
        protein = int(np.searchsorted(self.ends, start, side="right"))
        position = start
        while position < stop:
            end = int(self.ends[protein])  # one past this protein's <eos>
            residues = self.corpus[protein]
            first = end - len(residues) - 1  # where its residues begin in the stream
            take = residues[position - first : stop - first]  # empty when only its <eos> is left
            out[position - start : position - start + len(take)] = take
            position += len(take)
            if position < stop and position == end - 1:
                out[position - start] = self.eos_idx
                position += 1
            protein += 1
        return torch.from_numpy(out)
