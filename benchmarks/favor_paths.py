"""FAVOR's two CPU paths side by side: features kept for backward, or recomputed in blocks of positions
(``favor_attention(recompute=False / True)``), each with glibc's default malloc and with freed memory
retained, and which one the default (``recompute=None``) picks.

    python benchmarks/favor_paths.py [--lengths 4096 8192 16384 32768] [--update-docs]  (about 5 minutes)

Every configuration runs in a fresh process (the malloc setting is the environment it starts with):
forward+backward at B = 1, H = 8, d = 64, M = 256, C = 128, float32, the median of ``--repeats`` runs
after two warmups, and the peak resident memory above what the inputs hold (``VmHWM`` after a reset,
minus ``VmRSS`` before). Writes ``runs/bench/favor_paths/results.json``; with ``--update-docs`` the
section of docs/benchmarks.md between the ``favor-paths`` markers and ``docs/figures/favor_paths.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
RESULT = ROOT / "docs" / "figures" / "favor_paths.json"
BEGIN, END = "<!-- favor-paths:begin (written by benchmarks/favor_paths.py) -->", "<!-- favor-paths:end -->"
RETAINED = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000", "MALLOC_TOP_PAD_": "1000000000"}
MALLOCS = ("plain", "retained")
PATHS = {"kept": False, "blocks": True}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def run_single(spec: dict) -> dict:
    """One configuration in this process: median forward+backward seconds, peak MiB above the inputs, and
    the path ``recompute=None`` takes here."""
    import torch

    from protein_performer.attention import draw_projection, favor_attention
    from protein_performer.attention.ops.favor import _recompute

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 8, spec["length"], 64, requires_grad=True) for _ in range(3))
    w = draw_projection(256, 64, generator=torch.Generator().manual_seed(1))
    grad = torch.randn(1, 8, spec["length"], 64)

    def step() -> None:
        favor_attention(q, k, v, w, causal=spec["causal"], recompute=spec["recompute"]).backward(grad)
        q.grad = k.grad = v.grad = None

    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    step()
    peak = _status_kib("VmHWM") - before
    step()
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "peak_mib": peak / 1024, "default_recomputes": _recompute(q, w)}


def measure(args: argparse.Namespace) -> dict:
    rows = []
    for length in args.lengths:
        for causal in (False, True):
            for malloc in MALLOCS:
                env = {k: v for k, v in os.environ.items() if k not in RETAINED}
                env.update(RETAINED if malloc == "retained" else {})
                env["OMP_NUM_THREADS"] = str(args.threads)
                row = {"length": length, "direction": "causal" if causal else "bidirectional", "malloc": malloc}
                for path, recompute in PATHS.items():
                    spec = {"length": length, "causal": causal, "recompute": recompute, "repeats": args.repeats}
                    done = subprocess.run([sys.executable, __file__, "--single", json.dumps(spec)], env=env, check=True,
                                          capture_output=True, text=True)
                    row[path] = json.loads(done.stdout.strip().splitlines()[-1])
                row["default"] = "blocks" if row["kept"]["default_recomputes"] else "kept"
                print(f"L={length} {row['direction']} {malloc}: kept {row['kept']['seconds'] * 1e3:.0f} ms, "
                      f"blocks {row['blocks']['seconds'] * 1e3:.0f} ms, default {row['default']}", flush=True)
                rows.append(row)
    import torch

    return {"started": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "threads": args.threads, "repeats": args.repeats,
            "retained_env": " ".join(f"{k}={v}" for k, v in RETAINED.items()), "rows": rows}


def section(result: dict) -> str:
    lines = [f"Run of {result['started'][:10]} ({result['cpus']} CPUs, {result['threads']} threads, torch {result['torch']}): "
             f"forward+backward, float32, B = 1, H = 8, d = 64, M = 256, C = 128, median of {result['repeats']} runs, "
             "each configuration in a fresh process; retained: "
             f"`{result['retained_env']}`. Peak: resident memory above the inputs.", "",
             "| L | direction | malloc | kept ms | blocks ms | blocks/kept | kept peak MiB | blocks peak MiB | default |",
             "|---|---|---|---|---|---|---|---|---|"]
    slower, longest = [], max(r["length"] for r in result["rows"])
    at_longest = [r for r in result["rows"] if r["length"] == longest]
    for r in result["rows"]:
        kept, blocks = r["kept"], r["blocks"]
        faster = "blocks" if blocks["seconds"] < kept["seconds"] else "kept"
        if r["default"] != faster:
            slower.append(f"{r['length']} {r['direction']} {r['malloc']} ({r['default']})")
        lines.append(f"| {r['length']} | {r['direction']} | {r['malloc']} | {kept['seconds'] * 1e3:.0f} | {blocks['seconds'] * 1e3:.0f} | "
                     f"{blocks['seconds'] / kept['seconds']:.2f} | {kept['peak_mib']:.0f} | {blocks['peak_mib']:.0f} | {r['default']} |")
    otherwise = f" (not in {', '.join(slower)})" if slower else ""
    lines += ["", f"The default takes the faster path in {len(result['rows']) - len(slower)} of {len(result['rows'])} configurations"
              f"{otherwise}. Blocks/kept time: "
              + "; ".join(f"{malloc} {direction} {_span(ratios)}" for (malloc, direction), ratios in _ratios(result["rows"]).items())
              + f". Peak at L = {longest:,}: kept {_span((r['kept']['peak_mib'] for r in at_longest), '.0f')} MiB, "
              f"blocks {_span((r['blocks']['peak_mib'] for r in at_longest), '.0f')} MiB."]
    return "\n".join(lines)


def _ratios(rows: list[dict]) -> dict[tuple[str, str], list[float]]:
    """Blocks/kept time by (malloc, direction), in the order of the rows."""
    out: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        out.setdefault((r["malloc"], r["direction"]), []).append(r["blocks"]["seconds"] / r["kept"]["seconds"])
    return out


def _span(values, fmt: str = ".2f") -> str:
    values = sorted(values)
    return f"{values[0]:{fmt}}–{values[-1]:{fmt}}" if values[0] != values[-1] else f"{values[0]:{fmt}}"


def update_docs(result: dict, docs: Path = DOCS, result_path: Path = RESULT) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from docs_section import publish

    publish(docs, (BEGIN, END), section(result), result, result_path, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192, 16384, 32768])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/favor_paths"))
    parser.add_argument("--update-docs", action="store_true")
    parser.add_argument("--single", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.single:
        print(json.dumps(run_single(json.loads(args.single))))
        return 0
    result = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(section(result))
    if args.update_docs:
        update_docs(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
