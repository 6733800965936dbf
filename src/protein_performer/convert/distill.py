"""Recovering a converted Performer by distillation: the exact model teaches its FAVOR copy.

A pretrained softmax Transformer run with FAVOR keeps its weights but not its outputs when its queries
and keys are large (real ESM-2: median ‖q‖²/√d ≈ 13, where FAVOR+'s variance explodes). The seed
paper's answer is a little fine-tuning. Here the target is the source itself: the student (the FAVOR
conversion, its projections fixed) learns to reproduce the teacher's (the exact conversion's) hidden
state after every layer, and its output distribution where the model has a language-model head.

- Loss per batch: the mean over layers of ``‖h_s − h_t‖² / ‖h_t‖²`` (real positions only), plus
  ``KL(teacher ‖ student)`` per position over the vocabulary when there is a head.
- Data: crops of ``seq_len`` tokens from the corpus's train split; half of each batch as it is
  (embeddings are taken of unmasked proteins), half with 15% of residues as ``<mask>`` (what variant
  scoring and fill-mask show the model).
- Measured every ``eval_every`` steps on the test split (first crops of ``eval_seq_len``, fixed masks): the mean
  per-residue cosine between the student's and the teacher's final hidden states (unmasked input),
  and, with a head, the top-1 agreement and KL at the masked positions.
- AdamW, linear warmup then linear decay to zero; a fixed seed fixes the data, masks and result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor
from torch.nn import functional as F

from ..data import DEFAULT_ALPHABET, DEFAULT_CORPUS_PATH, IGNORE_INDEX, EncodedCorpus, MaskedLMCollator, SingleSequenceDataset
from ..model import PerformerLM
from ..training.config import schedule_factor

RESIDUES = torch.tensor(DEFAULT_ALPHABET.residue_idx)
OPTION_NAMES = {"steps": "distill", "seq_len": "distill_seq_len", "batch_size": "distill_batch_size", "lr": "distill_lr"}


@dataclass(frozen=True)
class DistillSettings:
    """How a converted Performer is distilled; ``steps`` optimizer steps of ``batch_size`` crops."""

    steps: int
    seq_len: int = 256
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 20
    eval_every: int = 0  # 0: ten evaluations over the run
    eval_sequences: int = 64
    eval_seq_len: int = 256  # the held-out crops, the same whatever the training crops
    data: str | None = None  # FASTA (plain or .gz); None: the embedded corpus
    seed: int = 0

    def __post_init__(self) -> None:
        # Named as the convert command's options are (`distill` STEPS, `distill_seq_len`, ...).
        for name in ("steps", "seq_len", "batch_size", "eval_sequences", "eval_seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{OPTION_NAMES.get(name, name)}` must be positive, got {getattr(self, name)}")
        if min(self.seq_len, self.eval_seq_len) < 3:
            raise ValueError(f"`distill_seq_len` must be at least 3 (<cls>, a residue, <eos>), got {self.seq_len}")
        if not self.lr > 0:
            raise ValueError(f"`distill_lr` must be positive, got {self.lr}")
        if self.warmup_steps < 0 or self.eval_every < 0:
            raise ValueError("distillation's `warmup_steps` and `eval_every` must be 0 or more")

    @property
    def evaluation_interval(self) -> int:
        return self.eval_every or max(self.steps // 10, 1)


@dataclass
class Batch:
    """Model inputs ``[B, L]``: ``tokens`` as shown, ``clean`` without masks, where ``masked`` (15%)
    the shown token is ``<mask>`` (in every row here), and the padding."""

    tokens: Tensor
    clean: Tensor
    masked: Tensor
    padding_mask: Tensor


def make_batch(samples, generators, *, mask_rows: str) -> Batch:
    """``mask_rows``: "all", "none" or "odd" (every other row masked, the rest shown clean)."""
    collated = MaskedLMCollator(DEFAULT_ALPHABET, mask_token_prob=1.0, random_token_prob=0.0)(samples, generators)
    masked = collated["labels"] != IGNORE_INDEX
    clean = torch.where(masked, collated["labels"], collated["tokens"])
    rows = {"all": torch.ones(len(clean), dtype=torch.bool), "none": torch.zeros(len(clean), dtype=torch.bool),
            "odd": torch.arange(len(clean)) % 2 == 1}[mask_rows]
    tokens = torch.where(rows[:, None], collated["tokens"], clean)
    return Batch(tokens, clean, masked & rows[:, None], collated["padding_mask"])


def distill_loss(student: PerformerLM, teacher: PerformerLM, batch: Batch) -> Tensor:
    """Mean relative squared error of every layer's hidden state, plus KL(teacher ‖ student) with a head."""
    layers = tuple(range(1, student.config.num_layers + 1))
    head = student.lm_head is not None
    with torch.no_grad():
        target = teacher(batch.tokens, batch.padding_mask, repr_layers=layers, logits=head)
    out = student(batch.tokens, batch.padding_mask, repr_layers=layers, logits=head)
    real = (~batch.padding_mask)[..., None].float()
    loss = sum(((out["representations"][i] - target["representations"][i]).square() * real).sum()
               / (target["representations"][i].square() * real).sum() for i in layers) / len(layers)
    if head:
        keep = ~batch.padding_mask
        loss = loss + F.kl_div(F.log_softmax(out["logits"][keep], -1), F.log_softmax(target["logits"][keep], -1),
                               log_target=True, reduction="batchmean")
    return loss


@torch.no_grad()
def agreement(student: PerformerLM, teacher: PerformerLM, batches: Iterable[Batch]) -> dict:
    """How closely the student follows the teacher: mean per-residue cosine of the final hidden states
    on the clean input; with a head, top-1 agreement and mean KL(teacher ‖ student) at masked positions."""
    cos_sum, residues, same, kl, masked = 0.0, 0, 0, 0.0, 0
    head = student.lm_head is not None
    for batch in batches:
        last = student.config.num_layers
        residue = torch.isin(batch.clean, RESIDUES)
        s = student(batch.clean, batch.padding_mask, repr_layers=(last,), logits=False)["representations"][last]
        t = teacher(batch.clean, batch.padding_mask, repr_layers=(last,), logits=False)["representations"][last]
        cos_sum += float(F.cosine_similarity(s[residue], t[residue], dim=-1).sum())
        residues += int(residue.sum())
        if head and batch.masked.any():
            ls = F.log_softmax(student(batch.tokens, batch.padding_mask)["logits"][batch.masked], -1)
            lt = F.log_softmax(teacher(batch.tokens, batch.padding_mask)["logits"][batch.masked], -1)
            same += int((ls.argmax(-1) == lt.argmax(-1)).sum())
            kl += float(F.kl_div(ls, lt, log_target=True, reduction="sum"))
            masked += int(batch.masked.sum())
    out = {"cosine": cos_sum / max(residues, 1), "residues": residues}
    if head:
        out.update(top1_agreement=same / max(masked, 1), kl=kl / max(masked, 1), masked=masked)
    return out


def evaluation_batches(corpus: EncodedCorpus, settings: DistillSettings) -> list[Batch]:
    """The test split's first ``eval_sequences`` proteins, first crops, fixed masks, batches of 8."""
    test = corpus.select("test")
    if not len(test):
        raise ValueError(f"{settings.data}: none of its proteins falls in the test split (by hash, 2.5%), which "
                         f"distillation is measured on: give a larger FASTA")
    data = SingleSequenceDataset(test.subset(range(min(settings.eval_sequences, len(test)))), settings.eval_seq_len,
                                 train=False, seed=settings.seed)
    indices = list(range(len(data)))
    return [make_batch([data[i] for i in chunk], [data.generator_for(i) for i in chunk], mask_rows="all")
            for chunk in (indices[j : j + 8] for j in range(0, len(indices), 8))]


def warmup_then_decay(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup`` steps, then linear decay to zero at ``total`` (training's schedule)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, partial(schedule_factor, warmup_steps=warmup, max_steps=total,
                                                                schedule="linear", final_ratio=0.0))


def describe(row: dict) -> str:
    """One history row as the line ``convert --distill`` prints."""
    extra = f", top-1 agreement {row['top1_agreement']:.3f}, KL {row['kl']:.4f}" if "kl" in row else ""
    loss = f"loss {row['loss']:.4f}, " if row["loss"] is not None else ""
    return f"step {row['step']}: {loss}cosine to the exact model {row['cosine']:.4f}{extra} ({row['seconds']:.0f} s)"


def distill(student: PerformerLM, teacher: PerformerLM, settings: DistillSettings, *, progress: bool = False,
            log: Callable[[str], None] | None = None) -> list[dict]:
    """Trains ``student`` in place toward ``teacher`` (frozen); returns the history, one row per
    evaluation (step 0 first): ``step``, ``seconds`` (training time so far), ``tokens``, ``loss``
    (mean since the last row) and :func:`agreement`'s numbers. ``log``: one line per evaluation."""
    from tqdm import tqdm

    corpus = EncodedCorpus.from_file(settings.data or DEFAULT_CORPUS_PATH)
    train = SingleSequenceDataset(corpus.select("train"), settings.seq_len, train=True, seed=settings.seed)
    held_out = evaluation_batches(corpus, settings)
    teacher.eval().requires_grad_(False)
    torch.manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(student.parameters(), lr=settings.lr, weight_decay=0.0)
    total = settings.steps
    schedule = warmup_then_decay(optimizer, settings.warmup_steps, total)
    history, seconds, tokens, losses = [], 0.0, 0, []

    def evaluate(step: int) -> None:
        student.eval()
        row = {"step": step, "seconds": round(seconds, 2), "tokens": tokens,
               "loss": sum(losses) / len(losses) if losses else None, **agreement(student, teacher, held_out)}
        student.train()
        history.append(row)
        losses.clear()
        if log is not None:
            log(describe(row))

    evaluate(0)
    bar = tqdm(total=total, unit="step", disable=not progress, dynamic_ncols=True, desc="distill")
    for step in range(total):
        start = time.perf_counter()
        part = train.step_batch(step, settings.batch_size)
        batch = make_batch(part.samples, part.generators, mask_rows="odd")
        loss = distill_loss(student, teacher, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        seconds += time.perf_counter() - start
        tokens += int((~batch.padding_mask).sum())
        losses.append(float(loss.detach()))
        bar.set_postfix({"loss": f"{losses[-1]:.4f}", "tok/s": f"{tokens / seconds:.0f}"}, refresh=False)
        bar.update(1)
        if (step + 1) % settings.evaluation_interval == 0 or step + 1 == total:
            evaluate(step + 1)
    bar.close()
    student.eval()
    return history
