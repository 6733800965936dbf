"""The attention kernel's targets (issue 14), judged from two runs of ``benchmarks/attention.py``: one in a
plain process (glibc's default malloc) and one with freed memory retained (what the command line sets).

    python benchmarks/attention.py --dtypes float32 --out runs/bench/attention
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1000000000 \\
        python benchmarks/attention.py --dtypes float32 --out runs/bench/attention-retained
    python benchmarks/attention_targets.py runs/bench/attention runs/bench/attention-retained --update-docs

``--update-docs`` rewrites the section between the ``attention-targets`` markers of docs/benchmarks.md
(the targets, met or missed, and both runs' full tables) and keeps what it was computed from, a few kB,
as docs/figures/attention_targets_cpu.json: a test regenerates the section from that file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from attention_bench.report import _throughput_section, _timing_sections  # noqa: E402 (after the path)
from attention_bench.results import row_key  # noqa: E402
from docs_section import publish  # noqa: E402

ROOT = _HERE.parent
DOCS = ROOT / "docs" / "benchmarks.md"
FIGURE = ROOT / "docs" / "figures" / "attention_targets_cpu.png"  # only its .json is written (no figure)
MARKERS = ("<!-- attention-targets:begin (written by benchmarks/attention_targets.py) -->", "<!-- attention-targets:end -->")
MODES = ("plain", "retained")
LONG = (8192, 16384, 32768)


def compact(doc: dict[str, Any]) -> dict[str, Any]:
    """What the targets and the tables need from a results document: float32 rows, the matmul peak."""
    keep_cfg = ("lengths", "methods", "directions", "batch", "heads", "head_dim", "features", "chunk_size", "device")
    rows = []
    for r in doc["results"]:
        if r["dtype"] != "float32":
            continue
        row = {k: r[k] for k in ("dtype", "direction", "method", "length", "status") if k in r}
        if r.get("note"):
            row["note"] = r["note"]
        if r["status"] == "ok":
            row["fwd_bwd"] = {k: r["fwd_bwd"][k] for k in ("median_s", "peak_bytes", "minflt", "stime_s", "utime_s")}
            row["fwd"] = {"median_s": r["fwd"]["median_s"]}
            row.update({k: r[k] for k in ("gflops_fwd", "gflops_fwd_bwd") if k in r})
        rows.append(row)
    return {"malloc": doc["meta"].get("malloc"), "started": doc["meta"].get("started"), "machine": doc["meta"].get("device_name"),
            "config": {**{k: doc["config"][k] for k in keep_cfg}, "dtypes": ["float32"]},
            "matmul_gflops": doc["matmul"]["float32_square"]["gflops"], "results": rows}


def _time(run: dict[str, Any], direction: str, method: str, length: int) -> float | None:
    for r in run["results"]:
        if (r["direction"], r["method"], r["length"]) == (direction, method, length) and r["status"] == "ok":
            return r["fwd_bwd"]["median_s"]
    return None


def _ratios(run: dict[str, Any], direction: str, method: str) -> dict[int, float]:
    """Its f+b time over ours at each long length where both ran."""
    out = {}
    for n in LONG:
        ours, other = _time(run, direction, "ours", n), _time(run, direction, method, n)
        if ours and other:
            out[n] = other / ours
    return out


def judge(run: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """``(target, measured, met)`` for one run; met is None where it could not be measured."""
    out: list[tuple[str, str, bool | None]] = []
    bi, ca = _time(run, "bidirectional", "ours", 16384), _time(run, "causal", "ours", 16384)
    out.append(("causal within 1.6× of bidirectional at L = 16384",
                f"{ca * 1e3:.0f}/{bi * 1e3:.0f} = {ca / bi:.2f}×" if bi and ca else "not measured",
                (ca / bi <= 1.6) if bi and ca else None))
    for label, direction, method, goal in (("≥ 2× fast-transformers' C++ causal kernel at L ≥ 8192", "causal", "fast-tr", 2.0),
                                           ("≥ 3× performer-pytorch bidirectional at L ≥ 8192", "bidirectional", "performer", 3.0)):
        ratios = _ratios(run, direction, method)
        text = ", ".join(f"{r:.2f}× ({n})" for n, r in ratios.items()) or "not measured"
        out.append((label, text, min(ratios.values()) >= goal if ratios else None))
    scaling, ok = [], []
    for direction in ("bidirectional", "causal"):
        short, long_ = _time(run, direction, "ours", 8192), _time(run, direction, "ours", 32768)
        if short and long_:
            scaling.append(f"{direction} {long_ * 1e3:.0f}/{short * 1e3:.0f} = {long_ / short:.2f}")
            ok.append(long_ / short <= 4.5)
    out.append(("t(32768)/t(8192) ≤ 4.5 in a plain process", "; ".join(scaling) or "not measured", all(ok) if len(ok) == 2 else None))
    peaks = {r["direction"]: r["fwd_bwd"]["peak_bytes"] for r in run["results"]
             if r["method"] == "ours" and r["length"] == 32768 and r["status"] == "ok"}
    out.append(("peak memory at L = 32768 under 2 GiB", ", ".join(f"{d} {p / 2**20:.0f} MiB" for d, p in peaks.items()) or "not measured",
                all(p < 2**31 for p in peaks.values()) if len(peaks) == 2 else None))
    shares = [r["gflops_fwd_bwd"] / run["matmul_gflops"] for r in run["results"]
              if r["method"] == "ours" and r["status"] == "ok" and "gflops_fwd_bwd" in r]
    out.append(("matrix products ≥ 50% of plain matmul at every L",
                f"{100 * min(shares):.0f}–{100 * max(shares):.0f}% of {run['matmul_gflops']:.0f} GFLOP/s" if shares else "not measured",
                min(shares) >= 0.5 if shares else None))
    return out


def _verdict(met: list[bool | None]) -> str:
    if any(m is None for m in met):
        return "not measured"
    return "met" if all(met) else ("met with retained memory" if met[-1] else "missed")


def section(result: dict[str, Any]) -> str:
    judged = {mode: judge(result[mode]) for mode in MODES}
    machine = result["plain"].get("machine")
    lines = [f"Runs of {result['plain']['started'][:10]}{f' on {machine}' if machine else ''}; float32, forward+backward; "
             "medians of 3 runs, each configuration "
             "in a fresh process. Plain: glibc's default malloc; retained: "
             f"`{result['retained']['malloc']}` (what the command line sets for its own process).", "",
             "| target | plain malloc | retained memory | |", "|---|---|---|---|"]
    for i, (target, plain, met_plain) in enumerate(judged["plain"]):
        _, retained, met_retained = judged["retained"][i]
        verdict = _verdict([met_plain, met_plain if "plain process" in target else met_retained])
        lines.append(f"| {target} | {plain} | {retained} | {verdict} |")
    for mode in MODES:
        run = result[mode]
        by = {row_key(r): r for r in run["results"]}
        report = _timing_sections(run["results"], run["config"], by)
        report += _throughput_section(run["config"], by, {"float32_square": {"gflops": run["matmul_gflops"]}})
        lines += ["", f"Full tables, {'plain malloc' if mode == 'plain' else 'retained memory'}:", "", "```",
                  *"\n".join(report).strip("\n").splitlines(), "```"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plain", type=Path, help="output folder of the plain run (holds results.json)")
    parser.add_argument("retained", type=Path, help="output folder of the retained-memory run")
    parser.add_argument("--update-docs", action="store_true", help=f"rewrite the section in {DOCS.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    result = {}
    for mode, folder in zip(MODES, (args.plain, args.retained)):
        path = folder / "results.json"
        if not path.exists():
            print(f"attention_targets: {path} not found: run benchmarks/attention.py --out {folder} first", file=sys.stderr)
            return 2
        result[mode] = compact(json.loads(path.read_text()))
    body = section(result)
    print(body)
    if args.update_docs:
        publish(DOCS, MARKERS, body, result, FIGURE, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
