"""The text report of a results document: per dtype and direction a table of times and peaks of every
method, then matmul throughput, achieved GFLOP/s of ours, the crossover with SDPA, and warnings."""

from __future__ import annotations

import math
from typing import Any

from .options import MIB
from .results import row_key

SHORT = {"ours": "ours", "sdpa": "sdpa", "performer": "perf", "fast-tr": "fasttr"}


def fmt_ms(s: float | None) -> str:
    if s is None:
        return "-"
    ms = s * 1e3
    return f"{ms:.0f}" if ms >= 100 else (f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}")


def fmt_mib(b: float | None) -> str:
    if b is None or not math.isfinite(b):
        return "-"
    return f"{b / MIB:.0f}" if b >= 10 * MIB else f"{b / MIB:.1f}"


def _table(headers: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in body]
    return "\n".join(lines)


def _method_cells(r: dict[str, Any] | None) -> list[str]:
    """f+b ms, fwd ms, MiB of one method at one length."""
    if r is None:
        return ["-", "-", "-"]
    if r["status"] != "ok":
        return ["skip" if r["status"] == "skipped" else r["status"], "", ""]
    return [fmt_ms(r["fwd_bwd"]["median_s"]), fmt_ms(r["fwd"]["median_s"]), fmt_mib(r["fwd_bwd"]["peak_bytes"])]


def _ratio_cell(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    if a and b and a["status"] == b["status"] == "ok":
        return f"{a['fwd_bwd']['median_s'] / b['fwd_bwd']['median_s']:.3f}"
    return "-"


def _timing_table(by: dict[tuple, dict], lengths: list[int], dtype: str, direction: str, methods: list[str]) -> str:
    headers = ["L"]
    for m in methods:
        headers += [f"{SHORT[m]} f+b ms", f"{SHORT[m]} fwd ms", f"{SHORT[m]} MiB"]
    headers += ["ours/sdpa", "ours/perf"]
    body = []
    for n in lengths:
        cells = [str(n)]
        for m in methods:
            cells += _method_cells(by.get((dtype, direction, m, n)))
        ours = by.get((dtype, direction, "ours", n))
        cells += [_ratio_cell(ours, by.get((dtype, direction, other, n))) for other in ("sdpa", "performer")]
        body.append(cells)
    return _table(headers, body)


def _skip_notes(rows: list[dict[str, Any]], dtype: str, direction: str) -> list[str]:
    """One line per method and reason a row was not measured (the first length only)."""
    notes = sorted({(r["method"], r.get("note", "")) for r in rows
                    if r["dtype"] == dtype and r["direction"] == direction and r["status"] != "ok" and r.get("note")})
    out, seen = [], set()
    for m, note in notes:
        if (m, note.split(" at L=")[0]) in seen:
            continue
        seen.add((m, note.split(" at L=")[0]))
        out.append(f"  note {SHORT[m]}: {note}")
    return out


def _timing_sections(rows: list[dict[str, Any]], cfg: dict[str, Any], by: dict[tuple, dict]) -> list[str]:
    methods = [m for m in cfg["methods"] if any(r["method"] == m for r in rows)]
    out: list[str] = []
    for dtype in cfg["dtypes"]:
        for direction in cfg["directions"]:
            ms = [m for m in methods if (direction == "causal" or m != "fast-tr")]
            out.append(f"\n== {dtype}, {direction} (B={cfg['batch']}, H={cfg['heads']}, d={cfg['head_dim']}, M={cfg['features']}, "
                       f"device {cfg['device']}): f+b = forward+backward, fwd = forward (no_grad); MiB = f+b peak above inputs; "
                       f"ratios are f+b times ==")
            out.append(_timing_table(by, cfg["lengths"], dtype, direction, ms))
            out += _skip_notes(rows, dtype, direction)
    return out


def _matmul_section(mm: dict[str, Any]) -> list[str]:
    out = ["\n== plain torch.matmul into a reused out= buffer (same run; best of start and end) =="]
    for key, val in mm.items():
        if isinstance(val, dict):
            out.append(f"  {key:24s} {val['shape']}: {val['gflops']:.0f} GFLOP/s")
    return out


def _throughput_row(r: dict[str, Any], s: dict[str, Any] | None, peak32: float | None) -> list[str]:
    s_ok = bool(s and s["status"] == "ok")
    return [r["dtype"], r["direction"], str(r["length"]), f"{r['gflops_fwd']:.0f}", f"{r['gflops_fwd_bwd']:.0f}",
            f"{100 * r['gflops_fwd_bwd'] / peak32:.0f}%" if peak32 else "-",
            f"{r['fwd_bwd']['minflt'] / 1e3:.0f}", f"{r['fwd_bwd']['stime_s']:.2f}", f"{r['fwd_bwd']['utime_s']:.2f}",
            f"{s['gflops_fwd_bwd']:.0f}" if s_ok else "-",
            f"{s['fwd_bwd']['minflt'] / 1e3:.0f}" if s_ok else "-"]


def _throughput_section(cfg: dict[str, Any], by: dict[tuple, dict], mm: dict[str, Any]) -> list[str]:
    """Achieved GFLOP/s of ours (and of SDPA) and page faults, against plain matmul."""
    peak32 = mm.get("float32_square", {}).get("gflops")
    peak16 = mm.get("bf16_square", {}).get("gflops")
    out = ["\n== achieved GFLOP/s of ours (matrix-product FLOPs, see convention) and page faults per run =="]
    headers = ["dtype", "direction", "L", "fwd GF/s", "f+b GF/s", "f+b %mm32", "f+b kminflt", "f+b sys s", "f+b user s", "sdpa f+b GF/s", "sdpa kminflt"]
    body = []
    for dtype in cfg["dtypes"]:
        for direction in cfg["directions"]:
            for n in cfg["lengths"]:
                r = by.get((dtype, direction, "ours", n))
                if r and r["status"] == "ok":
                    body.append(_throughput_row(r, by.get((dtype, direction, "sdpa", n)), peak32))
    out.append(_table(headers, body) if body else "  (no successful runs of ours)")
    if peak32:
        out.append(f"  plain matmul: {peak32:.0f} GFLOP/s float32" + (f", {peak16:.0f} GFLOP/s bf16" if peak16 else "")
                   + " (ours computes bf16 inputs in float32, so compare with the float32 number)")
    return out


def _crossover_section(crossover: dict[str, Any]) -> list[str]:
    out = ["\n== crossover: ours forward+backward faster than SDPA from =="]
    for dtype, per in crossover.items():
        for direction, c in per.items():
            val = f"L ≈ {c['length']}" if c.get("length") else "-"
            out.append(f"  {dtype:8s} {direction:14s} {val:12s} ({c['note']})")
    return out


def _warnings(rows: list[dict[str, Any]]) -> list[str]:
    """Rows of ours measured on different attention code, and configurations disturbed by other processes."""
    out = []
    sources = sorted({r.get("attention_source") for r in rows if r["method"] == "ours" and r["status"] == "ok"} - {None})
    if len(sources) > 1:
        out.append(f"\n  WARNING: rows of ours were measured with {len(sources)} different versions of protein_performer/attention "
                   f"({', '.join(sources)}; 'attention_source' in results.json): the attention code changed during the run")
    contended = [r for r in rows if r.get("load", {}).get("contended")]
    if contended:
        out.append(f"\n  warning: {len(contended)} configuration(s) ran while other processes used CPU (see 'load' in results.json): "
                   + ", ".join(f"{r['method']}/{r['direction']}/{r['dtype']}/L={r['length']}" for r in contended[:8]))
    return out


def format_report(doc: dict[str, Any]) -> str:
    rows, cfg = doc["results"], doc["config"]
    by = {row_key(r): r for r in rows}
    out = _timing_sections(rows, cfg, by)
    out += _matmul_section(doc.get("matmul", {}))
    out += _throughput_section(cfg, by, doc.get("matmul", {}))
    out += _crossover_section(doc.get("crossover", {}))
    out += _warnings(rows)
    return "\n".join(out)
