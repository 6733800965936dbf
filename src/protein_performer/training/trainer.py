"""The training loop: data by global step, gradient accumulation, redraws per optimizer step,
periodic validation, metrics, atomic checkpoints and exact resume.

What step ``s`` trains on, how it is masked, and when projections are redrawn depend only on the
seed and ``s``; dropout draws from the global torch RNG, whose state is checkpointed. So a run resumed
from any checkpoint ends with exactly the weights of an uninterrupted run with the same seed.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from ..data import DEFAULT_ALPHABET, IGNORE_INDEX, EncodedCorpus
from ..model import PerformerConfig, PerformerLM
from ..model.performer import NO_HEAD, NoLanguageModelHead
from ..rundir import RunDir, RunLock
from ..seeding import derived_seed, seeded_generator
from .config import TrainConfig
from .distributed import Distributed
from .evaluation import evaluate_dataset
from .objective import amino_acid_frequencies, lm_loss, make_collator, make_dataset, to_device
from .plots import plot_training_curves
from .state import by_name, optimizer_state, optimizer_tensors


def parameter_names(model: PerformerLM) -> tuple[list[str], list[str]]:
    """Names of the parameters with and without weight decay (decay on matrices only, not on biases,
    LayerNorms or embeddings), in the order the optimizer numbers them."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "embed" not in name else no_decay).append(name)
    return decay, no_decay


def parameter_groups(model: PerformerLM, weight_decay: float) -> list[dict]:
    params = dict(model.named_parameters())
    decay, no_decay = parameter_names(model)
    return [{"params": [params[n] for n in decay], "weight_decay": weight_decay},
            {"params": [params[n] for n in no_decay], "weight_decay": 0.0}]


def rank_slice(batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """The part ``[start, stop)`` of a global batch that ``rank`` trains on: contiguous, disjoint,
    together exactly the batch."""
    if batch_size % world_size:
        raise ValueError(f"`batch_size` {batch_size} does not split evenly over {world_size} processes: "
                         f"choose a multiple of {world_size}")
    share = batch_size // world_size
    return rank * share, (rank + 1) * share


ETA_AFTER_STEPS = 3  # steps timed before the estimate of the time to the end is printed


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


class TrainingDiverged(ValueError):
    """A non-finite loss, gradient or weight: training stops before it is applied or saved."""


class Trainer:
    """Trains a :class:`PerformerLM` on a corpus; see the module docstring for what fixes each step.

    Data parallel (``dist`` from :func:`~protein_performer.training.distributed.from_env` under
    ``torchrun``): every rank builds the same model, trains on its slice of each global batch
    (:func:`rank_slice`) under ``DistributedDataParallel``, or ``fully_shard`` (FSDP) with ``fsdp``,
    and redraws the same projections; rank 0 logs and writes checkpoints, consolidated into the
    single-process format. The loss is normalized by the predicted positions of the whole global
    batch, so the update does not depend on the number of ranks. Each rank has its own dropout
    stream (rank 0 continues the single-process one); all streams are checkpointed.
    """

    def __init__(self, run_dir: str | Path, model_config: PerformerConfig, train_config: TrainConfig, *, corpus: EncodedCorpus,
                 device: torch.device | None = None, init_weights: str | Path | None = None, checkpoint: RunDir | None = None,
                 dist: Distributed | None = None, fsdp: bool = False, validation=None):
        """``checkpoint``: continue from it (a checkpoint of ``run_dir``); ``init_weights``: a model
        directory whose weights a new run starts from. Which one applies is decided by
        :func:`~protein_performer.training.run.start_training`. ``validation``: a dataset to validate
        on (e.g. windows of another length, shared by runs that train on different ones); default:
        the corpus's valid split, cut as the training data is."""
        if model_config.vocab_size < len(DEFAULT_ALPHABET):
            raise ValueError(f"invalid model config: vocab_size {model_config.vocab_size} is smaller than the alphabet's "
                             f"{len(DEFAULT_ALPHABET)} tokens")
        if not model_config.lm_head:
            raise NoLanguageModelHead(f"{init_weights or run_dir}: {NO_HEAD}")
        self.run, self.config, self.tc = RunDir(run_dir), model_config, train_config
        self.dist, self.fsdp = dist or Distributed(), fsdp
        self.batch_slice = rank_slice(train_config.batch_size, self.dist.rank, self.dist.world_size)
        if fsdp and not torch.distributed.is_initialized():
            raise ValueError("`fsdp` shards the model over processes: launch with torchrun (see docs/distributed.md)")
        self.device = device or self.dist.device()
        self.train_data = make_dataset(corpus.select("train"), train_config, train=True)
        if validation is None:
            valid = corpus.select("valid")
            validation = make_dataset(valid, train_config, train=False) if len(valid) else None
        self.valid_data = validation
        self.collator = make_collator(model_config)
        self.eval_collator = make_collator(model_config, evaluation=True)
        self.skipped_records = corpus.skipped_records  # malformed FASTA records left out
        self.frequencies = amino_acid_frequencies(corpus.select("train"), with_eos=model_config.causal)
        torch.manual_seed(train_config.seed)
        self.model = PerformerLM(model_config).to(self.device)
        self.step = 0
        self.history: list[dict] = []
        self.lock: RunLock | None = None  # the run directory's, taken by start_training; released by fit
        self.resumed = checkpoint is not None
        if checkpoint is not None:
            checkpoint.load_weights(self.model)
        elif init_weights is not None:
            RunDir(init_weights).load_weights(self.model)
        self.dist.check_identical(self._projections(), "random projections")
        self._names = [n for group in parameter_names(self.model) for n in group]  # optimizer numbering
        self.engine = self._wrap()
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, train_config.weight_decay), lr=train_config.lr,
            betas=(train_config.beta1, train_config.beta2), eps=train_config.eps,
        )
        if checkpoint is not None:
            self._restore(checkpoint)
        elif self.dist.rank > 0:
            torch.manual_seed(derived_seed(train_config.seed, "dropout", self.dist.rank))

    def _wrap(self) -> torch.nn.Module:
        """The module the training forward runs through: the model itself, DDP around it, or the model
        sharded in place (each block, then the root with embeddings and the tied head)."""
        if self.fsdp:
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            # Outputs are never modified in place, the case this warning is about.
            warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
            # bf16: parameters gathered and computed in bf16, gradients reduced and weights kept in fp32.
            policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
                if self.tc.precision == "bf16" else MixedPrecisionPolicy()
            for block in self.model.blocks:
                fully_shard(block, mp_policy=policy)
            fully_shard(self.model, mp_policy=policy)
            return self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            # Buffers are the random projections: redrawn identically on every rank, never broadcast
            # (the option's name changed in torch 2.13).
            sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters \
                else "broadcast_buffers"
            return DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                           **{sync: False})
        return self.model

    def _projections(self) -> list[Tensor]:
        return [layer.projection for layer in self.model.favor_layers()]

    # -- state -------------------------------------------------------------------------------------
    def _restore(self, checkpoint: RunDir) -> None:
        tensors, state = checkpoint.read_state()
        if state["optimizer"].get("sharded"):
            # Written by every rank of an FSDP run; read back on any number of processes, sharded or not.
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

            model_state, optimizer_state_ = get_state_dict(self.model, self.optimizer)
            shards = {"model": model_state, "optimizer": optimizer_state_}
            dcp.load(shards, checkpoint_id=checkpoint.sharded)
            set_state_dict(self.model, self.optimizer, model_state_dict=shards["model"], optim_state_dict=shards["optimizer"])
        elif self.fsdp:  # a consolidated checkpoint (single-process layout) into a sharded run
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.model, self.optimizer, by_name(optimizer_state(tensors, state["optimizer"]), self._names),
                                     options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(optimizer_state(tensors, state["optimizer"]))
        self.step = state["step"]
        suffix = f".rank{self.dist.rank}" if self.dist.rank else ""
        if f"rng.torch{suffix}" in tensors:
            torch.set_rng_state(tensors[f"rng.torch{suffix}"])
            if self.device.type == "cuda" and f"rng.cuda{suffix}" in tensors:
                torch.cuda.set_rng_state(tensors[f"rng.cuda{suffix}"])
        else:  # more ranks than the run that wrote the checkpoint: a fresh stream for this one
            torch.manual_seed(derived_seed(self.tc.seed, "dropout", self.dist.rank, self.step))
        self.history = [row for row in self.run.read_metrics() if row.get("step", 0) <= self.step]

    def save(self) -> None:
        """A checkpoint of the whole run (all ranks take part; rank 0 writes); never of non-finite weights."""
        finite = all(bool(torch.isfinite(p.to_local() if hasattr(p, "to_local") else p).all()) for p in self.model.parameters())
        if not all(self.dist.gather(finite)):
            raise TrainingDiverged(f"training diverged at step {self.step}: the weights are no longer finite; they were not "
                                   f"saved and the last checkpoint stays the latest: lower `lr` or raise `warmup_steps`")
        rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None}
        rngs = {}
        for rank, states in enumerate(self.dist.gather(rng)):
            for kind, value in states.items():
                if value is not None:
                    rngs[f"rng.{kind}" + (f".rank{rank}" if rank else "")] = value
        if self.fsdp:
            # Every rank writes its shard of the model and optimizer state into the staged checkpoint
            # (torch.distributed.checkpoint); rank 0 adds the consolidated weights (what `load` reads).
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict

            staged = self.run.staged_checkpoint(self.step, fresh=self.dist.is_main)
            self.dist.barrier()
            model_state, optimizer_state_ = get_state_dict(self.model, self.optimizer)
            dcp.save({"model": model_state, "optimizer": optimizer_state_}, checkpoint_id=staged.sharded)
            weights = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            tensors, meta = {}, {"sharded": True}
        else:
            weights = self.model.state_dict()
            tensors, meta = optimizer_tensors(self.optimizer.state_dict())
        if self.dist.is_main:
            state = {"frequencies": self.frequencies, "world_size": self.dist.world_size, "step": self.step, "optimizer": meta}
            self.run.write_checkpoint(self.step, config=self.config, weights=weights, state_tensors={**tensors, **rngs},
                                      state=state, train_config=self.tc.to_dict(), staged=self.fsdp,
                                      keep_every=self.tc.keep_every)
            self.run.write_frequencies(self.frequencies)
            self.run.write_metrics(self.history)
            plot_training_curves(self.history, self.run.curves)
        self.dist.barrier()

    def validate(self) -> dict:
        """Loss, accuracy and perplexity on the first ``eval_sequences`` validation samples (fixed masks,
        every selected position shown as ``<mask>``: the metric of :func:`evaluate`)."""
        tc = self.tc
        return evaluate_dataset(self.model, self.valid_data, self.eval_collator, batch_size=tc.micro_batch_size,
                                max_sequences=tc.eval_sequences, precision=tc.precision, dist=self.dist, lockstep=self.fsdp)

    # -- one optimizer step --------------------------------------------------------------------------
    def _gradient_sync(self, enabled: bool):
        """Gradient accumulation: reduce gradients across ranks only on the last micro-batch."""
        if self.fsdp:
            self.model.set_requires_gradient_sync(enabled)
        elif self.dist.enabled and not enabled:
            return self.engine.no_sync()
        return contextlib.nullcontext()

    def train_step(self) -> dict:
        tc, step, world = self.tc, self.step, self.dist.world_size
        if self.config.attention == "favor" and self.config.redraw_interval and step > 0 and step % self.config.redraw_interval == 0:
            self.model.redraw_projections(seeded_generator(tc.seed, "redraw", step))
            self.dist.check_identical(self._projections(), "random projections")
        for group in self.optimizer.param_groups:
            group["lr"] = tc.lr_at(step)
        lo, hi = self.batch_slice
        micro = []
        for start in range(lo, hi, tc.micro_batch_size):
            part = self.train_data.step_batch(step, tc.batch_size, start, min(hi, start + tc.micro_batch_size))
            micro.append(self.collator(part.samples, part.generators))
        # Counted on the CPU, before the copies; the micro-batches then all go to the device at once,
        # queued (pinned, non-blocking on a GPU) ahead of the forward passes.
        local_predicted = sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in micro)
        tokens = sum(int((~b["padding_mask"]).sum()) for b in micro)
        micro = [to_device(b, self.device) for b in micro]
        predicted = max(int(self.dist.sum([local_predicted], self.device)[0]), 1)
        # Summed on the device (float64: as exact as Python floats) and read once, with the norm.
        total_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for i, batch in enumerate(micro):
            with self._gradient_sync(i == len(micro) - 1):
                loss, c = lm_loss(self.engine, batch, tc.precision)
                # Normalized by the whole global batch; DDP/FSDP average over ranks, hence the factor.
                (loss * world / predicted).backward()
            total_loss, correct = total_loss + loss.detach().double(), correct + c
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.clip_norm)
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
            grad_norm = grad_norm.full_tensor()
        grad_norm, total_loss, correct = torch.stack([grad_norm.double(), total_loss, correct.double()]).tolist()
        if not math.isfinite(grad_norm):  # the norm is global: every rank stops alike
            what = f"the loss is {total_loss / predicted}" if not math.isfinite(total_loss) else f"the gradient norm is {grad_norm}"
            raise TrainingDiverged(f"training diverged at step {step + 1}: {what}; nothing of this step was applied "
                                   f"and the last checkpoint stays the latest: lower `lr` or raise `warmup_steps`")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        total_loss, correct, tokens = self.dist.sum([total_loss, correct, tokens], self.device)
        return {"loss": total_loss / predicted, "accuracy": correct / predicted,
                "grad_norm": grad_norm, "tokens": int(tokens), "lr": self.optimizer.param_groups[0]["lr"]}

    def fit(self, *, progress: bool = True) -> dict:
        """Train to ``max_steps``, validating, logging and checkpointing on the way; returns the last
        validation. ``progress``: a progress bar on a terminal and, once a few steps are timed, the
        estimated time per step and to the end (stderr). The run directory's lock, if any, is released
        at the end, however training ends."""
        try:
            return self._fit(progress)
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None

    def _fit(self, progress: bool) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        tc, main = self.tc, self.dist.is_main
        if main:
            self.run.path.mkdir(parents=True, exist_ok=True)
            self.run.write_config(self.config)
            self.run.write_train_config(tc.to_dict())
        writer = SummaryWriter(str(self.run.tensorboard), purge_step=self.step) if main else None
        bar = tqdm(total=tc.max_steps, initial=self.step, disable=not (progress and main and sys.stderr.isatty()), unit="step",
                   dynamic_ncols=True)
        self.model.train()
        window_tokens, window_start = 0, time.perf_counter()
        last_valid = None
        timed, timing_start = 0, time.perf_counter()
        try:
            while self.step < tc.max_steps:
                stats = self.train_step()
                timed += 1
                if timed == ETA_AFTER_STEPS and progress and main:
                    per_step = (time.perf_counter() - timing_start) / timed
                    bar.write(f"about {per_step:.2f} s per step: {_duration(per_step * (tc.max_steps - self.step))} to step "
                              f"{tc.max_steps} (validation and checkpoints add to it)", file=sys.stderr)
                window_tokens += stats["tokens"]
                elapsed = time.perf_counter() - window_start
                stats["tokens_per_s"] = window_tokens / max(elapsed, 1e-9)
                row = {"step": self.step, **{f"train/{k}": v for k, v in stats.items()}}
                if self.valid_data is not None and (self.step % tc.eval_every == 0 or self.step == tc.max_steps):
                    last_valid = self.validate()
                    row.update({f"valid/{k}": v for k, v in last_valid.items()})
                if self.step % tc.log_every == 0 or "valid/loss" in row or self.step == tc.max_steps:
                    self.history.append(row)
                    for key, value in row.items():
                        if writer is not None and key != "step":
                            writer.add_scalar(key, value, self.step)
                    window_tokens, window_start = 0, time.perf_counter()
                postfix = {"loss": f"{stats['loss']:.3f}", "acc": f"{stats['accuracy']:.3f}", "tok/s": f"{stats['tokens_per_s']:.0f}"}
                if last_valid:
                    postfix["val_acc"] = f"{last_valid['accuracy']:.3f}"
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)
                if self.step % tc.save_every == 0 or self.step == tc.max_steps:
                    self.save()
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        return last_valid or {}

