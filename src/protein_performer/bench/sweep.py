"""Length sweeps shared by the model-level benchmarks: each (attention, length) runs in a fresh
process (so peak memory is its own), lengths grow until a run is predicted too slow or too large, or
fails; the reason is recorded in place of the row."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence


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
            if skipped is None:
                proc = subprocess.run([sys.executable, script, *args, "--single", attention, str(length)],
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    skipped = f"failed: {proc.stderr.strip().splitlines()[-1:]}"
            if skipped is not None:
                results.append({"attention": attention, "length": length, "skipped": skipped})
                print(f"{attention} L={length}: skipped ({skipped})", flush=True)
                break
            previous = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(previous)
            print(f"{attention} L={length}: {describe(previous)}", flush=True)
    return results
