"""The docs section and figure of ``esm2_distill.py``, from its ``results.json`` (so that the numbers in
docs/results.md are the measured ones)."""

from __future__ import annotations

from pathlib import Path

from docs_section import publish


def _final(history: list[dict]) -> dict:
    return history[-1]


def _at(history: list[dict], step: int) -> dict | None:
    return next((row for row in history if row["step"] == step), None)


def _label(spec: str, seq_len: int) -> str:
    """"softmax:64:1024" → "softmax, M = 64, 1,024-token crops"."""
    kernel, features, *crop = spec.split(":")
    return f"{kernel}, M = {features}, {int(crop[0]) if crop else seq_len:,}-token crops"


def _agreement(row: dict) -> str:
    return f" (top-1 agreement {100 * row['top1_agreement']:.1f}%, KL {row['kl']:.3f})" if "top1_agreement" in row else ""


def section(result: dict, figure_name: str) -> str:
    s, title = result["settings"], result["title"]
    lines = []
    if "exact" in result:
        lines += ["**Exactness** (our exact conversion against `transformers`' `EsmModel` on the same weights; real "
                  "proteins of the embedded corpus; relative error of the final hidden states, ‖ours − HF‖/‖HF‖):", "",
                  "| protein | residues | stored fp16 frequencies (now) | recomputed frequencies (before) | cosine, recomputed | "
                  "HF s | ours s |", "|---|---|---|---|---|---|---|"]
        for row in result["exact"]:
            lines.append(f"| {row['id']} | {row['length']:,} | {row['relative_error']:.1e} | "
                         f"{row['recomputed_relative_error']:.1e} | {row['recomputed_cosine']:.4f} | {row['hf_seconds']:.1f} | "
                         f"{row['our_seconds']:.1f} |")
        lines.append("")
    zero = result["zero_shot"]
    lines += [f"**Zero-shot FAVOR+** (mean per-residue cosine to the exact model's final hidden states; "
              f"{zero[next(k for k in zero if k != 'mean_embedding')]['residues']:,} residues of "
              f"{s['eval_sequences']} test-split proteins, first {s['seq_len']}-token crops): the teacher's mean "
              f"embedding, one vector for every residue, scores {zero['mean_embedding']:.3f}; "
              + ", ".join(f"M = {k.split(':')[1]}: {v['cosine']:.3f}" + _agreement(v) for k, v in zero.items()
                          if k != "mean_embedding") + ".", ""]
    distill = result.get("distill", {})
    if distill:
        steps = _final(next(iter(distill.values())))["step"]
        lines += [f"**Distillation** (`convert --distill {steps}`: {s['batch_size']} proteins per step cropped to "
                  f"{s['seq_len']} tokens, or, with longer crops, proportionally fewer; lr {s['lr']:g} after "
                  f"{s['warmup_steps']} warmup steps, then linear decay; {s['threads']} threads; cosine on the same "
                  f"held-out {s['seq_len']}-token crops as above):", "",
                  "| kernel, M, training crops | step 0 | step 25 | step 100 | step " + f"{steps} | tokens per step | "
                  "seconds per step | minutes in all |",
                  "|---|---|---|---|---|---|---|---|"]
        head = "top1_agreement" in _final(next(iter(distill.values())))
        if head:
            lines[-2] += " top-1 agreement at the end | KL at the end (nats) |"
            lines[-1] += "---|---|"
        for spec, history in distill.items():
            cells = [f"{row['cosine']:.3f}" if row else "–" for row in (_at(history, 0), _at(history, 25), _at(history, 100))]
            last = _final(history)
            lines.append(f"| {_label(spec, s['seq_len'])} | {' | '.join(cells)} | {last['cosine']:.3f} | "
                         f"{last['tokens'] / last['step']:,.0f} | {last['seconds'] / last['step']:.2f} | {last['seconds'] / 60:.1f} |"
                         + (f" {100 * last['top1_agreement']:.1f}% (from {100 * history[0]['top1_agreement']:.1f}%) | "
                            f"{last['kl']:.3f} (from {history[0]['kl']:.3f}) |" if head else ""))
        lines.append("")
    long = result.get("long", [])
    if long:
        names = [k for k in long[0] if isinstance(long[0][k], dict)]
        lines += ["**Long proteins** (whole, uncropped; cosine to the exact model, and seconds per forward pass, one "
                  "pass each; \"own mean\": the exact embeddings' cosine to their own mean over the protein, one vector):",
                  "", "| protein | residues | exact s | own mean | " + " | ".join(f"{n}: cosine / s" for n in names) + " |",
                  "|---|---|---|---|" + "---|" * len(names)]
        for row in long:
            lines.append(f"| {row['id']} | {row['length']:,} | {row['exact_seconds']:.1f} | {row['own_mean']:.3f} | "
                         + " | ".join(f"{row[n]['cosine']:.3f} / {row[n]['seconds']:.1f}" for n in names) + " |")
        lines.append("")
    what = "distillation against steps; cost against length" if long else "distillation against steps"
    lines.append(f"![{title} as a Performer: {what}](figures/{figure_name})")
    return "\n".join(lines)


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    long = result.get("long", [])
    fig, axes = plt.subplots(1, 2 if long else 1, figsize=(11 if long else 5.5, 4), squeeze=False)
    left = axes[0, 0]
    colors = {f"distilled {spec}": f"C{i}" for i, spec in enumerate(result.get("distill", {}))}
    for spec, history in result.get("distill", {}).items():
        steps, color = [r["step"] for r in history], colors[f"distilled {spec}"]
        left.plot(steps, [r["cosine"] for r in history], marker=".", label=f"distilled {spec}: cosine", color=color)
        if "top1_agreement" in history[0]:
            left.plot(steps, [r["top1_agreement"] for r in history], marker=".", linestyle="--", color=color,
                      label=f"distilled {spec}: top-1 agreement (masked)")
    left.axhline(result["zero_shot"]["mean_embedding"], color="grey", linestyle=":", label="teacher's mean embedding")
    left.set(xlabel="distillation step", ylabel="agreement with the exact model (held out)", ylim=(0, 1),
             title=f"{result['title']} as a Performer")
    left.legend(fontsize=8)
    if long:
        right = axes[0, 1]
        lengths = [row["length"] for row in long]
        right.plot(lengths, [row["exact_seconds"] for row in long], marker="o", color="black", label="exact (SDPA)")
        for name in [k for k in long[0] if isinstance(long[0][k], dict)]:
            right.plot(lengths, [row[name]["seconds"] for row in long], marker=".", label=name,
                       color=colors.get(name, "grey"), linestyle="-" if name in colors else "--")
        right.set(xscale="log", yscale="log", xlabel="residues", ylabel="seconds per forward pass (2 CPU threads)",
                  title="cost on long proteins")
        right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_docs(result: dict, docs: Path, figure_path: Path, markers: tuple[str, str]) -> None:
    """The section between ``markers`` in ``docs``, the figure, and the results beside it."""
    publish(docs, markers, section(result, figure_path.name), result, figure_path, figure)
