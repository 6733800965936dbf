"""``PerformerConfig``: the model's whole description, saved as ``config.json`` beside the weights."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ..attention import ATTENTIONS as ATTENTION_LAYERS
from ..attention import FEATURE_MAPS, FEATURE_PRECISIONS, KERNELS

# "favor" (Performer), "softmax" (exact: the Transformer baseline), the paper's rivals "local" (sliding
# window), "linear" (elu + 1 features), "reformer" (LSH) and "linformer" (low rank), and "none" (no
# attention at all: the no-context control, each position sees only its own token and position).
ATTENTIONS = (*ATTENTION_LAYERS, "none")
BIDIRECTIONAL_ONLY = ("reformer", "linformer")
POSITIONS = ("rotary", "learned")
OBJECTIVES = ("mlm", "causal")
NORM_POSITIONS = ("pre", "post")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu")


@dataclass
class PerformerConfig:
    vocab_size: int = 30
    pad_idx: int = 0
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    d_ff: int = 512
    dropout: float = 0.1
    attention: str = "favor"  # one of ATTENTIONS: "favor" (Performer), "softmax" (exact: the Transformer baseline), ...
    kernel: str = "softmax"  # FAVOR kernel, see protein_performer.attention.KERNELS
    num_features: int = 256  # M, random features per head
    orthogonal: bool = True
    feature_norm: str = "chi"  # "chi" (unbiased) or "sqrt_d" (regularized)
    redraw_interval: int = 1000  # optimizer steps between projection redraws; 0 = never
    chunk_size: int = 128  # causal FAVOR chunk
    feature_precision: str = "float32"  # dtype of FAVOR's feature products: "float32" or "bf16" (FEATURE_PRECISIONS)
    window: int = 64  # local attention: keys at most this many positions from the query
    bucket_size: int = 32  # reformer: LSH chunk length
    n_hashes: int = 4  # reformer: rounds of hashing
    linformer_k: int = 64  # linformer: rows keys and values are projected to (max_len is its fixed length)
    objective: str = "mlm"  # "mlm" (bidirectional) or "causal" (next token, unidirectional)
    positions: str = "rotary"  # "rotary" (ESM-2; any length) or "learned" (the paper; up to max_len)
    max_len: int = 8192  # learned positions only
    layer_norm_eps: float = 1e-5
    # Architecture variants, so that converted Transformers (ESM-2, BERT) run unchanged; the defaults
    # are this project's own model (ESM-2's layout).
    mask_idx: int = 1
    norm_position: str = "pre"  # "pre": x + f(LN(x)) (ESM-2); "post": LN(x + f(x)) (BERT)
    embed_norm: bool = False  # a LayerNorm on the embedding output (BERT)
    final_norm: bool = True  # a LayerNorm after the last block (pre-LN models)
    activation: str = "gelu"  # feed-forward and LM-head transform: "gelu" (erf), "gelu_tanh", "relu"
    token_dropout: bool = False  # ESM-2: <mask> embeddings zeroed, the rest scaled by 0.88 / (1 - masked share)
    lm_head: bool = True  # False: an encoder without the language-model head (converted classifiers): embeddings only

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # every field is an int, float, str or bool (JSON may say otherwise)
            value, kind = getattr(self, f.name), type(f.default)
            if not (type(value) is kind or (kind is float and type(value) is int)):
                raise ValueError(f"invalid model config: {f.name} must be {kind.__name__}, got {value!r}")
        sizes = ("vocab_size", "d_model", "num_layers", "num_heads", "d_ff", "num_features", "chunk_size", "max_len", "window",
             "bucket_size", "n_hashes", "linformer_k")
        for name in sizes:
            if getattr(self, name) < 1:
                raise ValueError(f"invalid model config: `{name}` must be positive, got {getattr(self, name)}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"invalid model config: `layer_norm_eps` must be positive, got {self.layer_norm_eps}")
        if self.redraw_interval < 0:
            raise ValueError(f"invalid model config: `redraw_interval` must be 0 (never) or more, got {self.redraw_interval}")
        checks = [
            (self.attention in ATTENTIONS, f"attention must be one of {ATTENTIONS}"),
            (self.kernel in KERNELS, f"kernel must be one of {KERNELS}"),
            (self.feature_precision in FEATURE_PRECISIONS, f"feature_precision must be one of {tuple(FEATURE_PRECISIONS)}"),
            (self.feature_precision == "float32" or not FEATURE_MAPS[self.kernel].signed,
             f"feature_precision {self.feature_precision} is unsafe for the signed {self.kernel} features: use float32"),
            (self.positions in POSITIONS, f"positions must be one of {POSITIONS}"),
            (not (self.attention in BIDIRECTIONAL_ONLY and self.objective == "causal"),
             f"{self.attention} attention is bidirectional only (see protein_performer.attention.baselines): use `objective` mlm"),
            (self.attention != "linformer" or self.positions == "learned",
             "linformer attention computes queries and keys itself, so rotary positions cannot act on them: use `positions` learned"),
            (self.objective in OBJECTIVES, f"objective must be one of {OBJECTIVES}"),
            (self.norm_position in NORM_POSITIONS, f"norm_position must be one of {NORM_POSITIONS}"),
            (self.activation in ACTIVATIONS, f"activation must be one of {ACTIVATIONS}"),
            (self.d_model % self.num_heads == 0, "d_model must be divisible by num_heads"),
            ((self.d_model // self.num_heads) % 2 == 0 or self.positions != "rotary", "rotary positions need an even head dim"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (0 <= self.pad_idx < self.vocab_size and 0 <= self.mask_idx < self.vocab_size, "pad_idx and mask_idx must be < vocab_size"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"invalid model config: {message}")

    def num_values(self) -> int:
        """Numbers the model holds, parameters and FAVOR projections (``num_features × d_model`` per
        layer): what its memory is made of, known before anything is allocated."""
        e, f, v, n = self.d_model, self.d_ff, self.vocab_size, self.num_layers
        attention = {"none": 0, "reformer": 3 * e * e + 3 * e + 2 * e,  # shared qk
                     "linformer": 4 * e * e + e + 2 * self.max_len * self.linformer_k + 2 * e}.get(self.attention, 4 * e * e + 4 * e + 2 * e)
        block = attention + 2 * e * f + f + e + 2 * e + (self.num_features * e if self.attention == "favor" else 0)
        embeddings = v * e + (self.max_len * e if self.positions == "learned" else 0) + (2 * e if self.embed_norm else 0)
        return embeddings + n * block + (e * e + 3 * e + v) + (2 * e if self.final_norm else 0)

    def check_fits(self, bytes_per_value: int, what: str) -> None:
        """``ValueError`` up front when ``bytes_per_value`` bytes per :meth:`num_values` exceed this
        machine's memory (instead of a process that swaps for hours or is killed)."""
        import os

        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return
        need = self.num_values() * bytes_per_value
        if need > memory:
            raise ValueError(f"this model holds about {self.num_values():,} numbers: {what} needs at least {need / 2**30:.0f} GiB, "
                             f"more than this machine's {memory / 2**30:.0f} GiB: choose fewer `num_layers`, a smaller "
                             f"`d_model` or fewer `num_features`")

    @property
    def causal(self) -> bool:
        return self.objective == "causal"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> PerformerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**values)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PerformerConfig:
        """``path`` as written by :meth:`save`; ``FileNotFoundError`` / ``ValueError`` naming the file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: give a model config JSON file")
        try:
            values = json.loads(path.read_text())
            if not isinstance(values, dict):
                raise ValueError(f"it holds {type(values).__name__}, not a JSON object")
            return cls.from_dict(values)
        except ValueError as err:  # JSONDecodeError, unknown keys, invalid values
            raise ValueError(f"{path} is not a valid model config ({err})") from None

    def replace(self, **changes) -> PerformerConfig:
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, dict] = {
    # The demo: trains in minutes on 2 CPU cores.
    "tiny": dict(d_model=128, num_layers=2, num_heads=4, d_ff=512, num_features=64),
    "small": dict(d_model=256, num_layers=6, num_heads=8, d_ff=1024, num_features=128),
    # arXiv 2009.14794 §4.4 (from ProGen): 36 layers, 8 heads, d_model 512, d_ff 1024, M = 256.
    "paper": dict(d_model=512, num_layers=36, num_heads=8, d_ff=1024, num_features=256, positions="learned", max_len=8192),
}


def preset(name: str, **overrides) -> PerformerConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PerformerConfig(**{**PRESETS[name], **overrides})
