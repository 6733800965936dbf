"""The analyses' figures (matplotlib, no display needed). Each function writes one PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

KERNEL_LABELS = {"softmax": "positive (FAVOR+)", "softmax_trig": "trigonometric", "softmax_hyperbolic": "hyperbolic"}
DPI = 100


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_approximation(relative: dict, by_value: dict | None, path: Path, title: str = "") -> Path:
    """Left: the relative error per row ‖Â_i − A_i‖/‖A_i‖ against M per kernel, orthogonal solid, iid
    dashed (the median over samples: trig features have rare samples whose normalizer nearly
    vanishes, which would dominate a mean).
    Right (with ``by_value``): relative error against the true attention value."""
    panels = 2 if by_value else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.8), squeeze=False)
    ax = axes[0, 0]
    for color, (kernel, by_projection) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], relative.items()):
        for projection, style in (("orthogonal", "o-"), ("iid", "s--")):
            rows = by_projection[projection]
            m = [int(x) for x in rows]
            ax.plot(m, [rows[x]["median"] for x in rows], style, color=color, markersize=4,
                    label=f"{KERNEL_LABELS.get(kernel, kernel)}, {projection}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("random features M")
    ax.set_ylabel("relative error per row, ‖Â_i − A_i‖/‖A_i‖ (median)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    if by_value:
        ax = axes[0, 1]
        edges = np.asarray(by_value["edges"])
        centers = np.sqrt(edges[:-1] * edges[1:])
        for kernel in relative:
            if kernel in by_value:
                values = np.array([np.nan if v is None else v for v in by_value[kernel]["relative_rmse"]])
                ax.plot(centers, values, "o-", markersize=4, label=KERNEL_LABELS.get(kernel, kernel))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # decades only: minor labels overlap
        ax.set_xlabel("true attention value A_ij")
        ax.set_ylabel("relative RMS error of Â_ij")
        ax.set_title(f"M = {by_value['num_features']}, {by_value['projection']}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_attention_maps(maps: np.ndarray, residues: str, path: Path, title: str = "", start: int = 0) -> Path:
    """A grid of attention windows ``[layers, H, W, W]``: one row per layer, one column per head."""
    layers, heads, w, _ = maps.shape
    size = 2.4 if heads > 4 else 2.8
    fig, axes = plt.subplots(layers, heads, figsize=(size * heads, (size + 0.3) * layers + 0.4), squeeze=False)
    ticks = range(0, w, max(1, w // 6))
    for i in range(layers):
        for j in range(heads):
            ax = axes[i, j]
            ax.imshow(maps[i, j], cmap="viridis", interpolation="nearest", vmin=0.0, vmax=float(np.quantile(maps[i, j], 0.99)))
            ax.set_xticks(list(ticks))
            ax.set_yticks(list(ticks))
            ax.set_xticklabels([f"{residues[t]}{start + t + 1}" for t in ticks], fontsize=6, rotation=90)
            ax.set_yticklabels([f"{residues[t]}{start + t + 1}" for t in ticks], fontsize=6)
            ax.set_title(f"layer {i + 1}, head {j + 1}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_similarity(similarity: np.ndarray, blosum: np.ndarray, letters: str, path: Path, title: str = "") -> Path:
    """The attention similarity matrix beside BLOSUM62 (diagonals blanked: only pairs are compared)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    panels = ((similarity, "attention similarity (Pearson across heads)", "RdBu_r", (-1, 1)),
              (blosum, "BLOSUM62", "RdBu_r", (-4, 4)))
    for ax, (matrix, name, cmap, (low, high)) in zip(axes, panels):
        shown = np.array(matrix, dtype=float)
        np.fill_diagonal(shown, np.nan)
        image = ax.imshow(shown, cmap=cmap, vmin=low, vmax=high)
        ax.set_xticks(range(len(letters)), list(letters), fontsize=7)
        ax.set_yticks(range(len(letters)), list(letters), fontsize=7)
        ax.set_title(name, fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
