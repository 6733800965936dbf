"""Starting a training run: what ``DIR`` may be, whether the run resumes, and which model and settings
it trains. Decided here, once, for the command line and for scripts alike.

- ``DIR`` holding a complete checkpoint is continued only when asked to resume, with its own recorded
  model and settings (only ``max_steps`` may be raised to train further, and ``keep_every``, which
  checkpoints stay, may change); it is never started over.
- Otherwise ``DIR`` must be new, empty, or (when resuming) a run killed before its first checkpoint,
  which then starts from step 0: nothing of other files is ever overwritten.
- A new run's model comes from ``init_from`` (a model directory: its config and weights), a config
  file, or a preset, with options applied on top; ``init_from`` refuses options that would change
  its architecture.

Errors name settings in backquotes (``max_steps``); the command line shows them as its options.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..data import EncodedCorpus, data_fingerprint, open_prepared
from ..model import PRESETS, PerformerConfig, preset
from ..rundir import LOCK, RunDir
from .config import TrainConfig
from .distributed import Distributed
from .trainer import Trainer

RESUME_MAY_CHANGE = ("max_steps", "keep_every")  # what a resumed run takes from its command line
# Model settings that would change the architecture of a model that ``init_from`` brings along.
ARCHITECTURE_SETTINGS = ("preset", "config", "attention", "kernel", "objective", "positions", "num_features")


def _check_out(run: RunDir, *, resume: bool, init_from: str | os.PathLike | None) -> RunDir | None:
    """The checkpoint to resume from, or None for a new run (or for resuming a run that has none yet);
    ``ValueError`` if ``run`` cannot be used."""
    checkpoint = run.latest_checkpoint()
    out = run.path
    if checkpoint is not None and not resume:
        raise ValueError(f"{out} already holds a run (last checkpoint {checkpoint.path.name}); pass `resume` to continue it "
                         f"or choose another `out`")
    if checkpoint is not None and init_from:
        raise ValueError(f"`init_from` starts a new run, but {out} holds one to `resume`: choose another `out`")
    if checkpoint is None and os.environ.get("RANK", "0") == "0":  # rank 0 only: the others may see its first files
        if out.exists() and not out.is_dir():
            raise ValueError(f"`out` {out} is a file: give a directory for the run")
        if run.user_files() and not (resume and run.is_run()):
            raise ValueError(f"`out` {out} holds files but no run to resume: give a new or empty directory")
    return checkpoint


def _check_resumed(tc: TrainConfig, model_config: PerformerConfig, recorded: RunDir, *, train_options: dict,
                   model_options: dict, others: dict) -> None:
    """A resumed run keeps its settings: refuse any other given, and data that changed."""
    for name, value in {**others, **model_options, **train_options}.items():
        if value is None or name in RESUME_MAY_CHANGE:
            continue
        if name in others:
            described = {**(PerformerConfig.load(value).to_dict() if name == "config" else PRESETS.get(value, {})), **model_options}
            differing = [k for k, v in described.items() if k != "max_len" and getattr(model_config, k) != v]
            if differing or (value not in PRESETS and name == "preset"):
                raise ValueError(f"`{name}` {value} describes another model than the run's ({recorded.config}, e.g. "
                                 f"{(differing or ['its size'])[0]}): a resumed run keeps its model; drop it, or start a new run")
            continue
        current = getattr(model_config, name) if name in model_options else getattr(tc, name)
        same = Path(value).absolute() == Path(current).absolute() if name == "data" else value == current
        if not same:
            raise ValueError(f"`{name}` {value} differs from the run's {current} ({recorded.train_config}): a resumed run "
                             f"keeps its settings (only `max_steps` and `keep_every` may change); drop it, or start a new run")
    if not Path(tc.data).exists():
        raise FileNotFoundError(f"{tc.data} not found: the run was trained on it ({recorded.train_config}) and resumes only on it")
    if tc.data_fingerprint and data_fingerprint(tc.data) not in ("", tc.data_fingerprint):
        raise ValueError(f"{tc.data} changed since the run started ({recorded.train_config} records {tc.data_fingerprint}): "
                         f"a resumed run trains only on the data it started with")


def _new_model_config(*, init_from, config, preset_name, model_options: dict, train_config: TrainConfig) -> PerformerConfig:
    if init_from:
        chosen = {"preset": preset_name, "config": config, **model_options}
        given = [name for name in ARCHITECTURE_SETTINGS if chosen.get(name) is not None]
        if given:
            raise ValueError(f"`{given[0]}` would change the model that `init_from` {init_from} brings; to change its "
                             f"attention, convert it first (protein-performer convert)")
        source = RunDir(init_from)
        if not source.config.is_file():
            raise FileNotFoundError(f"{source.config} not found: `init_from` takes a model directory (config.json + model.safetensors)")
        model_config = source.read_config().replace(**model_options)
    elif config:
        model_config = PerformerConfig.load(config).replace(**model_options)
    else:
        model_config = preset(preset_name or "tiny", **model_options)
    if model_config.positions == "learned" and train_config.seq_len > model_config.max_len:
        if init_from:
            raise ValueError(f"`seq_len` {train_config.seq_len} is longer than the learned positions of {init_from} "
                             f"({model_config.max_len} tokens): pass `seq_len` {model_config.max_len} or less")
        model_config = model_config.replace(max_len=train_config.seq_len)
    elif model_config.positions == "learned" and not (init_from or config):
        # A new model learns as many positions as it trains on: rows beyond them would stay random.
        model_config = model_config.replace(max_len=train_config.seq_len)
    return model_config


def _settings(run: RunDir, checkpoint: RunDir | None, *, resume: bool, init_from, config, preset_name, model_options: dict,
              train_options: dict) -> tuple[PerformerConfig, TrainConfig]:
    """The model and training settings of the run: recorded ones when it resumes (a run killed before
    its first checkpoint starts again from step 0 with them; only max_steps may be raised and keep_every
    changed), else new."""
    if checkpoint is not None or (resume and run.is_run()):
        recorded = checkpoint or run
        model_config = recorded.read_config()
        tc = TrainConfig.from_dict(recorded.read_train_config(), source=recorded.train_config)
        _check_resumed(tc, model_config, recorded, train_options=train_options, model_options=model_options,
                       others={"preset": preset_name, "config": config})
        if train_options.get("max_steps") not in (None, tc.max_steps):
            if tc.lr_schedule != "constant":
                raise ValueError(f"`max_steps` {train_options['max_steps']} differs from the run's {tc.max_steps}: its "
                                 f"{tc.lr_schedule} learning-rate decay ends there ({recorded.train_config}), so it cannot "
                                 f"be moved on resume; start a new run (e.g. `init_from` this one)")
            tc.max_steps = train_options["max_steps"]
        tc.keep_every = train_options.get("keep_every", tc.keep_every)
        return model_config, tc
    if "data" in train_options:  # recorded whole, so that a resume from another folder finds it
        train_options = {**train_options, "data": str(Path(train_options["data"]).absolute())}
    tc = TrainConfig(**train_options)
    tc.data_fingerprint = data_fingerprint(tc.data)
    model_config = _new_model_config(init_from=init_from, config=config, preset_name=preset_name,
                                     model_options=model_options, train_config=tc)
    return model_config, tc


def start_training(out: str | os.PathLike, *, resume: bool = False, init_from: str | os.PathLike | None = None,
                   config: str | os.PathLike | None = None, preset_name: str | None = None,
                   model_options: dict | None = None, train_options: dict | None = None, skip_invalid: bool = False,
                   fsdp: bool = False, dist: Distributed | None = None) -> Trainer:
    """A :class:`Trainer` for run directory ``out``, resumed or new (see the module docstring).

    ``model_options``: :class:`~protein_performer.model.PerformerConfig` fields to set on a new run's
    model; ``train_options``: :class:`TrainConfig` fields (a resumed run takes only ``max_steps`` and ``keep_every``).
    Options that are None are not given. Raises ``ValueError`` / ``FileNotFoundError`` with one line."""
    model_options = {k: v for k, v in (model_options or {}).items() if v is not None}
    train_options = {k: v for k, v in (train_options or {}).items() if v is not None}
    run = RunDir(out)
    if os.environ.get("RANK", "0") == "0" and run.path.exists() and not run.path.is_dir():
        raise ValueError(f"`out` {run.path} is a file: give a directory for the run")
    _check_out(run, resume=resume, init_from=init_from)  # a refusal before anything is created
    # One writer per directory (rank 0 writes for all ranks); then decided again, under the lock.
    existed = run.path.exists()
    lock = run.lock() if os.environ.get("RANK", "0") == "0" else None
    try:
        checkpoint = _check_out(run, resume=resume, init_from=init_from)
        model_config, tc = _settings(run, checkpoint, resume=resume, init_from=init_from, config=config, preset_name=preset_name,
                                     model_options=model_options, train_options=train_options)
        tc.micro_batch_size = min(tc.micro_batch_size, tc.batch_size)
        model_config.check_fits(16, "training (weights, gradients, two optimizer moments)")
        corpus = open_prepared(tc.data) if Path(tc.data).is_dir() else EncodedCorpus.from_fasta(tc.data, skip_invalid=skip_invalid)
        if len(corpus) == 0:
            raise ValueError(f"{tc.data} holds no sequences: nothing to train on")
        if len(corpus.select("train")) == 0:
            raise ValueError(f"none of the {len(corpus)} proteins of {tc.data} falls in the training split (about 95% of "
                             f"accessions, chosen by a hash of each accession): give more proteins")
        trainer = Trainer(Path(out), model_config, tc, corpus=corpus, init_weights=init_from, checkpoint=checkpoint,
                          dist=dist, fsdp=fsdp)
    except BaseException:
        if lock is not None:
            lock.release()
            if not run.user_files():  # refused: leave nothing behind
                (run / LOCK).unlink(missing_ok=True)
                if not existed:
                    run.path.rmdir()
        raise
    trainer.lock = lock
    return trainer
