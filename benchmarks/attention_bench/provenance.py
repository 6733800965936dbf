"""What a results file was measured with: the attention code (a hash and the git commit of the
checkout) and the machine, the software and the command line."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def attention_source() -> dict[str, Any]:
    """Identity of the attention code being measured: sha256 over ``protein_performer/attention/**/*.py``
    (relative names and contents), and the git commit of the checkout with whether that directory has uncommitted changes."""
    import protein_performer.attention as pkg

    root = Path(pkg.__file__).resolve().parent
    digest = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        digest.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    info: dict[str, Any] = {"sha256": digest.hexdigest()[:16]}
    with contextlib.suppress(Exception):
        head = _git(root, "rev-parse", "--short", "HEAD")
        if head.returncode == 0:
            info["git_commit"] = head.stdout.strip()
            info["git_dirty"] = bool(_git(root, "status", "--porcelain", "--", ".").stdout.strip())
    return info


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, check=False, capture_output=True, text=True, timeout=10)


def _cpu_name() -> str:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return cpu


def machine_meta(args: argparse.Namespace, device_name: str) -> dict[str, Any]:
    """Machine, versions, thread count, command line and load at the start of a benchmark."""
    import torch

    cpu = _cpu_name()
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads or torch.get_num_threads(),
        "device_name": torch.cuda.get_device_name() if device_name.startswith("cuda") else f"CPU ({cpu}, {os.cpu_count()} cores)",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "malloc": " ".join([os.environ.get("LD_PRELOAD", ""), *(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_") or k == "THP_MEM_ALLOC_ENABLE")]).strip()
        or "default (glibc)",
    }
