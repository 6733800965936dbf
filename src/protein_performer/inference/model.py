"""``ProteinLanguageModel``: a trained :class:`PerformerLM` with its alphabet, in the shapes users know
from fair-esm and Hugging Face — per-residue log-probabilities, embeddings, fill-mask, masked-marginal
variant scores and pseudo-perplexity — at any length (no 1022-residue limit, no cropping).

Conventions, for every method:

- A sequence is a string of amino-acid letters (either case; the 20 standard plus ``BOUXZ``). It is
  wrapped as ``<cls> residues <eos>``; a letter outside the alphabet is a ``ValueError`` naming its
  1-based position.
- Residue ``i``'s distribution is read at token ``i + 1`` (the residue itself) for a bidirectional (masked-LM)
  model and at token ``i`` (the one before it) for a causal model (``config.causal``): a causal model
  sees only the residues to the left.
- Log-probabilities over amino acids are renormalized over the 20 standard ones, columns in the order
  ``ACDEFGHIKLMNPQRSTVWY`` (:data:`~protein_performer.data.STANDARD_AMINO_ACIDS`).
- Many sequences are sorted by length and run in batches of at most ``tokens_per_batch`` tokens
  (padding included); a sequence longer than the budget runs alone, whole.

Shapes: ``L`` residues, ``E`` model width, ``V`` vocabulary, ``B`` sequences in a batch.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..data import DEFAULT_ALPHABET, STANDARD_AMINO_ACIDS, Alphabet
from ..devices import resolve_device
from ..model import PerformerConfig, PerformerLM
from .mutations import Mutant, parse_mutant

DEFAULT_TOKENS_PER_BATCH = 16384
SCORING_METHODS = ("masked-marginal", "wt-marginal", "pseudo-likelihood")  # ESM-1v's names
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class MaskPrediction:
    """The ``top_k`` standard amino acids for one ``<mask>`` at 1-based ``position``, most likely first."""

    position: int
    residues: tuple[str, ...]
    probabilities: tuple[float, ...]

    def as_dict(self) -> dict:
        predictions = [{"residue": r, "probability": p} for r, p in zip(self.residues, self.probabilities)]
        return {"position": self.position, "predictions": predictions}


def length_batches(lengths: Sequence[int], tokens_per_batch: int, *, extra_tokens: int = 2) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches, longest first (an out-of-memory shows at once).

    A batch of ``n`` sequences padded to its longest, ``m``, costs ``n * (m + extra_tokens)`` tokens and
    stays within ``tokens_per_batch``; a sequence over the budget on its own gets a batch of one."""
    if tokens_per_batch < 1:
        raise ValueError(f"tokens_per_batch must be positive, got {tokens_per_batch}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * (lengths[batches[-1][0]] + extra_tokens) <= tokens_per_batch:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class ProteinLanguageModel(nn.Module):
    """A :class:`PerformerLM` (``.model``) with its ``.alphabet`` and ``.config``; always in eval mode
    for the methods below, which run under ``torch.no_grad``.

    >>> plm = protein_performer.load("runs/train")
    >>> plm.residue_log_probs("MKTAYIAKQR").shape      # [L, 20]
    >>> plm.embed(["MKTAYIAKQR", "GSHM"], layers=-1)  # [[L, E], [L, E]]
    """

    def __init__(self, model: PerformerLM, alphabet: Alphabet = DEFAULT_ALPHABET):
        super().__init__()
        if model.config.vocab_size != len(alphabet):
            raise ValueError(f"the model's vocabulary has {model.config.vocab_size} tokens, the alphabet {len(alphabet)}")
        self.model = model.eval()
        self.alphabet = alphabet
        self.source: Path | None = None  # the directory it was loaded from, if any
        self._standard = torch.tensor(alphabet.standard_idx)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> ProteinLanguageModel:
        """Load a directory with ``config.json`` + ``model.safetensors`` (a training run's directory)
        onto ``device`` (:func:`~protein_performer.devices.resolve_device`: default the GPU when there
        is one). ``FileNotFoundError`` / ``ValueError`` name the file, or the device, and the fix."""
        from ..rundir import load_model

        target = resolve_device(device)  # a bad device fails before the weights are read
        plm = cls(load_model(path)).to(target).eval()
        plm.source = Path(path)
        return plm

    # ---- basics ------------------------------------------------------------------------------------
    @property
    def config(self) -> PerformerConfig:
        return self.model.config

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    @property
    def embed_dim(self) -> int:
        return self.config.d_model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def forward(self, tokens: Tensor, padding_mask: Tensor | None = None, repr_layers: tuple[int, ...] = ()) -> dict:
        """The wrapped model's forward: tokens ``[B, T]`` → ``{"logits": [B, T, V], "representations": ...}``."""
        return self.model(tokens, padding_mask, repr_layers)

    def resolve_layers(self, layers: int | Sequence[int]) -> tuple[int, ...]:
        """Layer indices (``0`` = embedding, ``num_layers`` = final normed state; negative counts from
        the end, ``-1`` = final) → distinct non-negative indices, in the order given."""
        n = self.num_layers
        resolved: list[int] = []
        for layer in [layers] if isinstance(layers, numbers.Integral) else list(layers):
            layer = int(layer)
            if not -(n + 1) <= layer <= n:
                raise ValueError(f"layer {layer} does not exist: this model has layers 0..{n} (or -{n + 1}..-1; -1 is the last)")
            absolute = layer % (n + 1)
            if absolute not in resolved:
                resolved.append(absolute)
        if not resolved:
            raise ValueError("no layers given")
        return tuple(resolved)

    def tokenize(self, sequence: str, *, allow_mask: bool = False) -> Tensor:
        """``<cls> residues <eos>`` ids ``[L + 2]``: :meth:`Alphabet.tokenize <protein_performer.data.Alphabet.tokenize>`."""
        return self.alphabet.tokenize(sequence, allow_mask=allow_mask)

    def _prediction_index(self, token_index: Tensor | int) -> Tensor | int:
        """Where the logits for the token at ``token_index`` are read: itself, or (causal) the one before."""
        return token_index - 1 if self.config.causal else token_index

    # ---- per-residue probabilities -----------------------------------------------------------------
    @torch.no_grad()
    def residue_log_probs(self, sequence: str, *, precision: str = "fp32") -> Tensor:
        """Log-probabilities ``[L, 20]`` of the 20 standard amino acids (``ACDEFGHIKLMNPQRSTVWY``) at
        each position, from one unmasked forward pass; each row sums to 1 in probability."""
        tokens = self.tokenize(sequence).to(self.device)
        length = len(tokens) - 2
        with _autocast(precision, self.device):
            logits = self.model(tokens[None])["logits"][0].float()  # [L + 2, V]
        start = self._prediction_index(1)
        rows = logits[start : start + length]
        return F.log_softmax(rows[:, self._standard.to(rows.device)], dim=-1).cpu()

    @torch.no_grad()
    def fill_mask(self, sequence: str, top_k: int = 5, *, precision: str = "fp32") -> list[MaskPrediction]:
        """For each ``<mask>`` in ``sequence`` (e.g. ``"MKT<mask>LL"``), the ``top_k`` standard amino
        acids and their probabilities (renormalized over the 20), most likely first. Positions are
        1-based, ``<mask>`` counting as one residue."""
        if not 1 <= top_k <= len(STANDARD_AMINO_ACIDS):
            raise ValueError(f"top_k must be between 1 and {len(STANDARD_AMINO_ACIDS)}, got {top_k}")
        tokens = self.tokenize(sequence, allow_mask=True).to(self.device)
        masked = torch.nonzero(tokens == self.alphabet.mask_idx).flatten()
        if masked.numel() == 0:
            raise ValueError("no <mask> in the sequence: write <mask> where a residue should be predicted, e.g. MKT<mask>LL")
        with _autocast(precision, self.device):
            logits = self.model(tokens[None])["logits"][0].float()
        probs = F.softmax(logits[self._prediction_index(masked)][:, self._standard.to(logits.device)], dim=-1)
        values, indices = probs.topk(top_k, dim=-1)  # sorted, largest first
        return [
            MaskPrediction(int(t), tuple(STANDARD_AMINO_ACIDS[j] for j in idx.tolist()), tuple(v.tolist()))
            for t, idx, v in zip(masked.tolist(), indices.cpu(), values.cpu())
        ]

    @torch.no_grad()
    def _masked_logits(self, tokens: Tensor, token_indices: Sequence[int], tokens_per_batch: int, precision: str,
                       progress: bool = False) -> Tensor:
        """Logits ``[P, V]`` for each token index in turn replaced by ``<mask>`` (one copy of the
        sequence per index, batched by the token budget); ``progress``: a bar over the positions."""
        from tqdm import tqdm

        if tokens_per_batch < 1:
            raise ValueError(f"tokens_per_batch must be positive, got {tokens_per_batch}")
        per_batch = max(1, tokens_per_batch // len(tokens))
        out = [torch.zeros(0, self.config.vocab_size, device=self.device)]
        bar = tqdm(total=len(token_indices), unit="site", desc="masked passes", disable=not progress, leave=False)
        for start in range(0, len(token_indices), per_batch):
            idx = torch.tensor(token_indices[start : start + per_batch], device=self.device)
            batch = tokens.to(self.device).repeat(len(idx), 1)  # [b, T]
            rows = torch.arange(len(idx), device=self.device)
            batch[rows, idx] = self.alphabet.mask_idx
            with _autocast(precision, self.device):
                logits = self.model(batch)["logits"]
            out.append(logits[rows, idx].float())
            bar.update(len(idx))
        bar.close()
        return torch.cat(out)

    @torch.no_grad()
    def masked_log_probs(self, sequence: str, positions: Sequence[int], *, tokens_per_batch: int = DEFAULT_TOKENS_PER_BATCH,
                         precision: str = "fp32", progress: bool = False) -> Tensor:
        """Masked marginals ``[P, 20]``: log-probabilities of the 20 standard amino acids at each 0-based
        position with that position masked (one forward pass per position, batched). A causal model
        is never trained on ``<mask>``: its rows are the unmasked left-context distributions, i.e.
        rows of :meth:`residue_log_probs`."""
        tokens = self.tokenize(sequence)
        length = len(tokens) - 2
        for p in positions:
            if not 0 <= p < length:
                raise ValueError(f"position {p} (0-based) is outside the sequence of {length} residues")
        if self.config.causal:
            return self.residue_log_probs(sequence, precision=precision)[list(positions)]
        logits = self._masked_logits(tokens, [p + 1 for p in positions], tokens_per_batch, precision, progress)
        return F.log_softmax(logits[:, self._standard.to(logits.device)], dim=-1).cpu()

    @torch.no_grad()
    def score_mutations(self, sequence: str, mutants: Sequence[Mutant | str], *, method: str = "masked-marginal",
                        tokens_per_batch: int = DEFAULT_TOKENS_PER_BATCH, precision: str = "fp32",
                        progress: bool = False) -> Tensor:
        """Variant scores ``[N]`` by ESM-1v's definitions (Meier et al. 2021); ``"A23G"``,
        ``"A23G:L45P"`` or :class:`Mutant`; a multi-mutant scores the sum of its sites (additive).

        - ``masked-marginal``: ``Σ_sites log p(mutant) − log p(wild type)``, each site masked in the
          wild-type sequence: one forward pass per distinct mutated position, never per variant.
        - ``wt-marginal``: the same from one unmasked forward pass of the wild type, for all variants.
        - ``pseudo-likelihood``: ``PLL(mutant sequence) − PLL(wild type)``, ``PLL = Σ_i log p(x_i | x_−i)``
          with each residue masked in turn: L forward passes per variant (slow; exact for multi-mutants).

        A wild-type letter that does not match the sequence raises
        :class:`~protein_performer.inference.mutations.MutationError`."""
        if method not in SCORING_METHODS:
            raise ValueError(f"`method` must be one of {', '.join(SCORING_METHODS)}, got {method!r}")
        self.tokenize(sequence)  # invalid letters first: they are the clearer error
        parsed = [m if isinstance(m, Mutant) else parse_mutant(m) for m in mutants]
        for mutant in parsed:
            mutant.check(sequence)
        positions = sorted({s.index for m in parsed for s in m.substitutions})
        if not positions:
            return torch.zeros(0)
        if method == "pseudo-likelihood":
            reference = self._pseudo_log_likelihood(sequence, tokens_per_batch, precision)
            return torch.tensor([self._pseudo_log_likelihood(m.apply(sequence), tokens_per_batch, precision) - reference
                                 for m in parsed], dtype=torch.float64)
        if method == "wt-marginal":
            log_probs = self.residue_log_probs(sequence, precision=precision)[positions]
        else:
            log_probs = self.masked_log_probs(sequence, positions, tokens_per_batch=tokens_per_batch, precision=precision,
                                              progress=progress)
        row = {p: i for i, p in enumerate(positions)}
        column = {a: i for i, a in enumerate(STANDARD_AMINO_ACIDS)}
        site = {(p, a): float(log_probs[i, column[a]]) for p, i in row.items() for a in STANDARD_AMINO_ACIDS}
        scores = [sum(site[s.index, s.mutant] - site[s.index, s.wild_type] for s in m.substitutions) for m in parsed]
        return torch.tensor(scores, dtype=torch.float64)

    def _pseudo_log_likelihood(self, sequence: str, tokens_per_batch: int, precision: str) -> float:
        """``Σ_i log p(x_i | x_−i)`` over the residues, each masked in turn."""
        column = {a: i for i, a in enumerate(STANDARD_AMINO_ACIDS)}
        log_probs = self.masked_log_probs(sequence, list(range(len(sequence))), tokens_per_batch=tokens_per_batch,
                                          precision=precision)
        # A letter outside the 20 (X, ...) is the same in the wild type and every variant: left out of both sums.
        return float(sum(log_probs[i, column[a]] for i, a in enumerate(sequence.upper()) if a in column))

    @torch.no_grad()
    def pseudo_perplexity(self, sequence: str, *, tokens_per_batch: int = DEFAULT_TOKENS_PER_BATCH,
                          precision: str = "fp32", progress: bool = False) -> float:
        """``exp(−mean_i log p(x_i | x_without_i))`` with each residue masked in turn (L forward passes,
        batched; Salazar et al. 2020), over the whole vocabulary. For a causal model: the ordinary
        perplexity ``exp(−mean_i log p(x_i | x_<i))`` over the residues, from one pass."""
        tokens = self.tokenize(sequence)
        length = len(tokens) - 2
        if self.config.causal:
            with _autocast(precision, self.device):
                logits = self.model(tokens[None].to(self.device))["logits"][0, :length].float()
        else:
            logits = self._masked_logits(tokens, list(range(1, length + 1)), tokens_per_batch, precision, progress)
        nll = F.cross_entropy(logits, tokens[1 : length + 1].to(logits.device))
        return math.exp(float(nll))

    # ---- embeddings --------------------------------------------------------------------------------
    @torch.no_grad()
    def iter_representations(self, sequences: Sequence[str], layers: int | Sequence[int] = -1, *,
                             tokens_per_batch: int = DEFAULT_TOKENS_PER_BATCH,
                             precision: str = "fp32") -> Iterator[tuple[int, dict[int, Tensor]]]:
        """Yields ``(index into sequences, {layer: [L, E] float32 on CPU})`` for every sequence, longest
        batch first; ``<cls>``/``<eos>`` excluded, no cropping. All sequences are validated first."""
        resolved = self.resolve_layers(layers)
        rows = [self.tokenize(s) for s in sequences]
        for batch in length_batches([len(r) - 2 for r in rows], tokens_per_batch):
            tokens = self.alphabet.pad([rows[i] for i in batch])[0].to(self.device)
            with _autocast(precision, self.device):
                out = self.model(tokens, repr_layers=resolved, logits=False)["representations"]
            for b, i in enumerate(batch):
                length = len(rows[i]) - 2
                # clone: a slice would keep the whole padded batch alive
                yield i, {layer: out[layer][b, 1 : length + 1].float().cpu().clone() for layer in resolved}
            del out, tokens

    def embed(self, sequences: str | Sequence[str], layers: int | Sequence[int] = -1, *, per_residue: bool = True,
              tokens_per_batch: int = DEFAULT_TOKENS_PER_BATCH, precision: str = "fp32"):
        """Embeddings of one sequence or a list of them, in input order.

        Per sequence: ``[L, E]`` (``per_residue=True``) or its mean over residues ``[E]``; for a list
        of ``layers``, a dict ``{layer: tensor}`` keyed by non-negative layer index instead. ``layers``:
        ``0`` = token embedding, ``num_layers`` (= ``-1``) = the final normed hidden state."""
        single = isinstance(sequences, str)
        batch = [sequences] if single else list(sequences)
        results: list = [None] * len(batch)
        for i, reps in self.iter_representations(batch, layers, tokens_per_batch=tokens_per_batch, precision=precision):
            if not per_residue:
                reps = {layer: r.mean(0) for layer, r in reps.items()}
            results[i] = reps[self.resolve_layers(layers)[0]] if isinstance(layers, numbers.Integral) else reps
        return results[0] if single else results

    @torch.no_grad()
    def attention_maps(self, sequence: str) -> Tensor:
        """Attention of every layer and head between residues ``[layers, H, L, L]`` (``<cls>``/``<eos>``
        rows and columns removed). Quadratic in L: for windows up to a few thousand residues."""
        tokens = self.tokenize(sequence).to(self.device)
        maps = self.model.attention_maps(tokens[None])[0]  # [layers, H, L + 2, L + 2]
        return maps[..., 1:-1, 1:-1].float().cpu()


def load(path: str | os.PathLike, device: str | torch.device | None = None) -> ProteinLanguageModel:
    """A trained model directory (``config.json`` + ``model.safetensors``) → :class:`ProteinLanguageModel`
    in eval mode on ``device`` (default: CUDA when available, else the CPU), with ``.alphabet`` and ``.config``."""
    return ProteinLanguageModel.from_pretrained(path, device)
