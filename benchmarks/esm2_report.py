"""The docs section and figure of ``esm2_distill.py``, from its ``results.json`` (so that the numbers in
docs/results.md are the measured ones)."""

from __future__ import annotations

from pathlib import Path


def _final(history: list[dict]) -> dict:
    return history[-1]


def _at(history: list[dict], step: int) -> dict | None:
    return next((row for row in history if row["step"] == step), None)


def section(result: dict) -> str:
    s = result["settings"]
    lines = ["**Exactness** (our exact conversion against `transformers`' `EsmModel` on the same weights; real proteins "
             "of the embedded corpus; relative error of the final hidden states, ‖ours − HF‖/‖HF‖):", "",
             "| protein | residues | stored fp16 frequencies (now) | recomputed frequencies (before) | cosine, recomputed | "
             "HF s | ours s |", "|---|---|---|---|---|---|---|"]
    for row in result["exact"]:
        lines.append(f"| {row['id']} | {row['length']:,} | {row['relative_error']:.1e} | {row['recomputed_relative_error']:.1e} | "
                     f"{row['recomputed_cosine']:.4f} | {row['hf_seconds']:.1f} | {row['our_seconds']:.1f} |")
    zero = result["zero_shot"]
    lines += ["", f"**Zero-shot FAVOR+** (mean per-residue cosine to the exact model's final hidden states; "
              f"{zero[next(k for k in zero if k != 'mean_embedding')]['residues']:,} residues of "
              f"{s['eval_sequences']} test-split proteins, first {s['seq_len']}-token crops): the teacher's mean "
              f"embedding, one vector for every residue, scores {zero['mean_embedding']:.3f}; "
              + ", ".join(f"M = {k.split(':')[1]}: {v['cosine']:.3f}" for k, v in zero.items() if k != "mean_embedding")
              + ".", ""]
    distill = result.get("distill", {})
    if distill:
        steps = _final(next(iter(distill.values())))["step"]
        lines += [f"**Distillation** (`convert --distill {steps}`: crops of {s['seq_len']} tokens, batches of "
                  f"{s['batch_size']}, lr {s['lr']:g} after {s['warmup_steps']} warmup steps, then linear decay; "
                  f"{s['threads']} threads; cosine on the same held-out crops):", "",
                  "| kernel, M | step 0 | step 25 | step 100 | step " + f"{steps} | seconds per step | minutes in all |",
                  "|---|---|---|---|---|---|---|"]
        for spec, history in distill.items():
            cells = [f"{row['cosine']:.3f}" if row else "–" for row in (_at(history, 0), _at(history, 25), _at(history, 100))]
            last = _final(history)
            lines.append(f"| {spec.replace(':', ', ')} | {' | '.join(cells)} | {last['cosine']:.3f} | "
                         f"{last['seconds'] / last['step']:.2f} | {last['seconds'] / 60:.1f} |")
        lines.append("")
    long = result.get("long", [])
    if long:
        names = [k for k in long[0] if isinstance(long[0][k], dict)]
        lines += ["**Long proteins** (whole, uncropped; cosine to the exact model, and seconds per forward pass, one "
                  "pass each):", "",
                  "| protein | residues | exact s | " + " | ".join(f"{n}: cosine / s" for n in names) + " |",
                  "|---|---|---|" + "---|" * len(names)]
        for row in long:
            lines.append(f"| {row['id']} | {row['length']:,} | {row['exact_seconds']:.1f} | "
                         + " | ".join(f"{row[n]['cosine']:.3f} / {row[n]['seconds']:.1f}" for n in names) + " |")
        lines.append("")
    lines.append("![ESM-2 t6 as a Performer: distillation against steps; cost against length](figures/esm2_distill_cpu.png)")
    return "\n".join(lines)


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for spec, history in result.get("distill", {}).items():
        left.plot([r["step"] for r in history], [r["cosine"] for r in history], marker=".", label=f"distilled {spec}")
    left.axhline(result["zero_shot"]["mean_embedding"], color="grey", linestyle=":", label="teacher's mean embedding")
    left.set(xlabel="distillation step", ylabel="cosine to the exact model (held out)", ylim=(0, 1),
             title="ESM-2 t6 8M as a Performer")
    left.legend(fontsize=8)
    long = result.get("long", [])
    if long:
        lengths = [row["length"] for row in long]
        right.plot(lengths, [row["exact_seconds"] for row in long], marker="o", label="exact (SDPA)")
        for name in [k for k in long[0] if isinstance(long[0][k], dict)]:
            right.plot(lengths, [row[name]["seconds"] for row in long], marker=".", label=name)
        right.set(xscale="log", yscale="log", xlabel="residues", ylabel="seconds per forward pass (2 CPU threads)",
                  title="cost on long proteins")
        right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_docs(result: dict, docs: Path, figure_path: Path, markers: tuple[str, str]) -> None:
    begin, end = markers
    text = docs.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{docs} has no {begin} ... {end} section to rewrite")
    head, rest = text.split(begin, 1)
    docs.write_text(f"{head}{begin}\n{section(result)}\n{end}{rest.split(end, 1)[1]}")
    figure(result, figure_path)
