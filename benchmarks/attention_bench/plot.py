"""The attention benchmark's figure: time and peak memory against L, log-log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .options import DIRECTIONS, MIB

COLORS = {"ours": "tab:red", "sdpa": "tab:blue", "performer": "tab:green", "fast-tr": "tab:purple"}
STYLES = {"bidirectional": "-", "causal": "--"}


def plot(doc: dict[str, Any], path: Path) -> Path | None:
    """Forward+backward time and peak memory against L, one line per method and direction (float32 if
    measured, else the first dtype); None when nothing was measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in doc["results"] if r["status"] == "ok"]
    dtype = "float32" if any(r["dtype"] == "float32" for r in rows) else (rows[0]["dtype"] if rows else None)
    if dtype is None:
        return None
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(13, 5.2))
    for method in doc["config"]["methods"]:
        for direction in DIRECTIONS:
            pts = sorted((r["length"], r["fwd_bwd"]["median_s"], r["fwd_bwd"]["peak_bytes"]) for r in rows
                         if r["method"] == method and r["direction"] == direction and r["dtype"] == dtype)
            if not pts:
                continue
            xs = [p[0] for p in pts]
            label = f"{method} {direction}"
            ax_t.plot(xs, [p[1] for p in pts], STYLES[direction], color=COLORS[method], marker="o", ms=3, label=label)
            ax_m.plot(xs, [max(p[2], 1) / MIB for p in pts], STYLES[direction], color=COLORS[method], marker="o", ms=3, label=label)
    cfg = doc["config"]
    for ax, title, ylabel in ((ax_t, "forward+backward time", "seconds (median)"), (ax_m, "peak memory (forward+backward)", "MiB above inputs")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=8)
    fig.suptitle(f"attention, {dtype}, B={cfg['batch']} H={cfg['heads']} d={cfg['head_dim']} M={cfg['features']}, {doc['meta']['device_name']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
