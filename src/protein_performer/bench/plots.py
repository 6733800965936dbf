"""The two-panel log-log scaling plot shared by the model-level benchmarks (FAVOR vs exact against L)."""

from __future__ import annotations

from pathlib import Path


def plot_scaling(results: list[dict], path: Path, *, panels: list[tuple[str, str]], labels: dict[str, str],
                 xlabel: str, marks: list[tuple[str, float, str]] = ()) -> None:
    """One line per ``attention`` in ``labels`` ({"favor": ..., "softmax": ...}), one panel per
    ``(key, ylabel)`` in ``panels``, rows with a ``skipped`` note left out. ``marks``:
    ``("h" | "v", value, label)`` reference lines drawn on the last panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8))
    for attention, label in labels.items():
        rows = [r for r in results if r["attention"] == attention and "skipped" not in r]
        for ax, (key, _) in zip(axes, panels):
            ax.plot([r["length"] for r in rows], [r[key] for r in rows], "o-", label=label)
    for kind, value, label in marks:
        (axes[-1].axhline if kind == "h" else axes[-1].axvline)(value, color="gray", ls="--" if kind == "h" else ":", lw=1, label=label)
    for ax, (_, ylabel) in zip(axes, panels):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
