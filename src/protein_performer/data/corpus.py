"""Proteins encoded as token ids: :class:`EncodedCorpus`, in memory or memory-mapped from a prepared
corpus directory (``prepared.py``), and selections of it (a split, a subset) that copy nothing.

Storage: all residues back to back in one ``uint8`` array, ``int64`` offsets (protein ``j`` is
``residues[offsets[j]:offsets[j + 1]]``) and the ids. A corpus is that storage plus an optional
``index`` of the proteins it shows, in order: :meth:`EncodedCorpus.select` and
:meth:`EncodedCorpus.subset` return such views, so a memory-mapped corpus of any size stays on disk
(in the page cache, shared by every process of a node) however it is sliced.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .alphabet import DEFAULT_ALPHABET, Alphabet
from .fasta import FastaReader
from .jsonlines import read_json_lines
from .split import SPLITS, split_of

# The embedded corpus and PDB slice ship inside the package (package data), so they are found from a
# wheel as from a checkout.
DATA_DIR = Path(__file__).resolve().parent / "embedded"
DEFAULT_CORPUS_PATH = DATA_DIR / "swissprot2014_sp50_40k.fasta.gz"


class _Picked(Sequence):
    """``ids[index[i]]`` for a selection, without a list of its own."""

    def __init__(self, ids: Sequence[str], index: np.ndarray) -> None:
        self._ids, self._index = ids, index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._ids[int(j)] for j in self._index[i]]
        return self._ids[int(self._index[i])]

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))


class EncodedCorpus:
    """Proteins encoded as token ids (see the module docstring for the storage).

    ``EncodedCorpus(ids, residues, offsets)`` shows every stored protein; ``index`` (int64, into the
    storage) shows those proteins in that order. ``split_codes`` (uint8 per stored protein, the
    position of its split in :data:`SPLITS`) and ``split_index`` (``{split: index}``) are what a
    prepared corpus precomputed, so that :meth:`select` reads them instead of hashing every id;
    ``counts`` (``{"all" | split: [V] residue counts}``) likewise spares a pass over the residues.
    """

    def __init__(self, ids: Sequence[str], residues: np.ndarray, offsets: np.ndarray, *, index: np.ndarray | None = None,
                 split_codes: np.ndarray | None = None, split_index: dict[str, np.ndarray] | None = None,
                 counts: dict[str, np.ndarray] | None = None, counts_key: str | None = "all",
                 source: str | None = None) -> None:
        if len(offsets) != len(ids) + 1 or offsets[0] != 0 or offsets[-1] != len(residues):
            raise ValueError("offsets must be [0, ..., len(residues)] with one entry per id plus one")
        self._ids = ids if isinstance(ids, Sequence) and not isinstance(ids, (tuple, str)) else list(ids)
        self._residues = residues if isinstance(residues, np.memmap) else np.ascontiguousarray(residues, dtype=np.uint8)
        self._offsets = offsets if isinstance(offsets, np.memmap) else np.asarray(offsets, dtype=np.int64)
        self._index = index
        self._split_codes, self._split_index, self._counts = split_codes, split_index or {}, counts or {}
        self._counts_key = counts_key  # which of ``counts`` describes the proteins shown (None: none does)
        self.source = source  # the prepared directory a memory-mapped corpus comes from
        self.skipped_records = 0  # malformed FASTA records left out (``from_fasta(skip_invalid=True)``)

    # -- reading -----------------------------------------------------------------------------------
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
        """A prepared corpus directory (``protein-performer prepare``: memory-mapped), FASTA (plain or
        .gz, see :meth:`from_fasta`), or JSON lines with ``id`` and ``sequence`` (e.g. the PDB
        evaluation set; ``split`` does not apply to them). Errors name the file and line."""
        path = Path(path)
        if path.is_dir():
            from .prepared import open_prepared

            corpus = open_prepared(path)
            return corpus if split is None else corpus.select(split)
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

    # -- the proteins shown ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids) if self._index is None else len(self._index)

    def _stored(self, i: int) -> int:
        return i if self._index is None else int(self._index[i])

    def __getitem__(self, i: int) -> np.ndarray:
        """Residue ids of protein ``i``, ``uint8`` ``[T_i]`` (a view, no copy)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"protein {i} out of range for a corpus of {len(self)}")
        j = self._stored(i % len(self))
        return self._residues[self._offsets[j] : self._offsets[j + 1]]

    @property
    def ids(self) -> Sequence[str]:
        """Accessions, in corpus order (a list for a whole in-memory corpus)."""
        return self._ids if self._index is None else _Picked(self._ids, self._index)

    @property
    def residues(self) -> np.ndarray:
        """All residues shown, back to back (the storage itself for a whole corpus; a copy for a
        selection: prefer :meth:`__getitem__` and :meth:`residue_counts`)."""
        if self._index is None:
            return self._residues
        return np.concatenate([self[i] for i in range(len(self))]) if len(self) else np.zeros(0, dtype=np.uint8)

    @property
    def offsets(self) -> np.ndarray:
        """``[n + 1]`` int64: protein ``i`` is ``residues[offsets[i]:offsets[i + 1]]``."""
        if self._index is None:
            return self._offsets
        out = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=out[1:])
        return out

    @property
    def lengths(self) -> np.ndarray:
        """Protein lengths, int64 ``[n]``."""
        if self._index is None:
            return np.diff(self._offsets)
        return self._offsets[self._index + 1] - self._offsets[self._index]

    @property
    def num_residues(self) -> int:
        return len(self._residues) if self._index is None else int(self.lengths.sum())

    def residue_counts(self, vocab_size: int) -> np.ndarray:
        """How often each token id occurs among the residues shown, int64 ``[vocab_size]``
        (precomputed for a prepared corpus and its splits; otherwise counted in chunks)."""
        if self._counts_key in self._counts:
            known = np.zeros(vocab_size, dtype=np.int64)
            stored = np.asarray(self._counts[self._counts_key], dtype=np.int64)
            known[: len(stored)] = stored[:vocab_size]
            return known
        if self._index is None:
            return np.bincount(self._residues, minlength=vocab_size).astype(np.int64)
        counts = np.zeros(vocab_size, dtype=np.int64)
        for start in range(0, len(self), 65536):
            part = [self[i] for i in range(start, min(len(self), start + 65536))]
            counts += np.bincount(np.concatenate(part), minlength=vocab_size) if part else 0
        return counts

    # -- selections (views) ------------------------------------------------------------------------
    def _view(self, index: np.ndarray, counts_key: str | None = None) -> EncodedCorpus:
        return EncodedCorpus(self._ids, self._residues, self._offsets, index=index, split_codes=self._split_codes,
                             split_index=self._split_index, counts=self._counts, counts_key=counts_key, source=self.source)

    def subset(self, indices: Sequence[int] | np.ndarray) -> EncodedCorpus:
        """The proteins at ``indices`` (of this corpus), in that order: a view, nothing copied."""
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices must lie in [0, {len(self)})")
        return self._view(idx if self._index is None else self._index[idx])

    def select(self, split: str) -> EncodedCorpus:
        """The proteins of one split (``"train"``, ``"valid"`` or ``"test"``), in corpus order."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if self._index is None and split in self._split_index:
            return self._view(self._split_index[split], counts_key=split)
        if self._split_codes is not None:
            stored = np.arange(len(self._ids), dtype=np.int64) if self._index is None else self._index
            return self._view(stored[self._split_codes[stored] == SPLITS.index(split)])
        return self.subset([i for i, acc in enumerate(self.ids) if split_of(acc) == split])
