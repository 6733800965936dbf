"""Training curves as a PNG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ..rundir import atomic_write


def plot_training_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy against step, training and validation, side by side."""
    if not history:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for split, style in (("train", "-"), ("valid", "o-")):
            points = [(r["step"], r[f"{split}/{metric}"]) for r in history if f"{split}/{metric}" in r]
            if points:
                ax.plot(*zip(*points), style, label=split, markersize=3)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(path.parent.name)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
