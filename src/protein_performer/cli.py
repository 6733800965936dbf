"""The ``protein-performer`` command line: parses arguments and calls into the library, nothing more.

Errors a user can fix (bad files, bad arguments) are raised as :class:`UserError` anywhere below and
printed here as one line, with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import sys


class UserError(Exception):
    """A problem with the user's input: reported as one line, exit status 2."""


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

    out = Path(args.out)
    existing = latest_checkpoint(out)
    if existing is not None and not args.resume:
        raise UserError(f"{out} already holds a run (last checkpoint {existing.name}); pass --resume to continue it or choose another --out")
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
            if args.config:
                model_config = PerformerConfig.load(args.config).replace(**overrides)
            else:
                model_config = preset(args.preset, **overrides)
            train_overrides = {k: v for k, v in {
                "data": args.data, "seq_len": args.seq_len, "batch_size": args.batch_size, "micro_batch_size": args.micro_batch_size,
                "max_steps": args.max_steps, "lr": args.lr, "warmup_steps": args.warmup_steps, "save_every": args.save_every,
                "eval_every": args.eval_every, "seed": args.seed, "precision": args.precision,
            }.items() if v is not None}
            tc = TrainConfig(**train_overrides, concat=args.concat)
            if model_config.positions == "learned" and tc.seq_len > model_config.max_len:
                model_config = model_config.replace(max_len=tc.seq_len)
        tc.micro_batch_size = min(tc.micro_batch_size, tc.batch_size)
        corpus = EncodedCorpus.from_fasta(tc.data, skip_invalid=args.skip_invalid)
        trainer = Trainer(out, model_config, tc, corpus=corpus, init_weights=Path(args.init_from) if args.init_from else None)
    except (FastaError, FileNotFoundError, ValueError, json.JSONDecodeError) as err:
        raise UserError(str(err)) from None
    if args.resume and trainer.resume():
        print(f"resuming {out} at step {trainer.step}", file=sys.stderr)
    print(f"training {model_config.attention}/{model_config.kernel} {model_config.objective} model, "
          f"{trainer.model.num_parameters():,} parameters, {len(trainer.train_data):,} training samples -> {out}", file=sys.stderr)
    final = trainer.fit(progress=not args.quiet)
    if final:
        print(f"validation: accuracy {final['accuracy']:.4f}, perplexity {final['perplexity']:.3f}")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="protein-performer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a protein language model (default: the embedded corpus)")
    train.add_argument("--data", help="FASTA file (plain or .gz); default: the embedded Swiss-Prot corpus")
    train.add_argument("--out", default="runs/train", help="run directory (checkpoints, metrics, plots)")
    train.add_argument("--preset", default="tiny", choices=["tiny", "small", "paper"])
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
    train.add_argument("--seed", type=int)
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last complete checkpoint")
    train.add_argument("--init-from", help="start from the weights of this model directory (fine-tuning)")
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

    bench = sub.add_parser("bench", help="run a benchmark (see `protein-performer bench attention --help`)", add_help=False)
    bench.add_argument("what", choices=["attention"])
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"protein-performer: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("protein-performer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
