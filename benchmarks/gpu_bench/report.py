"""The GPU benchmark's outputs beside ``results.json``: ``table.md`` (attention time and memory per
direction with ratios to SDPA, errors against float64, training throughput) and ``gpu.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .options import CAUSAL_ONLY, DIRECTIONS, METHODS

SHORT_NOTES = {"oom": "oom", "fla not installed": "n/a"}
COLORS = {"sdpa": "tab:blue", "ours": "tab:red", "ours-compiled": "tab:orange", "ours-fla": "tab:purple", "ours-bf16": "tab:green"}


def _md(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _num(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.{digits}g}"


def _cell(item: dict | None, field: str) -> str:
    if item is None:
        return "-"
    if item["note"] is not None:
        note = item["note"]
        return SHORT_NOTES.get(note, "skip" if note.startswith("skipped") else ("n/a" if note.startswith("fla") else "fail"))
    return _num(item.get(field))


def _ratio(a: dict | None, b: dict | None, field: str) -> str:
    if a and b and a["note"] is None and b["note"] is None and a.get(field) and b.get(field):
        return f"{a[field] / b[field]:.2f}"
    return "-"


def _notes(items: list[dict]) -> list[str]:
    """The distinct reasons items were not measured, each with where it happened first."""
    seen: dict[tuple, str] = {}
    for it in items:
        if it["note"] is not None:
            what = it.get("method") or f"{it.get('preset')} {it.get('attention')}"
            seen.setdefault((what, it["note"]), f"L={it.get('length')}")
    return [f"- {what}: {note} (from {where})" for (what, note), where in seen.items()]


def attention_tables(doc: dict[str, Any]) -> list[str]:
    cfg, items = doc["config"], doc["attention"]
    by = {(i["method"], i["direction"], i["length"]): i for i in items}
    out = []
    for direction in DIRECTIONS:
        methods = [m for m in METHODS if direction == "causal" or m not in CAUSAL_ONLY]
        ours = [m for m in methods if m != "sdpa"]
        headers = ["L"] + [f"{m} {unit}" for m in methods for unit in ("ms", "MiB")]
        headers += [f"{m}/sdpa time" for m in ours] + ["ours/sdpa MiB"]
        rows = []
        for n in cfg["lengths"]:
            get = {m: by.get((m, direction, n)) for m in methods}
            row = [str(n)] + [_cell(get[m], f) for m in methods for f in ("ms", "mib")]
            row += [_ratio(get[m], get["sdpa"], "ms") for m in ours] + [_ratio(get["ours"], get["sdpa"], "mib")]
            rows.append(row)
        out += [f"\n## Attention forward+backward, {direction}\n",
                f"B={cfg['batch']}, H={cfg['heads']}, d={cfg['head_dim']}, M={cfg['features']}, {cfg['dtype']} inputs; "
                f"median of up to {cfg['reps']} runs after {cfg['warmup']} warmup; MiB = peak above the inputs (gradients of q, k, v included).\n",
                _md(headers, rows)]
        compiles = [f"L={i['length']} {i['compile_s']:.1f} s" for i in items
                    if i["method"] == "ours-compiled" and i["direction"] == direction and i["note"] is None]
        if compiles:
            out.append(f"\nours-compiled compile time (forward and backward, first run less a timed one): {', '.join(compiles)}")
        notes = _notes([i for i in items if i["direction"] == direction])
        if notes:
            out += ["", *notes]
    return out


def error_table(doc: dict[str, Any]) -> list[str]:
    items = doc["error"]
    rows = [[i["method"], i["direction"], str(i["length"]),
             f"{i['rel_err_fp64']:.2e}" if i["note"] is None else i["note"],
             f"{i['rel_err_exact']:.2e}" if i["note"] is None else "-"] for i in items]
    length = doc["config"]["error_length"]
    return [f"\n## Output error at L={length}\n",
            "Relative Frobenius error ‖out − ref‖/‖ref‖ on the same rounded inputs: 'own' against the method's "
            "computation in float64 (FAVOR with the same projection for ours, exact softmax for sdpa), 'exact' against "
            "exact softmax attention in float64 (for ours the random-feature approximation included). "
            "q, k = randn·d^(-1/4), v = randn.\n",
            _md(["method", "direction", "L", "rel. error (own, float64)", "rel. error (exact softmax)"], rows)]


def train_table(doc: dict[str, Any], section: str = "train", title: str = "Training throughput") -> list[str]:
    items = doc.get(section, [])
    if not items and section != "train":
        return []
    rows = []
    for i in items:
        if i["note"] is None:
            rows.append([i["preset"], i["attention"], str(i["length"]), str(i["batch"]), f"{i['tokens_per_s']:.0f}",
                         f"{i['step_ms']:.1f}", _num(i.get("peak_mib"))])
        else:
            rows.append([i["preset"], i["attention"], str(i["length"]), "-", i["note"][:60], "-", "-"])
    cfg = doc["config"]
    return [f"\n## {title} (masked LM, {cfg['train_steps']} AdamW steps after {cfg['train_warmup']} warmup, "
            f"{'bf16 autocast' if cfg['dtype'] == 'bf16' else 'float32'})\n",
            _md(["preset", "attention", "L", "batch", "tokens/s", "ms/step", "peak MiB"], rows)]


def write_table(doc: dict[str, Any], path: Path) -> Path:
    meta = doc["meta"]
    head = [f"# GPU benchmark: {meta['device_name']}\n",
            f"torch {meta['torch']}, fla {meta.get('fla') or 'not installed'}, TF32 matmul {meta.get('tf32')}, "
            f"{'--smoke (tiny sizes: checks the script, measures nothing)' if doc['config']['smoke'] else 'full run'}, "
            f"{doc.get('elapsed_s', 0):.0f} s."]
    path.write_text("\n".join(head + attention_tables(doc) + error_table(doc) + train_table(doc)
                             + train_table(doc, "rivals", "Every attention kind: training throughput and memory against L")) + "\n")
    return path


def plot(doc: dict[str, Any], path: Path) -> Path:
    """Time (top) and peak memory (bottom) against L, log-log, one column per direction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), squeeze=False)
    for col, direction in enumerate(DIRECTIONS):
        for row, (field, ylabel) in enumerate((("ms", "forward+backward ms (median)"), ("mib", "peak MiB above inputs"))):
            ax = axes[row][col]
            for method in METHODS:
                pts = sorted((i["length"], i[field]) for i in doc["attention"]
                             if i["method"] == method and i["direction"] == direction and i["note"] is None and i.get(field))
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, color=COLORS[method], label=method)
            if not ax.lines:
                ax.text(0.5, 0.5, "no numbers" + (" (memory is not measured on the CPU)" if field == "mib" else ""),
                        transform=ax.transAxes, ha="center", va="center")
            else:
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.legend(fontsize=8)
            ax.set_xlabel("sequence length L")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{direction}")
            ax.grid(True, which="both", alpha=0.3)
    cfg = doc["config"]
    fig.suptitle(f"attention, {cfg['dtype']} inputs, B={cfg['batch']} H={cfg['heads']} d={cfg['head_dim']} M={cfg['features']}, "
                 f"{doc['meta']['device_name']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
