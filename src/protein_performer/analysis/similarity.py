"""Amino-acid similarity from attention (Vig et al. 2020, "BERTology meets biology", §4.3) beside
BLOSUM62, with the number the Performer paper only showed by eye: their Spearman correlation.

- For every head h (of every layer): the share of its attention that lands on amino acid a,
  ``f_h(a) = Σ_seq Σ_i Σ_{j: x_j = a} A_ij / Σ_seq Σ_i Σ_j A_ij`` over the real (unpadded) queries.
- Similarity of amino acids a, b: the Pearson correlation of ``f_h(a)`` and ``f_h(b)`` across heads.
- Against BLOSUM62: Spearman correlation over the 190 off-diagonal pairs.

Each layer gives the attention each key receives (``received_attention``; the math is in
:mod:`protein_performer.attention.ops.naive`): for FAVOR ``Σ_i A_ij = k′_j · Σ_i q′_i / (q′_i·Σ_j' k′_j')``
from its features in O(L·M), no L×L matrix; exact attention summed over blocks of query rows.
Shapes: tokens ``[B, L]``, received attention ``[B, layers, H, L]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..data import DEFAULT_ALPHABET, STANDARD_AMINO_ACIDS, Alphabet


@torch.no_grad()
def received_attention(model, tokens: Tensor, padding_mask: Tensor | None = None) -> Tensor:
    """``Σ_i A_ij`` for every layer and head of a :class:`~protein_performer.model.PerformerLM`:
    ``[B, layers, H, L]`` (float64), padded queries and keys excluded."""
    received = [layer.received_attention(q.double(), k.double(), mask)
                for layer, q, k, mask in model.attention_inputs(tokens, padding_mask)]
    return torch.stack(received, dim=1)


class ProfileAccumulator:
    """Sums, per head, the attention landing on each of the 20 standard amino acids and in total."""

    def __init__(self, num_heads: int, alphabet: Alphabet = DEFAULT_ALPHABET):
        self.mass = np.zeros((num_heads, len(STANDARD_AMINO_ACIDS)))
        self.total = np.zeros(num_heads)
        self.residue_counts = np.zeros(len(STANDARD_AMINO_ACIDS), dtype=np.int64)
        self.sequences = 0
        self._column = np.full(len(alphabet), -1)
        self._column[list(alphabet.standard_idx)] = np.arange(len(STANDARD_AMINO_ACIDS))

    def add(self, received: np.ndarray, tokens: np.ndarray) -> None:
        """``received`` ``[heads, L]`` attention each position receives; ``tokens`` ``[L]`` its ids."""
        column = self._column[tokens]
        standard = column >= 0
        self.total += received.sum(-1)
        for h in range(received.shape[0]):
            self.mass[h] += np.bincount(column[standard], weights=received[h, standard], minlength=self.mass.shape[1])
        self.residue_counts += np.bincount(column[standard], minlength=len(self.residue_counts))
        self.sequences += 1

    def profiles(self) -> np.ndarray:
        """``f_h(a)`` ``[heads, 20]``: each head's share of attention landing on each amino acid."""
        return self.mass / self.total[:, None]


def similarity_matrix(profiles: np.ndarray) -> np.ndarray:
    """Pearson correlation across heads between the amino acids' profiles: ``[20, 20]`` (NaN for an
    amino acid whose share is the same in every head, e.g. never attended to)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.corrcoef(profiles.T)


def blosum62(letters: str = STANDARD_AMINO_ACIDS) -> np.ndarray:
    """BLOSUM62 (Biopython's) restricted to ``letters``, in that order."""
    from Bio.Align import substitution_matrices

    table = substitution_matrices.load("BLOSUM62")
    return np.array([[table[a, b] for b in letters] for a in letters], dtype=np.float64)


def compare_to_blosum(similarity: np.ndarray, reference: np.ndarray | None = None) -> dict:
    """Spearman correlation (and its p-value) of the off-diagonal pairs (upper triangle: 190 for 20
    amino acids) of ``similarity`` against BLOSUM62 (or ``reference``). Pairs with an undefined
    similarity (an amino acid never attended to) are left out and counted."""
    from scipy.stats import spearmanr

    reference = blosum62() if reference is None else reference
    upper = np.triu_indices(similarity.shape[0], k=1)
    x, y = similarity[upper], reference[upper]
    ok = np.isfinite(x)
    rho, p = spearmanr(x[ok], y[ok])
    return {"spearman": float(rho), "p_value": float(p), "pairs": int(ok.sum()), "undefined_pairs": int((~ok).sum())}


def attention_similarity(plm, sequences: Sequence[str], *, max_length: int = 1024,
                         progress: Callable[[Iterable], Iterable] = iter) -> dict:
    """The whole analysis for a :class:`~protein_performer.inference.ProteinLanguageModel` over
    ``sequences`` (each cropped to its first ``max_length`` residues): profiles, similarity matrix,
    BLOSUM62 comparison and the residue counts behind them."""
    if not sequences:
        raise ValueError("no sequences to aggregate attention over")
    config = plm.config
    acc = ProfileAccumulator(config.num_layers * config.num_heads, plm.alphabet)
    for sequence in progress(sequences):
        tokens = plm.tokenize(sequence[:max_length]).to(plm.device)
        received = received_attention(plm.model, tokens[None])[0]  # [layers, H, L]
        acc.add(received.flatten(0, 1).cpu().numpy(), tokens.cpu().numpy())
    profiles = acc.profiles()
    similarity = similarity_matrix(profiles)
    return {
        "letters": STANDARD_AMINO_ACIDS,
        "profiles": profiles.tolist(),
        "similarity": [[float(v) if np.isfinite(v) else None for v in row] for row in similarity],
        "blosum62": blosum62().tolist(),
        "comparison": compare_to_blosum(similarity),
        "sequences": acc.sequences,
        "residues": int(acc.residue_counts.sum()),
        "residue_counts": dict(zip(STANDARD_AMINO_ACIDS, acc.residue_counts.tolist())),
        "heads": int(profiles.shape[0]),
        "max_length": max_length,
    }
