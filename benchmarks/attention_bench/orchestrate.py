"""The benchmark run: every (dtype, direction, method, L) measured in a fresh process, lengths growing
until a method is predicted too slow or too large (or fails), the results document saved after each
configuration; plain matmul throughput measured at the start and the end; then crossover, report and plot."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from .flops import favor_flops, matmul_throughput, sdpa_flops
from .methods import method_available
from .options import GIB, device_type
from .plot import plot
from .procfs import wait_for_quiet
from .provenance import attention_source, machine_meta
from .report import fmt_mib, fmt_ms, format_report
from .results import best_matmul, merge_base, row_key, save
from .runner import ProcessRunner
from .scaling import crossover, predict

ELEMENT_BYTES = {"float32": 4, "bf16": 2}
CONTENDED_SHARE = 0.1  # other processes used over this share of the machine during a run: re-run it


def _config(args: argparse.Namespace, methods: list[str]) -> dict[str, Any]:
    """The settings of a run, as recorded in the results document."""
    return {
        "lengths": args.lengths, "dtypes": args.dtypes, "directions": args.directions, "methods": methods,
        "batch": args.batch, "heads": args.heads, "head_dim": args.head_dim, "features": args.features,
        "chunk_size": args.chunk_size, "repeats": args.repeats, "slow_run_s": args.slow_run_s,
        "memory_limit_gb": args.memory_limit_gb, "time_limit_s": args.time_limit_s, "device": args.device,
        "threads": args.threads, "seed": args.seed, "quick": args.quick, "quiet_wait_s": args.quiet_wait_s, "retries": args.retries,
        "fwd": "forward under torch.no_grad (inference)",
        "fwd_bwd": "forward with inputs requiring grad, then backward from a fixed random output gradient",
        "timing_protocol": 2,  # 1 (before): every timed run preceded by malloc_trim; 2: timing runs without it
        "peak_memory": ("VmHWM - VmRSS before a dedicated run (malloc_trim + clear_refs reset), inputs excluded"
                        if device_type(args) == "cpu" else "torch.cuda.max_memory_allocated - memory_allocated before the run"),
        "flop_convention": "see the docstring of benchmarks/attention_bench/__init__.py",
    }


def _mark_contention(load: dict[str, Any]) -> None:
    share = load.get("other_cpu_s", 0.0) / max(load["wall_s"] * (os.cpu_count() or 1), 1e-9)
    load["other_share"] = round(share, 3)
    load["contended"] = bool(share > CONTENDED_SHARE and load.get("other_cpu_s", 0.0) > 0.2)


def _add_flops(row: dict[str, Any], args: argparse.Namespace) -> None:
    """FLOP counts and achieved GFLOP/s of a measured row of ours or SDPA."""
    n, causal = row["length"], row["direction"] == "causal"
    if row["method"] == "ours":
        flop = favor_flops(n, args.batch, args.heads, args.head_dim, args.features, causal, args.chunk_size)
    elif row["method"] == "sdpa":
        flop = sdpa_flops(n, args.batch, args.heads, args.head_dim, causal)
    else:
        return
    row["flops_fwd"], row["flops_fwd_bwd"] = flop
    row["gflops_fwd"] = flop[0] / row["fwd"]["median_s"] / 1e9
    row["gflops_fwd_bwd"] = flop[1] / row["fwd_bwd"]["median_s"] / 1e9


def _ok_message(row: dict[str, Any]) -> str:
    fb, fw, load = row["fwd_bwd"], row["fwd"], row["load"]
    msg = (f"f+b {fmt_ms(fb['median_s'])} ms ({fb['runs']}x), fwd {fmt_ms(fw['median_s'])} ms, "
           f"peak {fmt_mib(fb['peak_bytes'])} MiB, {fb['minflt'] / 1e3:.0f}k faults")
    if load.get("contended"):
        msg += f"  [other processes used {load['other_cpu_s']:.1f} CPU-s]"
    return msg


class AttentionBenchmark:
    """One run of the benchmark over the options in ``args`` (defaults resolved)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.cpu = device_type(args) == "cpu"
        self.results_path = args.out / "results.json"
        self.methods: list[str] = []
        self.skipped_methods: dict[str, str] = {}
        for m in args.methods:
            ok, info = method_available(m, args.device)
            if ok:
                self.methods.append(m)
            else:
                self.skipped_methods[m] = info
                print(f"note: skipping {m}: {info}", flush=True)

    def run(self) -> int:
        self.args.out.mkdir(parents=True, exist_ok=True)
        self.doc = self._new_document()
        self.runner = ProcessRunner(self._preload())
        self.start = time.perf_counter()
        for dtype in self.args.dtypes:
            for direction in self.args.directions:
                for method in self.methods:
                    if method == "fast-tr" and direction != "causal":
                        continue  # causal-only kernel
                    self._sweep_lengths(dtype, direction, method)
        self._finish()
        return 0

    def _measure_matmul(self, when: str) -> dict[str, Any]:
        quiet = wait_for_quiet(self.args.quiet_wait_s) if self.cpu else {}
        print(f"measuring plain matmul throughput on {self.args.device} ({when}) ...", flush=True)
        mm = matmul_throughput(self.args.device, self.args.threads, self.args.quick, tuple(self.args.dtypes))
        mm.update(quiet)
        print("  " + ", ".join(f"{k} {v['gflops']:.0f} GFLOP/s" for k, v in mm.items() if isinstance(v, dict)), flush=True)
        return mm

    def _new_document(self) -> dict[str, Any]:
        """The results document with meta, config and the start matmul; merged into the existing one with ``--update``."""
        meta = machine_meta(self.args, self.args.device)
        meta["optional"] = {m: method_available(m, self.args.device)[1] for m in ("performer", "fast-tr")}
        meta["skipped_methods"] = self.skipped_methods
        meta["attention_source_start"] = attention_source()
        matmul_runs = [self._measure_matmul("start")]
        doc: dict[str, Any] = {"meta": meta, "config": _config(self.args, self.methods), "matmul": best_matmul(matmul_runs),
                               "matmul_runs": matmul_runs, "results": [], "crossover": {}}
        if self.args.update and self.results_path.exists():
            doc = merge_base(json.loads(self.results_path.read_text()), doc)
        return doc

    def _preload(self) -> list[str]:
        extra = {"performer": "performer_pytorch", "fast-tr": "fast_transformers.causal_product"}
        return ["torch", "protein_performer.attention", *(extra[m] for m in extra if m in self.methods)]

    def _log(self, row: dict[str, Any], msg: str) -> None:
        print(f"[{row['dtype']} {row['direction']} {row['method']} L={row['length']}] {msg}", flush=True)

    def _skip_reason(self, dtype: str, n: int, pred_t: float | None, pred_m: float | None) -> str | None:
        """Why a run at length n is predicted to exceed the memory or time limit, or None."""
        args = self.args
        input_bytes = 2 * 3 * args.batch * args.heads * n * args.head_dim * ELEMENT_BYTES[dtype]  # q,k,v and their grads
        if pred_m is not None and pred_m + input_bytes > args.memory_limit_gb * GIB:
            return (f"skipped: predicted peak {(pred_m + input_bytes) / GIB:.1f} GiB (incl. inputs) > memory limit "
                    f"{args.memory_limit_gb:g} GiB at L={n}")
        if pred_t is not None and pred_t > args.time_limit_s:
            return f"skipped: predicted fwd+bwd run {pred_t:.0f} s > time limit {args.time_limit_s:g} s at L={n}"
        return None

    def _sweep_lengths(self, dtype: str, direction: str, method: str) -> None:
        """Every length of one (dtype, direction, method), each predicted from the ones before it."""
        stop_note: str | None = None
        t_points: list[tuple[int, float]] = []
        m_points: list[tuple[int, float]] = []
        for n in self.args.lengths:
            row: dict[str, Any] = {"method": method, "direction": direction, "dtype": dtype, "length": n}
            self.doc["results"] = [r for r in self.doc["results"] if row_key(r) != row_key(row)]
            pred_t = predict(t_points, n, min_slope=2.0 if method == "sdpa" else 1.0)
            pred_m = predict(m_points, n, min_slope=1.0)
            row["predicted"] = {"fwd_bwd_s": pred_t, "peak_bytes": pred_m}
            if stop_note is None:
                stop_note = self._skip_reason(dtype, n, pred_t, pred_m)
            if stop_note is not None:
                row.update(status="skipped", note=stop_note)
                self.doc["results"].append(row)
                self._log(row, stop_note)
                save(self.doc, self.results_path)
                continue
            self._measure_row(row, pred_t)
            if row["status"] == "ok":
                t_points.append((n, row["fwd_bwd"]["median_s"]))
                m_points.append((n, row["fwd_bwd"]["peak_bytes"]))
            else:
                stop_note = f"skipped: {row.get('note', 'failed')} at L={n}"

    def _spec(self, row: dict[str, Any], slow: bool) -> dict[str, Any]:
        """What the fresh process measures (the argument of ``single.run_single``)."""
        args = self.args
        return {
            "method": row["method"], "direction": row["direction"], "dtype": row["dtype"], "length": row["length"], "batch": args.batch,
            "heads": args.heads, "head_dim": args.head_dim, "features": args.features,
            "chunk_size": args.chunk_size, "device": args.device, "repeats": args.repeats, "slow": slow,
            "slow_run_s": args.slow_run_s, "seed": args.seed, "threads": args.threads,
            "address_space_limit": int(1.5 * args.memory_limit_gb * GIB + 4 * GIB) if self.cpu else None,
        }

    def _measure_row(self, row: dict[str, Any], pred_t: float | None) -> None:
        """Measure one configuration in a fresh process and record it (and its FLOPs) in ``row``."""
        args = self.args
        slow = pred_t is not None and pred_t > args.slow_run_s
        plan_repeats = 1 if slow else args.repeats
        timeout = 120 + 2 * (plan_repeats + 1) * 2 * min(pred_t or args.time_limit_s, args.time_limit_s) * 1.5
        result, load = self._run_with_retries(row, self._spec(row, slow), timeout)
        row.update(result)
        row["load"] = load
        self.doc["results"].append(row)
        if row["status"] == "ok":
            _add_flops(row, args)
            msg = _ok_message(row)
        else:
            msg = f"{row['status']}: {row.get('note')}"
        self._log(row, f"{msg}  ({time.perf_counter() - self.start:.0f} s)")
        save(self.doc, self.results_path)

    def _run_with_retries(self, row: dict[str, Any], spec: dict[str, Any], timeout: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run ``spec``, again (up to ``--retries`` times) while other processes disturbed it; the least disturbed result."""
        retries = max(0, self.args.retries)
        attempts = []
        for attempt in range(1 + retries):
            quiet = wait_for_quiet(self.args.quiet_wait_s) if self.cpu else {}
            result, load = self.runner.run(spec, timeout)
            load.update(quiet)
            _mark_contention(load)
            attempts.append((result, load))
            if not load["contended"] or result.get("status") != "ok":
                break
            self._log(row, f"other processes used {load['other_cpu_s']:.1f} CPU-s ({100 * load['other_share']:.0f}% of the machine) "
                      "during the run" + ("; re-running" if attempt < self.args.retries else ""))
        result, load = min(attempts, key=lambda a: (a[0].get("status") != "ok", a[1].get("other_share", 0.0)))
        load["attempts"] = len(attempts)
        return result, load

    def _finish(self) -> None:
        """End matmul, crossover and timing meta; then the report (printed and saved) and the plot."""
        doc = self.doc
        doc["matmul_runs"].append(self._measure_matmul("end"))
        doc["matmul"] = best_matmul(doc["matmul_runs"])
        doc["crossover"] = {dt: {dr: crossover(doc["results"], dt, dr) for dr in doc["config"]["directions"]} for dt in doc["config"]["dtypes"]}
        doc["meta"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        doc["meta"]["total_s"] = time.perf_counter() - self.start
        doc["meta"]["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        doc["meta"]["attention_source_end"] = attention_source()
        report = format_report(doc)
        doc["report"] = report
        save(doc, self.results_path)
        print(report)
        if not self.args.no_plot:
            png = plot(doc, self.args.out / "attention.png")
            if png:
                print(f"\nplot: {png}")
        print(f"results: {self.results_path}")
