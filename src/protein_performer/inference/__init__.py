"""Using a trained model: per-residue probabilities, embeddings, fill-mask, variant scores, probes.

Composes ``model`` (the network), ``data`` (alphabet, FASTA) and ``rundir`` (files);
the CLI's ``embed``, ``fill-mask``, ``score`` and ``probe`` commands are thin calls into it.

- :class:`ProteinLanguageModel` / :func:`load` (``model.py``): the model with its alphabet.
- :func:`write_embeddings` / :func:`read_embeddings` (``embed_h5.py``): FASTA → HDF5 keyed by id.
- :func:`score_variants` and :func:`parse_mutant` (``mutations.py``): ``A23G:L45P`` strings and CSV files.
- :func:`run_probes` (``probe.py``): secondary-structure and contact probes of frozen embeddings.
"""

from .embed_h5 import EmbedStats, group_name, read_embeddings, record_id, write_embeddings
from .model import DEFAULT_TOKENS_PER_BATCH, MaskPrediction, ProteinLanguageModel, length_batches, load
from .mutations import (
    Mutant,
    MutationError,
    Substitution,
    VariantScores,
    parse_mutant,
    parse_mutations,
    read_mutations_csv,
    score_variants,
)
from .probe import Chain, probe_split, read_chains, run_probes

__all__ = [
    "DEFAULT_TOKENS_PER_BATCH",
    "Chain",
    "EmbedStats",
    "MaskPrediction",
    "Mutant",
    "MutationError",
    "ProteinLanguageModel",
    "Substitution",
    "VariantScores",
    "group_name",
    "length_batches",
    "load",
    "parse_mutant",
    "parse_mutations",
    "probe_split",
    "read_chains",
    "read_embeddings",
    "read_mutations_csv",
    "record_id",
    "run_probes",
    "score_variants",
    "write_embeddings",
]
