"""``prepare``, ``train``, ``evaluate`` and ``convert``: making models."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ..attention import KERNELS
from ..convert.distill import DistillSettings
from ..errors import UserError
from ..model.config import ATTENTIONS, OBJECTIVES, POSITIONS, PRESETS, PerformerConfig
from ..training.config import LR_SCHEDULES, PRECISIONS, TrainConfig
from ..training.distributed import DEFAULT_TIMEOUT_MINUTES
from .common import add_model_options, add_quiet, add_threads, attention_name, show_progress

MODEL_OPTIONS = ("attention", "kernel", "objective", "dropout", "num_features", "redraw_interval", "positions", "window",
                 "bucket_size", "n_hashes", "linformer_k")
TRAIN_OPTIONS = ("data", "seq_len", "concat", "batch_size", "micro_batch_size", "max_steps", "lr", "warmup_steps", "lr_schedule",
                 "min_lr_ratio", "save_every", "keep_every", "eval_every", "eval_sequences", "seed", "precision")


def run_train(args: argparse.Namespace) -> int:
    from ..training import start_training
    from ..training.distributed import from_env

    if args.collective_timeout <= 0:
        raise UserError(f"--collective-timeout must be positive (minutes), got {args.collective_timeout}")
    dist = from_env(args.collective_timeout)
    try:
        if args.fsdp and not dist.enabled:
            raise ValueError("--fsdp shards the model over processes: launch with torchrun (see docs/distributed.md)")
        trainer = start_training(args.out, resume=args.resume, init_from=args.init_from, config=args.config, preset_name=args.preset,
                                 model_options={k: getattr(args, k) for k in MODEL_OPTIONS},
                                 train_options={k: getattr(args, k) or None if k == "concat" else getattr(args, k)
                                                for k in TRAIN_OPTIONS},
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
            print(f"training {config.objective} model with {attention_name(config.to_dict())}, "
                  f"{trainer.model.num_parameters():,} parameters, {len(trainer.train_data):,} training samples{ranks} -> {args.out}",
                  file=sys.stderr)
        final = trainer.fit(progress=show_progress(args))
        if final and dist.is_main:
            print(f"validation: accuracy {100 * final['accuracy']:.2f}%, perplexity {final['perplexity']:.3f}")
    finally:
        dist.close()
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from ..data import prepare

    manifest = prepare(args.fasta, args.out, workers=args.workers, skip_invalid=args.skip_invalid,
                       check_duplicates=not args.no_duplicate_check, progress=show_progress(args))
    skipped = manifest["skipped"]["skipped_records"]
    splits = ", ".join(f"{s} {v['proteins']:,}" for s, v in manifest["splits"].items())
    print(f"prepared {manifest['proteins']:,} proteins ({manifest['residues']:,} residues; {splits}) in {manifest['seconds']:.1f} s"
          f"{f', skipped {skipped:,} malformed records' if skipped else ''} -> {args.out}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ..training import evaluate

    result = evaluate(args.checkpoint, args.data, batch_size=args.batch_size, max_sequences=args.max_sequences, seq_len=args.seq_len,
                      device=args.device, progress=show_progress(args))
    if args.json:
        print(json.dumps(result))
        return 0
    name = "masked positions" if result["objective"] == "mlm" else "next tokens"
    print(f"{result['sequences']} sequences, {result['tokens']} {name}")
    print(f"{'':22}{'accuracy':>10}{'perplexity':>12}")
    print(f"{'model':22}{100 * result['accuracy']:>9.2f}%{result['perplexity']:>12.3f}")
    print(f"{'empirical baseline':22}{100 * result['baseline_accuracy']:>9.2f}%{result['baseline_perplexity']:>12.3f}")
    return 0


DISTILL_OPTIONS = {"distill_seq_len": "seq_len", "distill_batch_size": "batch_size", "distill_lr": "lr", "data": "data"}


def run_convert(args: argparse.Namespace) -> int:
    from ..convert import DistillSettings, convert_model

    given = [f"--{name.replace('_', '-')}" for name in DISTILL_OPTIONS if getattr(args, name) is not None]
    if given and args.distill is None:
        raise UserError(f"{', '.join(given)} set{'s' if len(given) == 1 else ''} how `--distill STEPS` trains: "
                        f"add --distill STEPS, or drop {'it' if len(given) == 1 else 'them'}")
    distillation = None
    if args.distill is not None:
        values = {field: getattr(args, name) for name, field in DISTILL_OPTIONS.items() if getattr(args, name) is not None}
        distillation = DistillSettings(steps=args.distill, seed=args.seed, **values)
    report = convert_model(args.source, args.out, attention=args.attention, kernel=args.kernel, num_features=args.num_features,
                           seed=args.seed, vocab=args.vocab, distillation=distillation, progress=show_progress(args),
                           log=None if args.quiet else lambda line: print(line, file=sys.stderr))
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    config = report.config
    attention = attention_name(config)
    print(f"converted {report.source_format} model ({config['num_layers']} layers, d_model {config['d_model']}, "
          f"{report.parameters:,} parameters) to {attention} -> {args.out}")
    return 0


def _field_default(cls: type, name: str):
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def _model_default(name: str) -> str:
    """A model setting's default as the presets give it (``PRESETS`` over ``PerformerConfig``)."""
    base = _field_default(PerformerConfig, name)
    values = {preset: PRESETS[preset].get(name, base) for preset in PRESETS}
    if len(set(values.values())) == 1:
        return f"default: {base}"
    return "default: the preset's: " + ", ".join(f"{value} ({preset})" for preset, value in values.items())


def _train_default(name: str) -> str:
    """A training setting's default (``TrainConfig``); a resumed run keeps its own."""
    return f"default: {_field_default(TrainConfig, name)}"


TRAIN_EXAMPLE = """example (about 30 s on 2 CPU cores; the defaults, --seq-len 1024 --batch-size 32 --max-steps 1000,
take about 20 minutes there in fp32):
  protein-performer train --out runs/quick --seq-len 128 --batch-size 8 --max-steps 50 --precision fp32"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    add_prepare_parser(sub)
    add_train_parser(sub)
    add_convert_parser(sub)


def add_prepare_parser(sub: argparse._SubParsersAction) -> None:
    prep = sub.add_parser("prepare", help="tokenize a FASTA once into a memory-mapped corpus directory (for --data)",
                          epilog="example (the embedded corpus, 40,000 proteins: about 2 s):\n"
                                 "  protein-performer prepare --fasta big.fasta.gz --out corpora/big")
    prep.set_defaults(func=run_prepare, parser=prep)
    prep.add_argument("--fasta", required=True, help="FASTA file (plain or .gz), read as a stream")
    prep.add_argument("--out", required=True, help="the corpus directory to create (must not exist)")
    prep.add_argument("--workers", type=int, default=1,
                      help="processes parsing parts of a plain FASTA in parallel (a gzip stream is read by one; default: 1)")
    prep.add_argument("--skip-invalid", action="store_true", help="skip and count malformed records instead of stopping")
    prep.add_argument("--no-duplicate-check", action="store_true",
                      help="do not check ids for duplicates (the check keeps every id in memory: ~100 bytes each)")
    add_quiet(prep)


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a protein language model (default: the embedded corpus)", epilog=TRAIN_EXAMPLE)
    train.set_defaults(func=run_train, parser=train)
    train.add_argument("--data", help="FASTA file (plain or .gz) or a corpus directory from `prepare` "
                                      "(default: the embedded Swiss-Prot corpus)")
    train.add_argument("--out", default="runs/train", help="run directory (checkpoints, metrics, plots)")
    train.add_argument("--preset", choices=list(PRESETS), help="model size (default: tiny)")
    train.add_argument("--config", help="model config JSON (a PerformerConfig) instead of --preset (default: none)")
    train.add_argument("--attention", choices=ATTENTIONS,
                       help=f"favor: FAVOR (Performer); softmax: exact attention, the Transformer baseline; the rivals local "
                            f"(sliding window), linear (elu + 1 features), reformer (LSH) and linformer (low rank; learned "
                            f"positions), the last two from 'protein-performer[baselines]'; none: no attention, the "
                            f"no-context control ({_model_default('attention')})")
    train.add_argument("--kernel", choices=KERNELS, help=f"FAVOR kernel ({_model_default('kernel')})")
    train.add_argument("--window", type=int, help=f"local attention: keys at most this far from the query ({_model_default('window')})")
    train.add_argument("--bucket-size", type=int, help=f"reformer: LSH bucket (chunk) length ({_model_default('bucket_size')})")
    train.add_argument("--n-hashes", type=int, help=f"reformer: rounds of LSH hashing ({_model_default('n_hashes')})")
    train.add_argument("--linformer-k", type=int,
                       help=f"linformer: rows keys and values are projected to ({_model_default('linformer_k')})")
    train.add_argument("--objective", choices=OBJECTIVES,
                       help=f"mlm: masked language model; causal: next token ({_model_default('objective')})")
    train.add_argument("--positions", choices=POSITIONS,
                       help=f"rotary (any length) or learned (up to --seq-len) position encoding ({_model_default('positions')})")
    train.add_argument("--num-features", type=int, help=f"FAVOR random features M per head ({_model_default('num_features')})")
    train.add_argument("--redraw-interval", type=int,
                       help=f"optimizer steps between projection redraws, 0: never ({_model_default('redraw_interval')})")
    train.add_argument("--dropout", type=float, help=f"dropout probability ({_model_default('dropout')})")
    train.add_argument("--seq-len", type=int, help=f"tokens per training sequence; longer proteins are cropped ({_train_default('seq_len')})")
    train.add_argument("--concat", action="store_true", help="pack sequences joined by <eos> into windows of --seq-len")
    train.add_argument("--batch-size", type=int, help=f"sequences per optimizer step, over all processes ({_train_default('batch_size')})")
    train.add_argument("--micro-batch-size", type=int,
                       help=f"sequences per forward pass (gradient accumulation) ({_train_default('micro_batch_size')})")
    train.add_argument("--max-steps", type=int, help=f"optimizer steps to train for ({_train_default('max_steps')})")
    train.add_argument("--lr", type=float, help=f"peak learning rate, after the warmup ({_train_default('lr')})")
    train.add_argument("--warmup-steps", type=int, help=f"steps of linear learning-rate warmup ({_train_default('warmup_steps')})")
    train.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                       help=f"after the warmup: constant, or a linear / cosine decay to --min-lr-ratio × --lr at --max-steps "
                            f"({_train_default('lr_schedule')})")
    train.add_argument("--min-lr-ratio", type=float, help=f"the decay's final learning rate over the peak ({_train_default('min_lr_ratio')})")
    train.add_argument("--precision", choices=PRECISIONS,
                       help=f"bf16 autocast or fp32; bf16 where the hardware computes it natively (CUDA, CPUs with AVX-512 "
                            f"BF16 or AMX), fp32 elsewhere (here {_train_default('precision')})")
    train.add_argument("--save-every", type=int, help=f"steps between checkpoints ({_train_default('save_every')})")
    train.add_argument("--keep-every", type=int, metavar="STEPS",
                       help="also keep the checkpoints of every multiple of STEPS (models along the run), not only the last "
                            "two; may change on --resume (default: 0, only the last two)")
    train.add_argument("--eval-every", type=int, help=f"steps between validations ({_train_default('eval_every')})")
    train.add_argument("--eval-sequences", type=int, help=f"validation samples per evaluation ({_train_default('eval_sequences')})")
    train.add_argument("--seed", type=int, help=f"seed of everything random: data order, crops, masks, weights ({_train_default('seed')})")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last complete checkpoint")
    train.add_argument("--init-from", metavar="CHECKPOINT",
                       help="start from this model directory: its config and weights (fine-tuning, e.g. converted) (default: none)")
    train.add_argument("--fsdp", action="store_true", help="shard parameters, gradients and optimizer state over the torchrun processes")
    train.add_argument("--skip-invalid", action="store_true", help="skip and count malformed FASTA records instead of stopping")
    train.add_argument("--collective-timeout", type=float, default=DEFAULT_TIMEOUT_MINUTES, metavar="MINUTES",
                       help="under torchrun: how long a rank waits for the others (e.g. during a slow checkpoint write) "
                            "before the job fails (default: %(default)g)")
    add_threads(train)
    add_quiet(train)

    ev = sub.add_parser("evaluate", help="accuracy and perplexity beside the empirical baseline",
                        epilog="example (about 20 s on 2 CPU cores for the demo model; the whole test split: 2-3.5 minutes):\n"
                               "  protein-performer evaluate --checkpoint runs/demo --max-sequences 200")
    ev.set_defaults(func=run_evaluate, parser=ev)
    ev.add_argument("--checkpoint", required=True, help="run directory (or a model directory with train_config.json)")
    ev.add_argument("--data", help="FASTA or JSON-lines file, or a corpus directory from `prepare` (all its proteins) "
                                   "(default: the test split of the embedded corpus)")
    ev.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass")
    ev.add_argument("--max-sequences", type=int, help="evaluate the first N sequences only (default: all)")
    ev.add_argument("--seq-len", type=int, help="crop length (default: the run's training --seq-len)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_options(ev)


def add_convert_parser(sub: argparse._SubParsersAction) -> None:
    conv = sub.add_parser("convert", help="run a pretrained softmax Transformer (exact run, ESM-2, BERT) as a Performer",
                          epilog="example (after training runs/exact with --attention softmax; seconds):\n"
                                 "  protein-performer convert --checkpoint runs/exact --out runs/exact-favor --num-features 64\n"
                                 "distilled toward the exact model (about 1.3 s per step for ESM-2 8M on 2 CPU cores):\n"
                                 "  protein-performer convert --from esm2_t6_8M --out runs/esm2-favor --num-features 64 --distill 300")
    conv.set_defaults(func=run_convert, parser=conv)
    conv.add_argument("--checkpoint", "--from", dest="source", required=True,
                      help="protein-performer run, or Hugging Face EsmForMaskedLM / BertForMaskedLM save_pretrained directory "
                           "(--from: the same)")
    conv.add_argument("--out", required=True, help="directory for the converted config.json + model.safetensors")
    conv.add_argument("--attention", choices=("favor", "softmax"), default="favor", help="attention of the converted model")
    conv.add_argument("--kernel", choices=KERNELS, help=f"FAVOR kernel (default: the source's, or {_field_default(PerformerConfig, 'kernel')})")
    conv.add_argument("--num-features", type=int,
                      help=f"FAVOR random features M per head (default: the source's, or {_field_default(PerformerConfig, 'num_features')})")
    conv.add_argument("--seed", type=int, default=0, help="seed of the random projections")
    conv.add_argument("--vocab", help="the source's vocabulary, one token per line (default: its vocab.txt)")
    default = DistillSettings(steps=1)
    conv.add_argument("--distill", type=int, metavar="STEPS",
                      help="then train the FAVOR model STEPS steps to reproduce the exact one's hidden states and outputs "
                           "(recovers real ESM-2; see docs/results.md) (default: none)")
    conv.add_argument("--distill-seq-len", type=int, help=f"tokens per distillation crop (default: {default.seq_len})")
    conv.add_argument("--distill-batch-size", type=int, help=f"crops per distillation step (default: {default.batch_size})")
    conv.add_argument("--distill-lr", type=float, help=f"peak distillation learning rate (default: {default.lr})")
    conv.add_argument("--data", help="FASTA to distill on (default: the embedded Swiss-Prot corpus's train split)")
    add_quiet(conv)
