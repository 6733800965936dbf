"""The ``protein-performer`` command line: parses arguments and calls into the library, nothing more.

Errors a user can fix (bad files, bad arguments) are raised as :class:`UserError` anywhere below and
printed here as one line, with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from .errors import UserError


def _bench(args: argparse.Namespace) -> int:
    if args.what == "attention":
        from .bench.attention import main as bench_attention

        return bench_attention(args.rest)
    raise UserError(f"unknown benchmark {args.what!r}")


def _train(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .data import EncodedCorpus, FastaError
    from .model import PerformerConfig, preset
    from .training import TrainConfig, Trainer
    from .training.checkpoint import TRAIN_CONFIG, latest_checkpoint
    from .training.distributed import from_env

    out = Path(args.out)
    existing = latest_checkpoint(out)
    if existing is not None and not args.resume:
        raise UserError(f"{out} already holds a run (last checkpoint {existing.name}); pass --resume to continue it or choose another --out")
    if existing is not None and args.init_from:
        raise UserError(f"--init-from starts a new run, but {out} holds one to --resume: choose another --out")
    if existing is None and os.environ.get("RANK", "0") == "0":  # rank 0 only: the others may see its first files
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file: give a directory for the run")
        if out.is_dir() and any(out.iterdir()) and not (args.resume and (out / TRAIN_CONFIG).is_file()):
            raise UserError(f"--out {out} holds files but no run to resume: give a new or empty directory")
    try:
        if args.resume and existing is not None:
            # The run's own settings win; only --max-steps may be raised to train further.
            model_config = PerformerConfig.load(existing / "config.json")
            tc = TrainConfig(**json.loads((existing / TRAIN_CONFIG).read_text()))
            if args.max_steps is not None:
                tc.max_steps = args.max_steps
        else:
            overrides = {k: v for k, v in {
                "attention": args.attention, "kernel": args.kernel, "objective": args.objective, "dropout": args.dropout,
                "num_features": args.num_features, "redraw_interval": args.redraw_interval, "positions": args.positions,
            }.items() if v is not None}
            if args.init_from:
                model_config = _init_config(args, overrides)
            elif args.config:
                model_config = PerformerConfig.load(args.config).replace(**overrides)
            else:
                model_config = preset(args.preset or "tiny", **overrides)
            train_overrides = {k: v for k, v in {
                "data": args.data, "seq_len": args.seq_len, "batch_size": args.batch_size, "micro_batch_size": args.micro_batch_size,
                "max_steps": args.max_steps, "lr": args.lr, "warmup_steps": args.warmup_steps, "save_every": args.save_every,
                "eval_every": args.eval_every, "eval_sequences": args.eval_sequences, "seed": args.seed, "precision": args.precision,
            }.items() if v is not None}
            tc = TrainConfig(**train_overrides, concat=args.concat)
            if model_config.positions == "learned" and tc.seq_len > model_config.max_len:
                if args.init_from:
                    raise UserError(f"--seq-len {tc.seq_len} is longer than the learned positions of {args.init_from} "
                                    f"({model_config.max_len} tokens): pass --seq-len {model_config.max_len} or less")
                model_config = model_config.replace(max_len=tc.seq_len)
        tc.micro_batch_size = min(tc.micro_batch_size, tc.batch_size)
        corpus = EncodedCorpus.from_fasta(tc.data, skip_invalid=args.skip_invalid)
        if len(corpus) == 0:
            raise UserError(f"{tc.data} holds no sequences: nothing to train on")
        if corpus.skipped_records:
            print(f"skipped {corpus.skipped_records:,} malformed records of {tc.data} (--skip-invalid)", file=sys.stderr)
        dist = from_env()
        trainer = Trainer(out, model_config, tc, corpus=corpus, init_weights=Path(args.init_from) if args.init_from else None,
                          resume=args.resume, dist=dist, fsdp=args.fsdp)
    except (FastaError, OSError, ValueError) as err:  # OSError: a missing file, an unreadable gzip
        raise UserError(str(err)) from None
    try:
        if trainer.resumed and trainer.step >= tc.max_steps:
            if dist.is_main:
                print(f"{out} is already at step {trainer.step} of --max-steps {tc.max_steps}: nothing to train "
                      f"(raise --max-steps to continue)", file=sys.stderr)
            return 0
        if dist.is_main:
            if trainer.resumed:
                print(f"resuming {out} at step {trainer.step}", file=sys.stderr)
            ranks = f" on {dist.world_size} processes" if dist.enabled else ""
            print(f"training {model_config.attention}/{model_config.kernel} {model_config.objective} model, "
                  f"{trainer.model.num_parameters():,} parameters, {len(trainer.train_data):,} training samples{ranks} -> {out}",
                  file=sys.stderr)
        final = trainer.fit(progress=not args.quiet)
        if final and dist.is_main:
            print(f"validation: accuracy {final['accuracy']:.4f}, perplexity {final['perplexity']:.3f}")
    finally:
        dist.close()
    return 0


# Options that would change the architecture of a model that --init-from brings along.
_ARCHITECTURE_OPTIONS = ("preset", "config", "attention", "kernel", "objective", "positions", "num_features")


def _init_config(args: argparse.Namespace, overrides: dict):
    """The model config of ``train --init-from DIR``: DIR's own, with only training-time overrides."""
    from pathlib import Path

    from .model import PerformerConfig

    given = [name for name in _ARCHITECTURE_OPTIONS if getattr(args, name) is not None]
    if given:
        option = "--" + given[0].replace("_", "-")
        raise UserError(f"{option} would change the model that --init-from {args.init_from} brings; to change its attention, "
                        f"convert it first: protein-performer convert --from {args.init_from} --out NEW_DIR --attention ...")
    path = Path(args.init_from) / "config.json"
    if not path.is_file():
        raise UserError(f"{path} not found: --init-from takes a model directory (config.json + model.safetensors)")
    try:
        return PerformerConfig.load(path).replace(**overrides)
    except ValueError as err:  # names the file
        raise UserError(str(err)) from None


def _convert(args: argparse.Namespace) -> int:
    from .convert import convert_model

    try:
        report = convert_model(args.source, args.out, attention=args.attention, kernel=args.kernel,
                               num_features=args.num_features, seed=args.seed, vocab=args.vocab)
    except (FileNotFoundError, ValueError, OSError) as err:  # ConversionError is a ValueError
        raise UserError(str(err)) from None
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    config = report.config
    attention = f"FAVOR ({config['kernel']}, M = {config['num_features']})" if config["attention"] == "favor" else "exact softmax"
    print(f"converted {report.source_format} model ({config['num_layers']} layers, d_model {config['d_model']}, "
          f"{report.parameters:,} parameters) to {attention} attention -> {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from .data import FastaError
    from .training.evaluate import evaluate

    try:
        result = evaluate(args.checkpoint, args.data, batch_size=args.batch_size, max_sequences=args.max_sequences, seq_len=args.seq_len)
    except (FastaError, FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from None
    if args.json:
        print(json.dumps(result))
    else:
        name = "masked positions" if result["objective"] == "mlm" else "next tokens"
        print(f"{result['sequences']} sequences, {result['tokens']} {name}")
        print(f"{'':22}{'accuracy':>10}{'perplexity':>12}")
        print(f"{'model':22}{100 * result['accuracy']:>9.2f}%{result['perplexity']:>12.3f}")
        print(f"{'empirical baseline':22}{100 * result['baseline_accuracy']:>9.2f}%{result['baseline_perplexity']:>12.3f}")
    return 0


def _load_model(checkpoint: str):
    from .inference import load

    try:
        return load(checkpoint)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from None


def _embed(args: argparse.Namespace) -> int:
    from .inference import write_embeddings

    plm = _load_model(args.checkpoint)
    try:
        stats = write_embeddings(plm, args.fasta, args.out, layers=args.layers, per_residue=args.per_residue,
                                 tokens_per_batch=args.tokens_per_batch, precision=args.precision, progress=not args.quiet)
    except (FileNotFoundError, ValueError, OSError) as err:  # FastaError is a ValueError; OSError: the output file
        raise UserError(str(err)) from None
    print(f"embedded {stats.written} sequences ({stats.residues:,} residues) in {stats.seconds:.1f} s, "
          f"skipped {stats.skipped} already in {args.out}")
    return 0


def _fill_mask(args: argparse.Namespace) -> int:
    import json

    plm = _load_model(args.checkpoint)
    try:
        predictions = plm.fill_mask(args.sequence, args.top_k)
    except ValueError as err:
        raise UserError(str(err)) from None
    if args.json:
        print(json.dumps([p.as_dict() for p in predictions]))
    else:
        for p in predictions:
            print(f"position {p.position}: " + "  ".join(f"{r} {q:.4f}" for r, q in zip(p.residues, p.probabilities)))
    return 0


def _score(args: argparse.Namespace) -> int:
    import csv

    from .inference import parse_mutations, read_mutations_csv

    if not (args.mutations or args.mutations_csv or args.pseudo_perplexity):
        raise UserError("nothing to score: give --mutations A23G,L45P, --mutations-csv FILE or --pseudo-perplexity")
    if args.out:  # before any work: an output path that cannot be written fails now, not after scoring
        from pathlib import Path

        if Path(args.out).is_dir():
            raise UserError(f"--out {args.out} is a folder: give the CSV file to write")
        try:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"--out {args.out} cannot be written ({err})") from None
    plm = _load_model(args.checkpoint)
    rows: list[dict[str, str]] = []
    fields = ["mutant"]
    try:
        plm.tokenize(args.sequence)  # an invalid letter is reported before any mutation
        if args.mutations_csv:
            rows, mutants = read_mutations_csv(args.mutations_csv, sequence=args.sequence.strip().upper())
            fields = list(rows[0].keys())
            if "score" in fields:
                raise ValueError(f"{args.mutations_csv} already has a 'score' column: rename it")
        elif args.mutations:
            mutants = parse_mutations(args.mutations)
            rows = [{"mutant": str(m)} for m in mutants]
        if rows:
            scores = plm.score_mutations(args.sequence, mutants, tokens_per_batch=args.tokens_per_batch)
        pppl = plm.pseudo_perplexity(args.sequence, tokens_per_batch=args.tokens_per_batch) if args.pseudo_perplexity else None
    except (FileNotFoundError, ValueError) as err:  # MutationError is a ValueError
        raise UserError(str(err)) from None
    if rows:
        handle = open(args.out, "w", newline="") if args.out else sys.stdout
        writer = csv.DictWriter(handle, fieldnames=[*fields, "score"], lineterminator="\n")
        writer.writeheader()
        for row, score in zip(rows, scores.tolist()):
            writer.writerow({**row, "score": f"{score:.6f}"})
        if args.out:
            handle.close()
    if pppl is not None:
        # beside a CSV on stdout, the pseudo-perplexity goes to stderr so that the CSV stays clean
        print(f"pseudo-perplexity: {pppl:.4f}", file=sys.stderr if rows and not args.out else sys.stdout)
    return 0


def _probe(args: argparse.Namespace) -> int:
    import json

    from .inference import read_chains, run_probes

    plm = _load_model(args.checkpoint)
    try:
        chains = read_chains(args.data)
        result = run_probes(plm, chains, layer=args.layer, contact_features=args.contact_features, max_length=args.max_length,
                            tokens_per_batch=args.tokens_per_batch)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from None
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['chains_train']} train / {result['chains_test']} test chains "
              f"({result['residues_train']:,} / {result['residues_test']:,} residues), layer {result['layer']}")
        label = f"contacts, top-L/5 |i-j|>=24 ({result['contact_features']})"
        print(f"{'':46}{'model':>8}{'baseline':>10}")
        print(f"{'secondary structure Q3':46}{result['q3']:>8.4f}{result['q3_baseline']:>10.4f}")
        print(f"{'secondary structure Q8':46}{result['q8']:>8.4f}{result['q8_baseline']:>10.4f}")
        print(f"{label:46}{result['contact_precision']:>8.4f}{result['contact_baseline']:>10.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="protein-performer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a protein language model (default: the embedded corpus)")
    train.add_argument("--data", help="FASTA file (plain or .gz); default: the embedded Swiss-Prot corpus")
    train.add_argument("--out", default="runs/train", help="run directory (checkpoints, metrics, plots)")
    train.add_argument("--preset", choices=["tiny", "small", "paper"], help="model size (default tiny)")
    train.add_argument("--config", help="model config JSON (a PerformerConfig); overrides --preset")
    train.add_argument("--attention", choices=["favor", "softmax"])
    train.add_argument("--kernel", choices=["softmax", "softmax_trig", "softmax_hyperbolic", "relu"])
    train.add_argument("--objective", choices=["mlm", "causal"])
    train.add_argument("--positions", choices=["rotary", "learned"])
    train.add_argument("--num-features", type=int)
    train.add_argument("--redraw-interval", type=int, help="optimizer steps between projection redraws (0: never)")
    train.add_argument("--seq-len", type=int)
    train.add_argument("--concat", action="store_true", help="pack sequences joined by <eos> into windows of --seq-len")
    train.add_argument("--batch-size", type=int, help="sequences per optimizer step")
    train.add_argument("--micro-batch-size", type=int, help="sequences per forward pass (gradient accumulation)")
    train.add_argument("--max-steps", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--warmup-steps", type=int)
    train.add_argument("--dropout", type=float)
    train.add_argument("--precision", choices=["bf16", "fp32"])
    train.add_argument("--save-every", type=int)
    train.add_argument("--eval-every", type=int)
    train.add_argument("--eval-sequences", type=int, help="validation samples per evaluation (default 256)")
    train.add_argument("--seed", type=int)
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last complete checkpoint")
    train.add_argument("--init-from", help="start from this model directory: its config and weights (fine-tuning, e.g. converted)")
    train.add_argument("--fsdp", action="store_true", help="shard parameters, gradients and optimizer state over the torchrun processes")
    train.add_argument("--skip-invalid", action="store_true", help="skip and count malformed FASTA records instead of stopping")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)

    ev = sub.add_parser("evaluate", help="accuracy and perplexity beside the empirical baseline")
    ev.add_argument("--checkpoint", required=True, help="run directory")
    ev.add_argument("--data", help="FASTA or JSON-lines file; default: the test split of the embedded corpus")
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--max-sequences", type=int)
    ev.add_argument("--seq-len", type=int, help="crop length (default: the training --seq-len)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(func=_evaluate)

    emb = sub.add_parser("embed", help="embeddings of a FASTA file into HDF5, one group per sequence id")
    emb.add_argument("--checkpoint", required=True, help="model directory (config.json + model.safetensors)")
    emb.add_argument("--fasta", required=True, help="FASTA file (plain or .gz)")
    emb.add_argument("--out", required=True, help="HDF5 file; ids already complete in it are skipped")
    emb.add_argument("--per-residue", action="store_true", help="also store the [L, E] per-residue embeddings")
    emb.add_argument("--layers", type=int, nargs="+", default=[-1], help="layer indices (0: embedding, -1: final; default -1)")
    emb.add_argument("--tokens-per-batch", type=int, default=16384, help="token budget of a batch (a longer sequence runs alone)")
    emb.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    emb.add_argument("--quiet", action="store_true", help="no progress bar")
    emb.set_defaults(func=_embed)

    fill = sub.add_parser("fill-mask", help="most likely residues at each <mask> of a sequence")
    fill.add_argument("--checkpoint", required=True, help="model directory")
    fill.add_argument("--sequence", required=True, help='sequence with <mask> tokens, e.g. "MKT<mask>LL"')
    fill.add_argument("--top-k", type=int, default=5)
    fill.add_argument("--json", action="store_true", help="print one JSON list")
    fill.set_defaults(func=_fill_mask)

    score = sub.add_parser("score", help="masked-marginal variant scores log p(mutant) - log p(wild type); pseudo-perplexity")
    score.add_argument("--checkpoint", required=True, help="model directory")
    score.add_argument("--sequence", required=True, help="wild-type sequence")
    which = score.add_mutually_exclusive_group()
    which.add_argument("--mutations", help="comma-separated, 1-based, e.g. A23G,L45P,A23G:L45P (':' joins a multi-mutant)")
    which.add_argument("--mutations-csv", help="CSV file with a 'mutant' column (fair-esm convention)")
    score.add_argument("--pseudo-perplexity", action="store_true", help="also print the sequence's pseudo-perplexity")
    score.add_argument("--out", help="write the scores CSV here instead of stdout")
    score.add_argument("--tokens-per-batch", type=int, default=16384)
    score.set_defaults(func=_score)

    probe = sub.add_parser("probe", help="secondary-structure and contact probes of frozen embeddings, beside baselines")
    probe.add_argument("--checkpoint", required=True, help="model directory")
    probe.add_argument("--data", required=True, help="JSON lines like data/pdb_ss_dev_slice.jsonl.gz")
    probe.add_argument("--layer", type=int, default=-1, help="layer of the secondary-structure probe (default -1: final)")
    probe.add_argument("--contact-features", choices=["attention", "embedding"], default="attention")
    probe.add_argument("--max-length", type=int, default=1024, help="crop chains to this length for the contact probe")
    probe.add_argument("--tokens-per-batch", type=int, default=16384)
    probe.add_argument("--json", action="store_true", help="print one JSON object")
    probe.set_defaults(func=_probe)

    conv = sub.add_parser("convert", help="run a pretrained softmax Transformer (exact run, ESM-2, BERT) as a Performer")
    conv.add_argument("--from", dest="source", required=True,
                      help="protein-performer run, or Hugging Face EsmForMaskedLM / BertForMaskedLM save_pretrained directory")
    conv.add_argument("--out", required=True, help="directory for the converted config.json + model.safetensors")
    conv.add_argument("--attention", choices=["favor", "softmax"], default="favor")
    conv.add_argument("--kernel", choices=["softmax", "softmax_trig", "softmax_hyperbolic", "relu"],
                      help="FAVOR kernel (default: the source's, or softmax)")
    conv.add_argument("--num-features", type=int, help="FAVOR random features M per head (default: the source's, or 256)")
    conv.add_argument("--seed", type=int, default=0, help="seed of the random projections")
    conv.add_argument("--vocab", help="the source's vocabulary, one token per line (default: its vocab.txt)")
    conv.set_defaults(func=_convert)

    bench = sub.add_parser("bench", help="run a benchmark (see `protein-performer bench attention --help`)")
    bench.add_argument("what", choices=["attention"], help="the benchmark; its own options: `bench attention --help`")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's options")
    bench.set_defaults(func=_bench)

    from .cli_analysis import add_analysis_parsers

    add_analysis_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "bench":  # benchmarks measure the library as a user's process would run it
        from .memory import retain_freed_memory

        retain_freed_memory()
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank fails alike: one message
            print(f"protein-performer: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("protein-performer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
