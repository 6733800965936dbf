"""``protein-performer report``: one self-contained HTML page for a training run.

The page holds the run's training curves (redrawn from ``metrics.jsonl``), its model and training
settings, an evaluation table (test split, beside the empirical baseline), the analysis figures and
numbers of an ``analyze`` output folder and the benchmark plots. Every image is embedded as base64:
the file can be mailed or opened offline; it references nothing outside itself.

Each analysis records the weights it was made from (their fingerprint, and the training step when
known); an analysis of other weights than the run's is marked in the page and reported as an
:class:`AnalysisMismatchWarning`, not refused: a folder may compare several models on purpose. The
page names its generator in a ``<meta>`` tag, so that a re-run replaces its own page but never a file
of the user's (unless ``overwrite``).
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from ..rundir import CONFIG, CURVES, TRAIN_CONFIG, RunDir, atomic_write, output_file, read_json_object
from ..training.plots import plot_training_curves

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; } th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
.mismatch { background: #fff3cd; border: 1px solid #e0c060; padding: .4em .8em; }
"""
GENERATOR = '<meta name="generator" content="protein-performer">'


class AnalysisMismatchWarning(UserWarning):
    """An analysis in the report was made from other weights than the run's (or does not say which)."""


def is_report(path: Path) -> bool:
    """Whether ``path`` is a page this module wrote (its head holds :data:`GENERATOR`)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return GENERATOR.encode() in head


def _step(weights: dict) -> str:
    return f"step {weights['step']}, " if weights.get("step") is not None else ""


def _provenance(path: Path, result: dict, weights: dict) -> str:
    """A note for the page when ``result`` (an analysis JSON) was not made from ``weights`` (the run's
    ``{"fingerprint", "step"}``); also raised as an :class:`AnalysisMismatchWarning`."""
    made = result.get("weights")
    if isinstance(made, dict) and made.get("fingerprint") == weights["fingerprint"]:
        return ""
    if not isinstance(made, dict):
        message = f"{path.name} does not record the weights it was made from: it may not be of this run's model"
    else:
        message = (f"{path.name} was made from other weights ({made.get('checkpoint', '?')}, {_step(made)}fingerprint "
                   f"{made.get('fingerprint')}) than this run's ({_step(weights)}fingerprint {weights['fingerprint']})")
    warnings.warn(message, AnalysisMismatchWarning, stacklevel=2)
    return f'<p class="mismatch">Note: {html.escape(message)}.</p>'


def _image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _checked(build: Callable[[Path], str], path: Path, what: str) -> str:
    """``build(path)``, with a file that parses but lacks what the page needs reported as its own."""
    try:
        return build(path)
    except (KeyError, TypeError, AttributeError, IndexError, StopIteration) as err:
        raise ValueError(f"{path} is not {what} ({type(err).__name__}: {err})") from None


def _settings(run: Path) -> str:
    parts = []
    for name, title in ((CONFIG, "model"), (TRAIN_CONFIG, "training")):
        path = run / name
        if path.exists():
            values = read_json_object(path)
            parts.append(f"<h3>{title}</h3>" + _table(["setting", "value"], [[k, v] for k, v in values.items()]))
    return "".join(parts)


def _evaluation(r: dict) -> str:
    target = "masked positions" if r["objective"] == "mlm" else "next tokens"
    rows = [["model", f"{100 * r['accuracy']:.2f}%", f"{r['perplexity']:.3f}"],
            ["empirical baseline", f"{100 * r['baseline_accuracy']:.2f}%", f"{r['baseline_perplexity']:.3f}"]]
    return (f"<p>Test split of the embedded corpus: {r['sequences']:,} sequences, {r['tokens']:,} {target}.</p>"
            + _table(["", "accuracy", "perplexity"], rows))


def _approximation_section(path: Path, weights: dict) -> str:
    folder, result = path.parent, read_json_object(path)
    parts = [_provenance(path, result["checkpoint"], weights)] if "checkpoint" in result else []
    for source, figure in (("random", "approximation.png"), ("checkpoint", "approximation_checkpoint.png")):
        if source not in result:
            continue
        r = result[source]
        caption = (f"Random inputs: L = {r['length']}, d = {r['dim']}, {r['samples']} samples" if source == "random"
                   else f"Real q/k of {r['path']}: {r['samples']} (sequence, layer, head) samples, d = {r['dim']}")
        parts.append(f"<h3>{html.escape(caption)}</h3>")
        for error, what in (("relative", "Median relative error per row, ‖Â_i − A_i‖ / ‖A_i‖"),
                            ("mse", "Median MSE of the attention matrix")):
            table = r[error]
            counts = list(next(iter(table.values()))["orthogonal"])
            rows = [[f"{kernel} ({projection})", *(f"{table[kernel][projection][m]['median']:.2e}" for m in counts)]
                    for kernel in table for projection in ("orthogonal", "iid")]
            parts.append(f"<p>{what}, against exact softmax.</p>" + _table(["kernel", *(f"M = {m}" for m in counts)], rows))
        if (folder / figure).exists():
            parts.append(_image(folder / figure, caption))
    if not any(parts):
        raise ValueError(f"{path} holds no results (neither 'random' nor 'checkpoint')")
    return "".join(parts)


def _similarity_section(path: Path, weights: dict) -> str:
    r = read_json_object(path)
    c = r["comparison"]
    note = _provenance(path, r, weights)
    text = note + (f"<p><b>{html.escape(r['label'])}</b> ({html.escape(r['attention'])} attention): Spearman correlation with BLOSUM62 "
            f"{c['spearman']:.4f} (p = {c['p_value']:.3g}) over {c['pairs']} amino-acid pairs; {r['sequences']:,} sequences, "
            f"{r['residues']:,} residues, {r['heads']} heads.</p>")
    figure = path.with_suffix(".png")
    return text + (_image(figure, f"Attention similarity of {r['label']} beside BLOSUM62") if figure.exists() else "")


def _attention_section(path: Path, weights: dict) -> str:
    r = read_json_object(path)
    note = _provenance(path, r, weights)
    rows = [[f"layer {i}, head {j}", f"{s['local']:.3f}", f"{s['top_column']:.3f}", f"{s['mean_distance']:.1f}"]
            for i, heads in enumerate(r["heads"], start=1) for j, s in enumerate(heads, start=1)]
    figure = path.with_suffix(".png")
    caption = f"{r['name']}: residues {r['start'] + 1}-{r['start'] + r['window']} of {r['length']}"
    return note + ((_image(figure, caption) if figure.exists() else f"<p>{html.escape(caption)}</p>")
            + _table(["head", "mass within |i-j| <= 2", "top column mean", "mean |i-j|"], rows))


def _analysis(folder: Path, weights: dict) -> str:
    if not folder.is_dir():
        raise FileNotFoundError(f"no analysis folder {folder}: write the analyses there first (protein-performer analyze)")
    parts = []
    what = "an output of `protein-performer analyze`"
    if (folder / "approximation.json").exists():
        parts.append("<h2>Approximation error of FAVOR</h2>" + _checked(lambda p: _approximation_section(p, weights), folder / "approximation.json", what))
    for path in sorted(folder.glob("attention_maps_*.json")):
        name = html.escape(path.stem.removeprefix("attention_maps_"))
        parts.append(f"<h2>Attention maps: {name}</h2>" + _checked(lambda p: _attention_section(p, weights), path, what))
    similarity = sorted(folder.glob("similarity_*.json"))
    if similarity:
        parts.append("<h2>Amino-acid similarity from attention against BLOSUM62</h2>"
                     + "".join(_checked(lambda p: _similarity_section(p, weights), p, what) for p in similarity))
    if not parts:
        raise FileNotFoundError(f"{folder} holds no analysis output (approximation.json, attention_maps_*.json, similarity_*.json)")
    return "".join(parts)


def write_report(run: str | os.PathLike, out: str | os.PathLike | None = None, *, analysis: str | os.PathLike | None = None,
                 figures: str | os.PathLike | None = None, evaluate_run: bool = True, evaluation: dict | None = None,
                 name: str | None = None, overwrite: bool = False, progress: bool = False) -> Path:
    """Write the page (default ``RUN/report.html``) and return its path. The evaluation table is
    ``evaluation`` (a result of :func:`~protein_performer.training.evaluation.evaluate`) when given,
    else computed on the test split unless ``evaluate_run`` is False (``progress``: its bar on
    stderr). ``name``: the run's name in the page (default: its folder's name). An existing ``out``
    is replaced only when it is a page of this module's, or with ``overwrite``."""
    run = Path(run)
    if not RunDir(run).config.exists():
        raise FileNotFoundError(f"{run} is not a training run directory (no config.json)")
    # a path that cannot be written, or a file of the user's, fails before any work
    out = output_file(out if out else run / "report.html", overwrite=overwrite, ours=is_report)
    name = name or run.resolve().name
    sections = [f"<h1>protein-performer run {html.escape(name)}</h1>"]
    history = RunDir(run).read_metrics()
    if history:
        sections.append("<h2>Training</h2>" + _checked(lambda path: _training(history, name), RunDir(run).metrics,
                                                         "a metrics log of `protein-performer train`"))
    if evaluation is None and evaluate_run:
        from ..training.evaluation import evaluate

        evaluation = evaluate(run, progress=progress)
    if evaluation is not None:
        sections.append("<h2>Evaluation</h2>" + _evaluation(evaluation))
    sections.append("<h2>Settings</h2>" + _settings(run))
    if analysis is not None:
        from .pipeline import weights_record

        sections.append(_analysis(Path(analysis), weights_record(run)))
    bench = sorted(p for p in Path(figures).glob("*.png") if not p.name.startswith("analysis_")) if figures and Path(figures).is_dir() else []
    if bench:
        sections.append("<h2>Benchmarks</h2>" + "".join(_image(p, p.stem.replace("_", " ")) for p in bench))
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{GENERATOR}<title>{html.escape(name)} report</title>'
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n")
    atomic_write(out, page)
    return out


def _training(history: list[dict], name: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        curves = Path(tmp) / name.replace("/", "_") / CURVES  # the plot's title is its folder's name
        curves.parent.mkdir()
        plot_training_curves(history, curves)
        return _image(curves, f"Loss and accuracy against optimizer step (last step {history[-1]['step']})")
