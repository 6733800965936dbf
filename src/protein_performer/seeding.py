"""Seeds derived from a run's seed and a name, the same in every process and on every platform.

Why not Python's ``hash``: it is salted per process. Why not one global generator: a resumed run, or a
run on another number of processes, must draw exactly what an uninterrupted single-process run draws,
so every random stream (a sample's crop and masking, a redraw of projections, a rank's dropout) is
addressed by what it is for, e.g. ``(seed, "redraw", step)``, never by how many draws came before.
"""

from __future__ import annotations

import hashlib

import torch


def stable_hash(*parts: object) -> int:
    """A 64-bit integer determined by ``parts`` alone (their ``repr``, hashed with blake2b)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def derived_seed(*parts: object) -> int:
    """A 63-bit seed for ``torch.manual_seed`` (which takes at most 64 bits, signed on some paths)."""
    return stable_hash(*parts) >> 1


def seeded_generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded by :func:`derived_seed` of ``parts``."""
    return torch.Generator().manual_seed(derived_seed(*parts))
