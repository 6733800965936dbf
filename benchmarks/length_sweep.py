"""Length sweeps shared by the model-level benchmarks (``embed_scaling.py``, ``long_context.py``): each
(attention, length) runs in a fresh process (so peak memory is its own), lengths grow until a run is
predicted too slow or too large, or fails; the reason is recorded in place of the row. ``plot_scaling``
draws such rows as the two-panel log-log scaling plot (FAVOR vs exact against L)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def sweep(script: str, args: Sequence[str], attentions: Sequence[str], lengths: Sequence[int], *,
          predict_skip: Callable[[dict, int, str], str | None], describe: Callable[[dict], str]) -> list[dict]:
    """Run ``python script *args --single ATTENTION LENGTH`` (which prints one JSON row) for every
    attention and growing length. ``predict_skip(previous_row, length, attention)`` returns a reason
    to stop before running, or None; ``describe(row)`` is the progress line's text."""
    results: list[dict] = []
    for attention in attentions:
        previous = None
        for length in lengths:
            skipped = predict_skip(previous, length, attention) if previous is not None else None
            row = run_point(script, args, attention, length) if skipped is None else {"skipped": skipped}
            if "skipped" in row:
                results.append({"attention": attention, "length": length, "skipped": row["skipped"]})
                print(f"{attention} L={length}: skipped ({row['skipped']})", flush=True)
                break
            previous = row
            results.append(previous)
            print(f"{attention} L={length}: {describe(previous)}", flush=True)
    return results


def run_point(script: str, args: Sequence[str], attention: str, length: int) -> dict:
    """``python script *args --single ATTENTION LENGTH`` in a fresh process: the JSON row it prints, or
    ``{"skipped": "failed: ..."}`` with its last error line."""
    proc = subprocess.run([sys.executable, script, *args, "--single", attention, str(length)], check=False,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {"skipped": f"failed: {proc.stderr.strip().splitlines()[-1:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


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
