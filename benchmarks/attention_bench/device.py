"""Dtype names of the command line as torch dtypes, and waiting for a device to finish its queued work."""

from __future__ import annotations

import torch


def torch_dtype(name: str):
    """``float32`` or ``bf16`` as a ``torch.dtype``."""
    return {"float32": torch.float32, "bf16": torch.bfloat16}[name]


def synchronize(device) -> None:
    """Wait for queued CUDA work (so a timer sees it); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
