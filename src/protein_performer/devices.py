"""Where a model runs: the one reading of a ``device`` setting, for the Python API and every command.

Left out (None), it is the GPU when PyTorch sees one and the CPU otherwise, so the same call works on a
laptop and on a GPU node. Given, it is checked here rather than at the first tensor copy, where a typo
or a CPU-only PyTorch build would surface as a long CUDA traceback.
"""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` → ``cuda`` when available, else ``cpu``; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a
    :class:`torch.device` → that device. ``ValueError`` naming the choice and the fix otherwise."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {str(device)!r}: `device` is cpu, cuda or cuda:N (the N-th GPU)")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: CUDA is not available here (no GPU, or a CPU-only PyTorch build): "
                             f"use `device` cpu, or leave `device` out to take the GPU only when there is one")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} GPU(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return resolved
