"""Deterministic train / validation / test split by a hash of the accession.

A sequence's split depends only on its accession string, never on file order, corpus size or a
random seed: adding or removing sequences never moves another one across splits, and every tool
(training, evaluation, probes) agrees without sharing a list. Homology leakage is handled upstream:
the default corpus is clustered at 50% identity, so a hash split of it is a homology-aware split at
that threshold.
"""

from __future__ import annotations

import hashlib

SPLITS: tuple[str, ...] = ("train", "valid", "test")
# Bucket boundaries in [0, 1): train [0, 0.95), valid [0.95, 0.975), test [0.975, 1).
SPLIT_FRACTIONS: dict[str, float] = {"train": 0.95, "valid": 0.025, "test": 0.025}
_VALID_START = SPLIT_FRACTIONS["train"]
_TEST_START = SPLIT_FRACTIONS["train"] + SPLIT_FRACTIONS["valid"]


def split_bucket(accession: str) -> float:
    """Map an accession (the exact string, case-sensitive) to a uniform number in ``[0, 1)``.

    blake2b (not Python's ``hash``, which is salted per process) of the UTF-8 bytes; the top 53
    bits, so the float division is exact and never rounds up to 1.0.
    """
    digest = hashlib.blake2b(accession.encode("utf-8"), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) / 2.0**53


def split_of(accession: str) -> str:
    """``"train"`` (≈95%), ``"valid"`` (≈2.5%) or ``"test"`` (≈2.5%) for this accession."""
    bucket = split_bucket(accession)
    if bucket < _VALID_START:
        return "train"
    if bucket < _TEST_START:
        return "valid"
    return "test"
