"""Protein data: vocabulary, FASTA reading, splits, training datasets and batch collation.

Knows nothing about models. The pieces, in the order data flows through them:

- :class:`Alphabet` (``alphabet.py``): 30 tokens with fixed ids; tokenizes, checks and pads sequences.
- :class:`FastaReader` (``fasta.py``): streaming, validating FASTA (plain or gzip) -> records.
- :func:`split_of` (``split.py``): accession -> ``"train"`` / ``"valid"`` / ``"test"`` by hash.
- :class:`EncodedCorpus` (``corpus.py``): the corpus in memory or memory-mapped, and views of it.
- :func:`prepare` (``prepared.py``): FASTA -> a memory-mappable corpus directory, streaming.
- :class:`SingleSequenceDataset`, :class:`PackedDataset` (``datasets.py``): the paper's two regimes,
  addressed by global step for exact resume.
- :class:`MaskedLMCollator`, :class:`CausalLMCollator` (``collate.py``): padded batches with labels.
"""

from .alphabet import (
    DEFAULT_ALPHABET,
    RARE_AMINO_ACIDS,
    RESIDUE_LETTERS,
    SPECIAL_TOKENS,
    STANDARD_AMINO_ACIDS,
    Alphabet,
)
from .collate import IGNORE_INDEX, CausalLMCollator, MaskedLMCollator
from .corpus import DATA_DIR, DEFAULT_CORPUS_PATH, EncodedCorpus
from .datasets import (
    GlobalIndexDataset,
    PackedDataset,
    SingleSequenceDataset,
    StepBatch,
)
from .fasta import FastaError, FastaReader, FastaRecord, FastaStats, file_fingerprint, read_fasta
from .prepared import PreparedCorpusError, data_fingerprint, open_prepared, prepare
from .split import SPLIT_FRACTIONS, SPLITS, split_bucket, split_of

__all__ = [
    "DATA_DIR",
    "DEFAULT_ALPHABET",
    "DEFAULT_CORPUS_PATH",
    "IGNORE_INDEX",
    "RARE_AMINO_ACIDS",
    "RESIDUE_LETTERS",
    "SPECIAL_TOKENS",
    "SPLITS",
    "SPLIT_FRACTIONS",
    "STANDARD_AMINO_ACIDS",
    "Alphabet",
    "CausalLMCollator",
    "EncodedCorpus",
    "FastaError",
    "FastaReader",
    "FastaRecord",
    "FastaStats",
    "GlobalIndexDataset",
    "MaskedLMCollator",
    "PackedDataset",
    "PreparedCorpusError",
    "SingleSequenceDataset",
    "StepBatch",
    "data_fingerprint",
    "file_fingerprint",
    "open_prepared",
    "prepare",
    "read_fasta",
    "split_bucket",
    "split_of",
]
