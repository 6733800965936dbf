"""``embed``, ``fill-mask``, ``score`` and ``probe``: using a trained model."""

from __future__ import annotations

import argparse
import json
import sys

from ..data import DATA_DIR
from ..inference.model import DEFAULT_TOKENS_PER_BATCH, PRECISIONS, SCORING_METHODS
from ..inference.probe import CONTACT_FEATURES
from .common import add_device, add_model_options, add_threads, show_progress

PDB_SLICE = DATA_DIR / "pdb_ss_dev_slice.jsonl.gz"


def run_embed(args: argparse.Namespace) -> int:
    from ..inference import load, write_embeddings

    plm = load(args.checkpoint, args.device)
    stats = write_embeddings(plm, args.fasta, args.out, layers=args.layers, per_residue=args.per_residue, overwrite=args.overwrite,
                             tokens_per_batch=args.tokens_per_batch, precision=args.precision, progress=show_progress(args))
    print(f"embedded {stats.written} sequences ({stats.residues:,} residues) in {stats.seconds:.1f} s, "
          f"skipped {stats.skipped} already in {args.out}")
    return 0


def run_fill_mask(args: argparse.Namespace) -> int:
    from ..inference import load

    predictions = load(args.checkpoint, args.device).fill_mask(args.sequence, args.top_k)
    if args.json:
        print(json.dumps([p.as_dict() for p in predictions]))
    else:
        for p in predictions:
            print(f"position {p.position}: " + "  ".join(f"{r} {q:.4f}" for r, q in zip(p.residues, p.probabilities)))
    return 0


def _wild_type(args: argparse.Namespace) -> str:
    """``--sequence``, or the one record of ``--fasta``."""
    if args.sequence is not None:
        return args.sequence
    from ..data import read_fasta

    records = list(read_fasta(args.fasta))
    if len(records) != 1:
        raise ValueError(f"{args.fasta} holds {len(records)} records: --fasta takes the one wild-type sequence")
    return records[0].sequence


def run_score(args: argparse.Namespace) -> int:
    from ..inference import load, score_variants
    from ..rundir import atomic_write, output_file

    if not (args.mutations or args.mutations_csv or args.pseudo_perplexity):
        raise ValueError("nothing to score: give --mutations A23G,L45P, --mutations-csv FILE or --pseudo-perplexity")
    if args.label_column and not args.mutations_csv:
        raise ValueError("--label-column names a column of --mutations-csv: give the CSV")
    out = output_file(args.out, overwrite=args.overwrite, inputs=(args.mutations_csv, args.checkpoint)) if args.out else None
    sequence = _wild_type(args)
    plm = load(args.checkpoint, args.device)
    variants = None
    if args.mutations or args.mutations_csv:
        variants = score_variants(plm, sequence, mutations=args.mutations, mutations_csv=args.mutations_csv, method=args.method,
                                  progress=show_progress(args), tokens_per_batch=args.tokens_per_batch)
    else:
        plm.tokenize(sequence)
    correlation = variants.spearman(args.label_column, args.mutations_csv) if args.label_column else None
    pppl = (plm.pseudo_perplexity(sequence, tokens_per_batch=args.tokens_per_batch, progress=show_progress(args))
            if args.pseudo_perplexity else None)
    csv_on_stdout = variants is not None and out is None and not args.json
    if variants is not None:
        if out is not None:
            atomic_write(out, lambda tmp: _write_csv(variants, tmp))
        elif csv_on_stdout:
            variants.write_csv(sys.stdout)
    if args.json:
        print(json.dumps({"method": args.method, "variants": len(variants.rows) if variants else 0,
                          **(correlation or {}), **({"pseudo_perplexity": pppl} if pppl is not None else {})}))
        return 0
    # beside a CSV on stdout, the summaries go to stderr so that the CSV stays clean
    summary = sys.stderr if csv_on_stdout else sys.stdout
    if correlation is not None:
        print(f"Spearman rho against {correlation['label_column']}: {correlation['spearman']:.4f} "
              f"(n = {correlation['n']}, {args.method})", file=summary)
    if pppl is not None:
        print(f"pseudo-perplexity: {pppl:.4f}", file=summary)
    return 0


def _write_csv(variants, path) -> None:
    with open(path, "w", newline="") as handle:
        variants.write_csv(handle)


def run_probe(args: argparse.Namespace) -> int:
    from ..inference import load, read_chains, run_probes

    plm = load(args.checkpoint, args.device)
    result = run_probes(plm, read_chains(args.data), layer=args.layer, contact_features=args.contact_features,
                        max_length=args.max_length, tokens_per_batch=args.tokens_per_batch, progress=show_progress(args))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['chains_train']} train / {result['chains_test']} test chains "
          f"({result['residues_train']:,} / {result['residues_test']:,} residues), layer {result['layer']}")
    label = f"contacts, top-L/5 |i-j|>=24 ({result['contact_features']})"
    print(f"{'':46}{'model':>8}{'majority':>10}{'residue':>10}{'±7 window':>11}")
    for n in ("3", "8"):
        print(f"{'secondary structure Q' + n:46}{result['q' + n]:>8.4f}{result['q' + n + '_baseline']:>10.4f}"
              f"{result['q' + n + '_identity']:>10.4f}{result['q' + n + '_window']:>11.4f}")
    print(f"{'':46}{'model':>8}{'random':>10}{'closest':>10}")
    print(f"{label:46}{result['contact_precision']:>8.4f}{result['contact_baseline']:>10.4f}{result['contact_separation']:>10.4f}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    emb = sub.add_parser("embed", help="embeddings of a FASTA file into HDF5, one group per sequence id",
                         epilog="example (seconds with the demo model; layout of the file: README, section \"Use a trained model\"):\n"
                                "  protein-performer embed --checkpoint runs/demo --fasta examples/proteins.fasta --out runs/emb.h5 "
                                "--layers 0 -1")
    emb.set_defaults(func=run_embed, parser=emb)
    emb.add_argument("--checkpoint", required=True, help="model directory (config.json + model.safetensors)")
    emb.add_argument("--fasta", required=True, help="FASTA file (plain or .gz)")
    emb.add_argument("--out", required=True, help="HDF5 file; ids already complete in it are skipped")
    emb.add_argument("--overwrite", action="store_true", help="replace an existing --out that embed did not write")
    emb.add_argument("--per-residue", action="store_true", help="also store the [L, E] per-residue embeddings")
    emb.add_argument("--layers", type=int, nargs="+", default=[-1],
                     help="layer indices, 0: token embedding, -1: final; several give mean_layerN / per_residue_layerN datasets")
    emb.add_argument("--tokens-per-batch", type=int, default=DEFAULT_TOKENS_PER_BATCH,
                     help="token budget of a batch (a longer sequence runs alone)")
    emb.add_argument("--precision", choices=PRECISIONS, default="fp32", help="fp32, or bf16 autocast (fast only with native bf16)")
    add_model_options(emb)

    fill = sub.add_parser("fill-mask", help="most likely residues at each <mask> of a sequence",
                          epilog='example:\n  protein-performer fill-mask --checkpoint runs/demo --sequence "MKT<mask>YIAKQR" --top-k 5')
    fill.set_defaults(func=run_fill_mask, parser=fill)
    fill.add_argument("--checkpoint", required=True, help="model directory")
    fill.add_argument("--sequence", required=True, help='sequence with <mask> tokens, e.g. "MKT<mask>LL"')
    fill.add_argument("--top-k", type=int, default=5, help="residues shown per <mask>")
    fill.add_argument("--json", action="store_true", help="print one JSON list")
    add_device(fill)
    add_threads(fill)

    add_score_parser(sub)

    probe = sub.add_parser("probe", help="secondary-structure and contact probes of frozen embeddings, beside baselines",
                           epilog="example (25 s to 2.5 minutes on 2 CPU cores with the tiny demo model):\n"
                                  "  protein-performer probe --checkpoint runs/demo")
    probe.set_defaults(func=run_probe, parser=probe)
    probe.add_argument("--checkpoint", required=True, help="model directory")
    probe.add_argument("--data", default=str(PDB_SLICE),
                       help="JSON lines of PDB chains (id, sequence, dssp8, ca_centi_angstrom); default: the embedded 60-chain slice")
    probe.add_argument("--layer", type=int, default=-1, help="layer of the secondary-structure probe (default: -1, the final)")
    probe.add_argument("--contact-features", choices=CONTACT_FEATURES, default="attention",
                       help="contact probe's features per residue pair: attention maps, or products of embeddings")
    probe.add_argument("--max-length", type=int, default=1024, help="crop chains to this length for the contact probe")
    probe.add_argument("--tokens-per-batch", type=int, default=DEFAULT_TOKENS_PER_BATCH, help="token budget of an embedding batch")
    probe.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_options(probe)


def add_score_parser(sub: argparse._SubParsersAction) -> None:
    score = sub.add_parser("score", help="variant scores log p(mutant) - log p(wild type), Spearman against experiments; "
                                         "pseudo-perplexity",
                           epilog="examples:\n  protein-performer score --checkpoint runs/demo --sequence MKTAYIAKQR --mutations K2A,K2A:Q9P\n"
                                  "  protein-performer score --checkpoint runs/demo --fasta UBIQ_YEAST.fasta "
                                  "--mutations-csv UBIQ_YEAST.csv --label-column score --out ubiq.csv")
    score.set_defaults(func=run_score, parser=score)
    score.add_argument("--checkpoint", required=True, help="model directory")
    wild = score.add_mutually_exclusive_group(required=True)
    wild.add_argument("--sequence", help="wild-type sequence (default: none: give it or --fasta)")
    wild.add_argument("--fasta", help="FASTA file holding the one wild-type sequence (default: none: give it or --sequence)")
    which = score.add_mutually_exclusive_group()
    which.add_argument("--mutations", help="comma-separated, 1-based, e.g. A23G,L45P,A23G:L45P (':' joins a multi-mutant) (default: none)")
    which.add_argument("--mutations-csv", help="CSV file with a 'mutant' column (ProteinGym / fair-esm convention); its other "
                                               "columns are kept, the model's written beside them as 'score' (or "
                                               "'model_score' when 'score' is taken) (default: none)")
    score.add_argument("--method", choices=SCORING_METHODS, default="masked-marginal",
                       help="ESM-1v's scores: masked-marginal (a forward pass per mutated site), wt-marginal (one pass), "
                            "pseudo-likelihood (L passes per variant); multi-mutants add their sites (default: %(default)s)")
    score.add_argument("--label-column", help="a column of --mutations-csv with measured values: print Spearman's rho "
                                              "against it (default: none)")
    score.add_argument("--json", action="store_true", help="print one JSON object (method, variants, spearman, n) instead "
                                                           "of the CSV (write that with --out)")
    score.add_argument("--pseudo-perplexity", action="store_true", help="also print the sequence's pseudo-perplexity")
    score.add_argument("--out", help="write the scores CSV here, never over an existing file (default: stdout)")
    score.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    score.add_argument("--tokens-per-batch", type=int, default=DEFAULT_TOKENS_PER_BATCH,
                       help="token budget of a batch of masked copies of the sequence")
    add_model_options(score)
