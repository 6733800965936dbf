"""Data-parallel training on PyTorch's own engine: ``torch.distributed`` started by ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; :func:`from_env`
joins the process group (gloo on CPU, NCCL on GPU) and returns a :class:`Distributed` that the
trainer asks for its rank and for the few collectives it needs. Without ``torchrun`` it is the
single-process context (rank 0 of 1) and no process group is created.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device:
        """``cuda:LOCAL_RANK`` where there is a GPU, else the CPU."""
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum of ``values`` over all ranks (float64; exact for counts below 2**53)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, value: object) -> list[object]:
        """``value`` of every rank, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        out: list[object] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def check_identical(self, tensors: list[Tensor], what: str) -> None:
        """Raise unless ``tensors`` are bitwise equal on every rank (compared through a hash of their bytes)."""
        if not self.enabled:
            return
        digest = hashlib.blake2b(digest_size=16)
        for t in tensors:
            digest.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        digests = self.gather(digest.hexdigest())
        if len(set(digests)) != 1:
            raise RuntimeError(f"{what} differ across ranks (digests {digests})")

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


DEFAULT_TIMEOUT_MINUTES = 60.0


def from_env(timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES) -> Distributed:
    """Join the process group ``torchrun`` describes in the environment, or run alone. A collective
    waits up to ``timeout_minutes`` for the slowest rank (e.g. one writing a large checkpoint to a
    slow file system) before the job fails; torch's defaults are 10 (NCCL) and 30 (gloo) minutes."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Distributed()
    context = Distributed(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    device = context.device()
    if not dist.is_initialized():
        timeout = timedelta(minutes=timeout_minutes)
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device, timeout=timeout)
        else:
            dist.init_process_group("gloo", timeout=timeout)
    return context
