"""An encoded in-memory corpus and the paper's two training regimes over it, addressed by global step.

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
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..seeding import stable_hash
from .alphabet import DEFAULT_ALPHABET, Alphabet
from .fasta import FastaReader
from .jsonlines import read_json_lines
from .split import SPLITS, split_of

# The embedded corpus and PDB slice ship inside the package (package data), so they are found from a
# wheel as from a checkout.
DATA_DIR = Path(__file__).resolve().parent / "embedded"
DEFAULT_CORPUS_PATH = DATA_DIR / "swissprot2014_sp50_40k.fasta.gz"


class EncodedCorpus:
    """Proteins encoded as token ids, stored back to back in one ``uint8`` array.

    ``residues`` ``[N]`` holds the residue ids of all proteins (no specials); protein ``i`` is
    ``residues[offsets[i]:offsets[i + 1]]``; ``offsets`` ``[n + 1]`` int64; ``ids[i]`` its accession.
    """

    def __init__(self, ids: Sequence[str], residues: np.ndarray, offsets: np.ndarray) -> None:
        if len(offsets) != len(ids) + 1 or offsets[0] != 0 or offsets[-1] != len(residues):
            raise ValueError("offsets must be [0, ..., len(residues)] with one entry per id plus one")
        self.ids: list[str] = list(ids)
        self.residues = np.ascontiguousarray(residues, dtype=np.uint8)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.skipped_records = 0  # malformed FASTA records left out (``from_fasta(skip_invalid=True)``)

    @classmethod
    def from_fasta(
        cls,
        path: str | os.PathLike[str] = DEFAULT_CORPUS_PATH,
        *,
        split: str | None = None,
        skip_invalid: bool = False,
        alphabet: Alphabet = DEFAULT_ALPHABET,
    ) -> EncodedCorpus:
        """Read and encode a FASTA file (the shipped 40k Swiss-Prot corpus by default).

        ``split`` (``"train"``, ``"valid"``, ``"test"``) keeps only the proteins of that split
        (see :func:`~protein_performer.data.split.split_of`). Validation as in
        :class:`~protein_performer.data.fasta.FastaReader`.
        """
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        ids: list[str] = []
        chunks: list[np.ndarray] = []
        reader = FastaReader(path, skip_invalid=skip_invalid)
        for record in reader:
            if split is None or split_of(record.id) == split:
                ids.append(record.id)
                chunks.append(alphabet.encode_array(record.sequence))
        corpus = cls._from_chunks(ids, chunks)
        corpus.skipped_records = reader.stats.skipped_records
        return corpus

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, split: str | None = None) -> EncodedCorpus:
        """FASTA (plain or .gz, see :meth:`from_fasta`), or JSON lines with ``id`` and ``sequence`` (e.g.
        the PDB evaluation set; ``split`` does not apply to them). Errors name the file and line."""
        path = Path(path)
        if ".jsonl" not in path.suffixes:
            return cls.from_fasta(path, split=split)
        expected = "a JSON object with 'id' and 'sequence'"
        ids, sequences = [], []
        for where, row in read_json_lines(path, expected=expected):
            try:
                record_id, sequence = row["id"], row["sequence"].strip().upper()
            except (KeyError, AttributeError):
                raise ValueError(f"{where}: expected {expected}") from None
            problem = DEFAULT_ALPHABET.residue_problem(sequence)
            if problem:
                raise ValueError(f"{where}: record {record_id!r} has {problem}: fix or remove it")
            ids.append(str(record_id)), sequences.append(sequence)
        if not sequences:
            raise ValueError(f"{path} holds no sequences")
        return cls.from_sequences(sequences, ids)

    @classmethod
    def from_sequences(
        cls, sequences: Iterable[str], ids: Iterable[str] | None = None, *, alphabet: Alphabet = DEFAULT_ALPHABET
    ) -> EncodedCorpus:
        """Encode plain letter strings (ids default to ``"seq0"``, ``"seq1"``, ...)."""
        chunks = [alphabet.encode_array(s) for s in sequences]
        names = list(ids) if ids is not None else [f"seq{i}" for i in range(len(chunks))]
        if len(names) != len(chunks):
            raise ValueError(f"got {len(chunks)} sequences but {len(names)} ids")
        return cls._from_chunks(names, chunks)

    @classmethod
    def _from_chunks(cls, ids: list[str], chunks: list[np.ndarray]) -> EncodedCorpus:
        offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
        np.cumsum([len(c) for c in chunks], out=offsets[1:])
        residues = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint8)
        return cls(ids, residues, offsets)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> np.ndarray:
        """Residue ids of protein ``i``, ``uint8`` ``[T_i]`` (a view, no copy)."""
        return self.residues[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        """Protein lengths, int64 ``[n]``."""
        return np.diff(self.offsets)

    @property
    def num_residues(self) -> int:
        return len(self.residues)

    def subset(self, indices: Sequence[int] | np.ndarray) -> EncodedCorpus:
        """A new corpus with the proteins at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        chunks = [self[i] for i in idx.tolist()]
        return self._from_chunks([self.ids[i] for i in idx.tolist()], chunks)

    def select(self, split: str) -> EncodedCorpus:
        """The proteins of one split (``"train"``, ``"valid"`` or ``"test"``), in corpus order."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.subset([i for i, acc in enumerate(self.ids) if split_of(acc) == split])


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
        # Build the stream with vectorized scatters: <eos> of protein i lands at offsets[i+1] + i.
        n = len(corpus)
        self.stream = np.empty(corpus.num_residues + n, dtype=np.uint8)
        eos_at = corpus.offsets[1:] + np.arange(n)
        is_residue = np.ones(len(self.stream), dtype=bool)
        is_residue[eos_at] = False
        self.stream[is_residue] = corpus.residues
        self.stream[eos_at] = alphabet.eos_idx
        full, tail = divmod(len(self.stream), seq_len)
        self.num_windows = full + (1 if tail and not drop_last else 0)
        if self.num_windows == 0:
            raise ValueError(f"the corpus ({len(self.stream)} tokens with <eos>) is shorter than one window of {seq_len}")

    def _num_items(self) -> int:
        return self.num_windows

    def _make_sample(self, item: int, index: int) -> Tensor:
        window = self.stream[item * self.seq_len : (item + 1) * self.seq_len]
        return torch.from_numpy(window.astype(np.int64))
