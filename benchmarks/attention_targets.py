"""The attention kernel's targets (issue 14), judged from runs of ``benchmarks/attention.py``: in a plain
process (glibc's default malloc) and with freed memory retained (what the command line sets).

    python benchmarks/attention.py --dtypes float32 --out runs/bench/attention
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1000000000 \\
        python benchmarks/attention.py --dtypes float32 --out runs/bench/attention-retained
    python benchmarks/attention_targets.py runs/bench/attention runs/bench/attention-retained --update-docs

Each run is filed under its malloc setting (``meta.malloc``); give several of a setting (``--out`` a
folder each) and every time is their median, and each target says in how many of the runs it was met
(on a noisy machine one run is one draw). ``--update-docs`` rewrites the section between the
``attention-targets`` markers of docs/benchmarks.md (the targets, met or missed, and the full tables)
and keeps what it was computed from, a few kB per run, as docs/figures/attention_targets_cpu.json: a
test regenerates the section from that file.
"""

from __future__ import annotations

import argparse
import json
import statistics
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


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One compact run from several of the same configuration: per row the median of their times
    (the throughput scaled to it), page faults and CPU seconds, and the largest peak."""
    first = runs[0]
    by: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs:
        for r in run["results"]:
            by.setdefault(row_key(r), []).append(r)
    rows = []
    for group in by.values():
        ok = [r for r in group if r["status"] == "ok"]
        if len(ok) < len(runs):  # skipped or failed in some run: the first such row stands
            rows.append(next(r for r in group if r["status"] != "ok"))
            continue
        row = {k: v for k, v in ok[0].items() if k not in ("fwd_bwd", "fwd", "gflops_fwd", "gflops_fwd_bwd")}
        row["fwd_bwd"] = {k: statistics.median([r["fwd_bwd"][k] for r in ok]) for k in ("median_s", "minflt", "stime_s", "utime_s")}
        row["fwd_bwd"]["peak_bytes"] = max(r["fwd_bwd"]["peak_bytes"] for r in ok)
        row["fwd"] = {"median_s": statistics.median([r["fwd"]["median_s"] for r in ok])}
        for key, part in (("gflops_fwd", "fwd"), ("gflops_fwd_bwd", "fwd_bwd")):
            if key in ok[0]:  # FLOPs over time: the count is the same in every run
                row[key] = ok[0][key] * ok[0][part]["median_s"] / row[part]["median_s"]
        rows.append(row)
    return {**first, "started": min(r["started"] for r in runs), "matmul_gflops": statistics.median([r["matmul_gflops"] for r in runs]),
            "results": rows}


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


TARGETS = ("causal within 1.6× of bidirectional at L = 16384", "≥ 2× fast-transformers' C++ causal kernel at L ≥ 8192",
           "≥ 3× performer-pytorch bidirectional at L ≥ 8192", "t(32768)/t(8192) ≤ 4.5 in a plain process",
           "peak memory at L = 32768 under 2 GiB", "matrix products ≥ 50% of plain matmul at every L")
DIRECTIONS = ("bidirectional", "causal")


def measure(run: dict[str, Any]) -> list[dict[Any, float]]:
    """Per target (in the order of ``TARGETS``), the numbers it is judged by; empty where not measured."""
    bi, ca = _time(run, "bidirectional", "ours", 16384), _time(run, "causal", "ours", 16384)
    scaling = {}
    for direction in DIRECTIONS:
        short, long_ = _time(run, direction, "ours", 8192), _time(run, direction, "ours", 32768)
        if short and long_:
            scaling[direction] = long_ / short
    peaks = {r["direction"]: r["fwd_bwd"]["peak_bytes"] for r in run["results"]
             if r["method"] == "ours" and r["length"] == 32768 and r["status"] == "ok"}
    shares = {(r["direction"], r["length"]): r["gflops_fwd_bwd"] / run["matmul_gflops"] for r in run["results"]
              if r["method"] == "ours" and r["status"] == "ok" and "gflops_fwd_bwd" in r}
    return [{"ratio": ca / bi} if bi and ca else {}, _ratios(run, "causal", "fast-tr"), _ratios(run, "bidirectional", "performer"),
            scaling, peaks, shares]


def _met(numbers: list[dict[Any, float]]) -> list[bool | None]:
    ratio, fast, performer, scaling, peaks, shares = numbers
    return [ratio["ratio"] <= 1.6 if ratio else None,
            min(fast.values()) >= 2.0 if fast else None,
            min(performer.values()) >= 3.0 if performer else None,
            all(v <= 4.5 for v in scaling.values()) if len(scaling) == 2 else None,
            all(p < 2**31 for p in peaks.values()) if len(peaks) == 2 else None,
            min(shares.values()) >= 0.5 if shares else None]


def _texts(numbers: list[dict[Any, float]], matmul_gflops: float) -> list[str]:
    """What the targets' cells say of ``numbers`` (``measure``'s, or their medians over runs)."""
    ratio, fast, performer, scaling, peaks, shares = numbers
    return [f"{ratio['ratio']:.2f}×" if ratio else "not measured",
            *(", ".join(f"{r:.2f}× ({n})" for n, r in sorted(r_.items())) or "not measured" for r_ in (fast, performer)),
            "; ".join(f"{d} {v:.2f}" for d, v in scaling.items()) or "not measured",
            ", ".join(f"{d} {p / 2**20:.0f} MiB" for d, p in peaks.items()) or "not measured",
            f"{100 * min(shares.values()):.0f}–{100 * max(shares.values()):.0f}% of {matmul_gflops:.0f} GFLOP/s"
            if shares else "not measured"]


def judge(run: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """``(target, measured, met)`` for one run; met is None where it could not be measured. The two
    targets of time ratios also show the times (ms)."""
    numbers = measure(run)
    texts = _texts(numbers, run["matmul_gflops"])
    ms = {(d, n): f"{_time(run, d, 'ours', n) * 1e3:.0f}" for d in DIRECTIONS for n in (8192, 16384, 32768) if _time(run, d, "ours", n)}
    if numbers[0]:
        texts[0] = f"{ms['causal', 16384]}/{ms['bidirectional', 16384]} = {texts[0]}"
    if numbers[3]:
        texts[3] = "; ".join(f"{d} {ms[d, 32768]}/{ms[d, 8192]} = {v:.2f}" for d, v in numbers[3].items())
    return list(zip(TARGETS, texts, _met(numbers)))


def judge_runs(runs: list[dict[str, Any]]) -> list[tuple[str, str, bool | None]]:
    """``judge`` for one run; for several, each number the median of the runs' own (a ratio is taken
    within each run, where both of its times met the same machine), the peak the largest, and every
    target says in how many runs it was met."""
    if len(runs) == 1:
        return judge(runs[0])
    each = [measure(run) for run in runs]
    numbers = []
    for i in range(len(TARGETS)):
        keys = set.intersection(*(set(n[i]) for n in each))
        pick = max if i == 4 else statistics.median
        numbers.append({k: pick([n[i][k] for n in each]) for k in sorted(keys, key=str)})
    texts = _texts(numbers, statistics.median(r["matmul_gflops"] for r in runs))
    ratios = [n[0]["ratio"] for n in each if n[0]]
    if ratios:
        texts[0] += f" (runs {min(ratios):.2f}–{max(ratios):.2f})"
    per_run = [_met(n) for n in each]
    return [(target, f"{text} (met in {sum(m[i] is True for m in per_run)} of {len(runs)} runs)", met)
            for i, (target, text, met) in enumerate(zip(TARGETS, texts, _met(numbers)))]


def _verdict(met: list[bool | None]) -> str:
    if any(m is None for m in met):
        return "not measured"
    return "met" if all(met) else ("met with retained memory" if met[-1] else "missed")


def section(result: dict[str, list[dict[str, Any]]]) -> str:
    """The docs section from the compact runs of each malloc setting (``{"plain": [...], "retained": [...]}``)."""
    combined = {mode: combine(result[mode]) for mode in MODES}
    judged = {mode: judge_runs(result[mode]) for mode in MODES}
    machine = combined["plain"].get("machine")
    counts = {mode: len(result[mode]) for mode in MODES}
    dates = sorted({run["started"][:10] for mode in MODES for run in result[mode]})
    lines = [f"Runs of {' and '.join(dates)}{f' on {machine}' if machine else ''}; float32, forward+backward; "
             "medians of 3 timed runs, each configuration in a fresh process"
             + (f"; {counts['plain']} plain and {counts['retained']} retained runs of the benchmark, each number the median "
                "of the runs' own (a ratio taken within each run), the peak the largest" if max(counts.values()) > 1 else "")
             + ". Plain: glibc's default malloc; retained: "
             f"`{combined['retained']['malloc']}` (what the command line sets for its own process).", "",
             "| target | plain malloc | retained memory | |", "|---|---|---|---|"]
    for i, (target, plain, met_plain) in enumerate(judged["plain"]):
        _, retained, met_retained = judged["retained"][i]
        verdict = _verdict([met_plain, met_plain if "plain process" in target else met_retained])
        lines.append(f"| {target} | {plain} | {retained} | {verdict} |")
    for mode in MODES:
        run = combined[mode]
        by = {row_key(r): r for r in run["results"]}
        report = _timing_sections(run["results"], run["config"], by)
        report += _throughput_section(run["config"], by, {"float32_square": {"gflops": run["matmul_gflops"]}})
        medians = f" (medians over {counts[mode]} runs; peak: the largest)" if counts[mode] > 1 else ""
        lines += ["", f"Full tables, {'plain malloc' if mode == 'plain' else 'retained memory'}{medians}:", "", "```",
                  *"\n".join(report).strip("\n").splitlines(), "```"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+",
                        help="output folders of benchmarks/attention.py runs (each holds results.json), plain and retained")
    parser.add_argument("--update-docs", action="store_true", help=f"rewrite the section in {DOCS.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    result: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for folder in args.runs:
        path = folder / "results.json"
        if not path.exists():
            print(f"attention_targets: {path} not found: run benchmarks/attention.py --out {folder} first", file=sys.stderr)
            return 2
        run = compact(json.loads(path.read_text()))
        mode = "plain" if str(run["malloc"]).startswith("default") else "retained"
        if result[mode] and run["config"] != result[mode][0]["config"]:
            print(f"attention_targets: {path} measured another configuration than the other {mode} runs "
                  f"({run['config']} against {result[mode][0]['config']}): give runs of one configuration", file=sys.stderr)
            return 2
        result[mode].append(run)
    missing = [mode for mode in MODES if not result[mode]]
    if missing:
        print(f"attention_targets: no {' or '.join(missing)} run among {', '.join(map(str, args.runs))}: run "
              "benchmarks/attention.py once in a plain process and once with the MALLOC_* settings above", file=sys.stderr)
        return 2
    body = section(result)
    print(body)
    if args.update_docs:
        publish(DOCS, MARKERS, body, result, FIGURE, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
