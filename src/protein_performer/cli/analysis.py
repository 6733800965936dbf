"""``analyze`` and ``report``: the paper's analyses and a run's report page."""

from __future__ import annotations

import argparse
import sys
import warnings

from ..errors import UserError
from .common import add_quiet, add_threads, show_progress


def _approximation(args: argparse.Namespace) -> int:
    from ..analysis.pipeline import run_approximation

    if args.checkpoint is None and (args.fasta is not None or args.max_length is not None):
        raise UserError("--fasta and --max-length choose the proteins of --checkpoint: give --checkpoint too")
    result = run_approximation(args.out, samples=args.samples, length=args.length, dim=args.dim, feature_counts=args.features,
                               seed=args.seed, checkpoint=args.checkpoint, fasta=args.fasta, max_length=1024 if args.max_length is None else args.max_length,
                               progress=show_progress(args))
    for source in ("random", "checkpoint"):
        if source not in result:
            continue
        for error, what in (("relative", "relative error per row |Â_i - A_i| / |A_i|"), ("mse", "MSE of the attention matrix")):
            print(f"{source} q/k: median {what} (orthogonal / iid)")
            table = result[source][error]
            counts = list(next(iter(table.values()))["orthogonal"])
            print(f"{'kernel':20}" + "".join(f"{'M=' + m:>22}" for m in counts))
            for kernel, rows in table.items():
                print(f"{kernel:20}" + "".join(f"{rows['orthogonal'][m]['median']:>11.2e}{rows['iid'][m]['median']:>11.2e}"
                                               for m in counts))
    print(f"wrote {args.out}/approximation.png, approximation.json")
    return 0


def _attention_maps(args: argparse.Namespace) -> int:
    from ..analysis.attention_maps import BPT1_BOVIN
    from ..analysis.pipeline import find_sequence, run_attention_maps

    if args.fasta and not args.id:
        raise UserError("--fasta needs --id: the record whose attention to show")
    if args.id and not args.fasta:
        raise UserError("--id needs --fasta: the file to find the record in")
    if args.fasta:
        sequence, name = find_sequence(args.fasta, args.id), args.id
    else:
        sequence, name = (args.sequence, "sequence") if args.sequence is not None else (BPT1_BOVIN, "BPT1_BOVIN")
    result = run_attention_maps(args.out, args.checkpoint, sequence=sequence, name=args.name or name, start=args.start, window=args.window)
    print(f"{result['name']}: residues {result['start'] + 1}-{result['start'] + result['window']} of {result['length']}, "
          f"{len(result['heads'])} layers x {len(result['heads'][0])} heads")
    print(f"{'layer':>6}{'head':>6}{'local':>8}{'top column':>12}{'mean |i-j|':>12}")
    for layer, heads in enumerate(result["heads"], start=1):
        for head, s in enumerate(heads, start=1):
            print(f"{layer:>6}{head:>6}{s['local']:>8.3f}{s['top_column']:>12.3f}{s['mean_distance']:>12.1f}")
    print(f"wrote {args.out}/attention_maps_{result['name']}.png, .json, .npz")
    return 0


def _similarity(args: argparse.Namespace) -> int:
    from ..analysis.pipeline import run_similarity

    result = run_similarity(args.out, args.checkpoint, fasta=args.fasta, sequences=args.sequences, max_length=args.max_length,
                            label=args.label, progress=show_progress(args))
    c = result["comparison"]
    print(f"{result['label']}: Spearman correlation with BLOSUM62 {c['spearman']:.4f} (p = {c['p_value']:.3g}) over {c['pairs']} "
          f"amino-acid pairs; {result['sequences']} sequences, {result['residues']:,} residues, {result['heads']} heads")
    print(f"wrote {args.out}/similarity_{result['label']}.png, .json")
    return 0


def _report(args: argparse.Namespace) -> int:
    from ..analysis.report import AnalysisMismatchWarning, write_report

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AnalysisMismatchWarning)
        path = write_report(args.run, args.out, analysis=args.analysis, figures=args.figures, evaluate_run=not args.no_evaluate,
                            overwrite=args.overwrite, progress=show_progress(args))
    for warning in caught:
        if issubclass(warning.category, AnalysisMismatchWarning):
            print(f"protein-performer: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    print(f"wrote {path}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    analyze = sub.add_parser("analyze", help="the paper's analyses as figures and numbers (approximation, attention-maps, similarity)",
                             epilog="example:\n  protein-performer analyze attention-maps --checkpoint runs/demo --out runs/analysis")
    which = analyze.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")

    approx = which.add_parser("approximation", help="MSE of FAVOR's attention matrix against exact softmax, by M, kernel and projection",
                              epilog="example (about 1.5 minutes on 2 CPU cores; the defaults take about 11 minutes on one core):\n"
                                     "  protein-performer analyze approximation --length 1024 --out runs/analysis")
    approx.add_argument("--out", default="runs/analysis", help="output folder (approximation.png, approximation.json)")
    approx.add_argument("--checkpoint", help="also measure on the real q/k of this model's layers (default: random inputs only)")
    approx.add_argument("--fasta", help="proteins for --checkpoint (default: the test split of the embedded corpus)")
    approx.add_argument("--features", type=int, nargs="+", default=[16, 32, 64, 128, 256], help="numbers of random features M")
    approx.add_argument("--samples", type=int, default=15, help="random input samples (and test-split proteins with --checkpoint)")
    approx.add_argument("--length", type=int, default=4096, help="L of the random inputs")
    approx.add_argument("--dim", type=int, default=16, help="d of the random inputs")
    approx.add_argument("--max-length", type=int, help="crop the proteins to this many residues (with --checkpoint; default: 1024)")
    approx.add_argument("--seed", type=int, default=0, help="seed of the inputs and the random projections")
    add_threads(approx)
    add_quiet(approx)
    approx.set_defaults(func=_approximation, parser=approx)

    maps = which.add_parser("attention-maps", help="attention of every layer and head over a window of one sequence",
                            epilog="example (seconds):\n  protein-performer analyze attention-maps --checkpoint runs/demo --window 58")
    maps.add_argument("--checkpoint", required=True, help="model directory")
    source = maps.add_mutually_exclusive_group()
    source.add_argument("--sequence", help="amino-acid sequence (default: BPT1_BOVIN, the paper's example)")
    source.add_argument("--fasta", help="FASTA file holding the sequence, with --id (default: none, --sequence)")
    maps.add_argument("--id", help="record id in --fasta (default: none)")
    maps.add_argument("--start", type=int, default=0, help="first residue of the window (0-based)")
    maps.add_argument("--window", type=int, default=256, help="residues in the window")
    maps.add_argument("--name", help="name in the output files and titles (default: the id, or 'sequence')")
    maps.add_argument("--out", default="runs/analysis", help="output folder")
    add_threads(maps)
    maps.set_defaults(func=_attention_maps, parser=maps)

    sim = which.add_parser("similarity", help="amino-acid similarity from attention (Vig et al. 2020) against BLOSUM62",
                           epilog="example (about 40 s on 2 CPU cores with the demo model):\n"
                                  "  protein-performer analyze similarity --checkpoint runs/demo --sequences 200")
    sim.add_argument("--checkpoint", required=True, help="model directory")
    sim.add_argument("--fasta", help="FASTA file (default: the test split of the embedded corpus)")
    sim.add_argument("--sequences", type=int, default=800, help="the first N sequences")
    sim.add_argument("--max-length", type=int, default=1024, help="crop each to its first N residues")
    sim.add_argument("--label", help="name in the output files and titles (default: the checkpoint folder's name)")
    sim.add_argument("--out", default="runs/analysis", help="output folder")
    add_threads(sim)
    add_quiet(sim)
    sim.set_defaults(func=_similarity, parser=sim)

    report = sub.add_parser("report", help="one self-contained HTML page for a run: curves, evaluation, analysis and benchmark figures",
                            epilog="example (evaluation included: 2-3.5 minutes on 2 CPU cores for the demo model):\n"
                                   "  protein-performer report --checkpoint runs/demo --analysis runs/analysis")
    report.add_argument("--checkpoint", "--run", dest="run", metavar="DIR", required=True, help="training run directory (--run: the same)")
    report.add_argument("--out", help="HTML file; replaces only a page report wrote (default: CHECKPOINT/report.html)")
    report.add_argument("--overwrite", action="store_true", help="replace an existing --out even if report did not write it")
    report.add_argument("--analysis", help="folder of analysis outputs to include (PNG + JSON) (default: none)")
    report.add_argument("--figures", default="docs/figures", help="benchmark plots to include (skipped when missing)")
    report.add_argument("--no-evaluate", action="store_true", help="skip evaluating the model on the test split")
    add_threads(report)
    add_quiet(report)
    report.set_defaults(func=_report, parser=report)
