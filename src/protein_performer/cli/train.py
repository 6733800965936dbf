"""``train``, ``evaluate`` and ``convert``: making models."""

from __future__ import annotations

import argparse
import json
import sys

from ..attention import KERNELS
from ..model.config import ATTENTIONS, OBJECTIVES, POSITIONS, PRESETS
from ..training.config import PRECISIONS

MODEL_OPTIONS = ("attention", "kernel", "objective", "dropout", "num_features", "redraw_interval", "positions")
TRAIN_OPTIONS = ("data", "seq_len", "concat", "batch_size", "micro_batch_size", "max_steps", "lr", "warmup_steps", "save_every",
                 "eval_every", "eval_sequences", "seed", "precision")


def run_train(args: argparse.Namespace) -> int:
    from ..training import start_training
    from ..training.distributed import from_env

    dist = from_env()
    try:
        if args.fsdp and not dist.enabled:
            raise ValueError("--fsdp shards the model over processes: launch with torchrun (see docs/distributed.md)")
        trainer = start_training(args.out, resume=args.resume, init_from=args.init_from, config=args.config, preset_name=args.preset,
                                 model_options={k: getattr(args, k) for k in MODEL_OPTIONS},
                                 train_options={k: getattr(args, k) for k in TRAIN_OPTIONS},
                                 skip_invalid=args.skip_invalid, fsdp=args.fsdp, dist=dist)
        tc, config = trainer.tc, trainer.config
        if trainer.skipped_records and dist.is_main:
            print(f"skipped {trainer.skipped_records:,} malformed records of {tc.data} (--skip-invalid)", file=sys.stderr)
        if trainer.resumed and trainer.step >= tc.max_steps:
            if dist.is_main:
                print(f"{args.out} is already at step {trainer.step} of --max-steps {tc.max_steps}: nothing to train "
                      f"(raise --max-steps to continue)", file=sys.stderr)
            return 0
        if dist.is_main:
            if trainer.resumed:
                print(f"resuming {args.out} at step {trainer.step}", file=sys.stderr)
            ranks = f" on {dist.world_size} processes" if dist.enabled else ""
            print(f"training {config.attention}/{config.kernel} {config.objective} model, {trainer.model.num_parameters():,} parameters, "
                  f"{len(trainer.train_data):,} training samples{ranks} -> {args.out}", file=sys.stderr)
        final = trainer.fit(progress=not args.quiet)
        if final and dist.is_main:
            print(f"validation: accuracy {final['accuracy']:.4f}, perplexity {final['perplexity']:.3f}")
    finally:
        dist.close()
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ..training import evaluate

    result = evaluate(args.checkpoint, args.data, batch_size=args.batch_size, max_sequences=args.max_sequences, seq_len=args.seq_len)
    if args.json:
        print(json.dumps(result))
        return 0
    name = "masked positions" if result["objective"] == "mlm" else "next tokens"
    print(f"{result['sequences']} sequences, {result['tokens']} {name}")
    print(f"{'':22}{'accuracy':>10}{'perplexity':>12}")
    print(f"{'model':22}{100 * result['accuracy']:>9.2f}%{result['perplexity']:>12.3f}")
    print(f"{'empirical baseline':22}{100 * result['baseline_accuracy']:>9.2f}%{result['baseline_perplexity']:>12.3f}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from ..convert import convert_model

    report = convert_model(args.source, args.out, attention=args.attention, kernel=args.kernel, num_features=args.num_features,
                           seed=args.seed, vocab=args.vocab)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    config = report.config
    attention = f"FAVOR ({config['kernel']}, M = {config['num_features']})" if config["attention"] == "favor" else "exact softmax"
    print(f"converted {report.source_format} model ({config['num_layers']} layers, d_model {config['d_model']}, "
          f"{report.parameters:,} parameters) to {attention} attention -> {args.out}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a protein language model (default: the embedded corpus)")
    train.set_defaults(func=run_train, parser=train)
    train.add_argument("--data", help="FASTA file (plain or .gz); default: the embedded Swiss-Prot corpus")
    train.add_argument("--out", default="runs/train", help="run directory (checkpoints, metrics, plots)")
    train.add_argument("--preset", choices=list(PRESETS), help="model size (default tiny)")
    train.add_argument("--config", help="model config JSON (a PerformerConfig); overrides --preset")
    train.add_argument("--attention", choices=ATTENTIONS)
    train.add_argument("--kernel", choices=KERNELS)
    train.add_argument("--objective", choices=OBJECTIVES)
    train.add_argument("--positions", choices=POSITIONS)
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
    train.add_argument("--precision", choices=PRECISIONS)
    train.add_argument("--save-every", type=int)
    train.add_argument("--eval-every", type=int)
    train.add_argument("--eval-sequences", type=int, help="validation samples per evaluation (default 256)")
    train.add_argument("--seed", type=int)
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last complete checkpoint")
    train.add_argument("--init-from", help="start from this model directory: its config and weights (fine-tuning, e.g. converted)")
    train.add_argument("--fsdp", action="store_true", help="shard parameters, gradients and optimizer state over the torchrun processes")
    train.add_argument("--skip-invalid", action="store_true", help="skip and count malformed FASTA records instead of stopping")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = sub.add_parser("evaluate", help="accuracy and perplexity beside the empirical baseline")
    ev.set_defaults(func=run_evaluate, parser=ev)
    ev.add_argument("--checkpoint", required=True, help="run directory")
    ev.add_argument("--data", help="FASTA or JSON-lines file; default: the test split of the embedded corpus")
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--max-sequences", type=int)
    ev.add_argument("--seq-len", type=int, help="crop length (default: the training --seq-len)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")

    conv = sub.add_parser("convert", help="run a pretrained softmax Transformer (exact run, ESM-2, BERT) as a Performer")
    conv.set_defaults(func=run_convert, parser=conv)
    conv.add_argument("--from", dest="source", required=True,
                      help="protein-performer run, or Hugging Face EsmForMaskedLM / BertForMaskedLM save_pretrained directory")
    conv.add_argument("--out", required=True, help="directory for the converted config.json + model.safetensors")
    conv.add_argument("--attention", choices=ATTENTIONS, default="favor")
    conv.add_argument("--kernel", choices=KERNELS, help="FAVOR kernel (default: the source's, or softmax)")
    conv.add_argument("--num-features", type=int, help="FAVOR random features M per head (default: the source's, or 256)")
    conv.add_argument("--seed", type=int, default=0, help="seed of the random projections")
    conv.add_argument("--vocab", help="the source's vocabulary, one token per line (default: its vocab.txt)")
