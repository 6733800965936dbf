"""What every conversion shares: the source directory's format, its tensors, its vocabulary mapped onto
ours, and the converted model written as a checkpoint that :func:`protein_performer.load` reads.

Sources are read as files (``config.json``, safetensors or ``.bin``, sharded or not): converting never
imports ``transformers``. ``.bin`` files are opened with ``torch.load(weights_only=True)`` only, which
refuses pickled code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..data import DEFAULT_ALPHABET, RESIDUE_LETTERS
from ..model import PerformerConfig, PerformerLM
from ..rundir import ROTARY_FREQUENCIES, TIED, WEIGHTS, RunDir, read_json_object, read_safetensors

# Hugging Face save_pretrained weight files, in the order they are looked for (its safetensors file is
# named as ours).
WEIGHT_FILES = (WEIGHTS, f"{WEIGHTS}.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# Our special tokens and the names other vocabularies give them (ESM-2's, BERT's, RoBERTa's).
SPECIAL_NAMES = {
    "<pad>": ("<pad>", "[PAD]"),
    "<mask>": ("<mask>", "[MASK]"),
    "<cls>": ("<cls>", "[CLS]", "<s>"),
    "<eos>": ("<eos>", "[SEP]", "</s>"),
    "<unk>": ("<unk>", "[UNK]"),
}


class ConversionError(ValueError):
    """The source cannot be converted; the message says why in one line."""


@dataclass
class Converted:
    """A source mapped onto :class:`PerformerLM`: its config (exact attention), the model's tensors by
    name (without random projections), and notes for the user (vocabulary gaps, ignored weights)."""

    config: PerformerConfig
    tensors: dict[str, Tensor]
    notes: list[str] = field(default_factory=list)


def detect_format(directory: Path) -> str:
    """``"protein-performer"`` (a run or converted model of this project), ``"esm"``, ``"bert"`` or
    ``"roberta"`` (Hugging Face ``save_pretrained`` directories), from ``config.json``."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory: give a model directory with config.json and weights")
    path = RunDir(directory).config  # Hugging Face names its config as we do
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: give a protein-performer run or a Hugging Face save_pretrained directory")
    config = read_json_object(path)
    if "model_type" in config:
        if config["model_type"] in ("esm", "bert", "roberta"):
            return config["model_type"]
        raise ConversionError(f"{path}: model_type {config['model_type']!r} is not supported; convert reads ESM-2 "
                              f"(EsmForMaskedLM, EsmForSequenceClassification, EsmModel), BERT (BertForMaskedLM), "
                              f"RoBERTa (RobertaForMaskedLM) and protein-performer checkpoints")
    if {"d_model", "attention", "num_layers"} <= set(config):
        return "protein-performer"
    raise ConversionError(f"{path} is neither a Hugging Face config (no model_type) nor a protein-performer config")


def _load_weights(path: Path) -> dict[str, Tensor]:
    """One weight file: safetensors, or a ``.bin`` through ``torch.load(weights_only=True)``."""
    if path.name.endswith(".safetensors"):
        return read_safetensors(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # UnpicklingError: pickled code (refused) or not a PyTorch file at all
        raise ConversionError(f"{path} could not be read as plain tensors: it is damaged, or holds pickled objects "
                              f"(refused: they can run code); save it as safetensors instead") from None


def read_tensors(directory: Path) -> dict[str, Tensor]:
    """All tensors of a Hugging Face directory: ``model.safetensors``, ``pytorch_model.bin`` or their
    sharded forms (``*.index.json`` naming the shards), safetensors first."""
    for name in WEIGHT_FILES:
        path = directory / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return _load_weights(path)
        shards = sorted(set(read_json_object(path).get("weight_map", {}).values()))
        if not shards:
            raise ConversionError(f"{path} has no weight_map")
        tensors: dict[str, Tensor] = {}
        for shard in shards:
            shard_path = directory / shard
            if not shard_path.is_file():
                raise FileNotFoundError(f"{shard_path} not found (named in {path})")
            tensors.update(_load_weights(shard_path))
        return tensors
    raise FileNotFoundError(f"no weights in {directory}: expected one of {', '.join(WEIGHT_FILES)}")


def read_vocabulary(directory: Path, vocab: Path | None, default: tuple[str, ...] | None) -> list[str]:
    """The source's tokens, index = id: ``vocab``, else ``directory/vocab.txt``, else
    ``directory/vocab.json`` (RoBERTa's: token → id), else ``default`` (a format's standard alphabet,
    when it has one). A ``.txt`` vocabulary has one token per line."""
    candidates = [vocab] if vocab is not None else [directory / "vocab.txt", directory / "vocab.json"]
    for path in candidates:
        if path.is_file():
            return _json_vocabulary(path) if path.suffix == ".json" else \
                [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if vocab is not None:
        raise FileNotFoundError(f"{vocab} not found")
    if default is None:
        raise FileNotFoundError(f"no vocab.txt or vocab.json in {directory}: give the source's vocabulary with `vocab` FILE "
                                f"(one token per line)")
    return list(default)


def _json_vocabulary(path: Path) -> list[str]:
    ids = read_json_object(path)
    if sorted(ids.values()) != list(range(len(ids))):
        raise ConversionError(f"{path} does not map its tokens to the ids 0 to {len(ids) - 1} once each")
    return sorted(ids, key=ids.__getitem__)


def vocabulary_rows(source_tokens: list[str]) -> tuple[list[int], list[str]]:
    """For each of our tokens (index = our id), the source row that carries it, and notes.

    Specials are matched by their usual names (``[CLS]`` = ``<cls>``, ...), letters by letter; one of
    our letters the source lacks takes the source's unknown-token row. Source tokens we have no place
    for (ESM's ``.``, ``-``, ``<null_1>``) are dropped: we never predict them."""
    index: dict[str, int] = {}
    for i, token in enumerate(source_tokens):
        index.setdefault(token, i)
    rows: list[int] = []
    missing: list[str] = []
    for token in DEFAULT_ALPHABET.tokens:
        names = SPECIAL_NAMES.get(token, (token,))
        row = next((index[n] for n in names if n in index), None)
        if row is None and token in RESIDUE_LETTERS:
            missing.append(token)
            row = next((index[n] for n in SPECIAL_NAMES["<unk>"] if n in index), None)
        if row is None:
            raise ConversionError(f"the source vocabulary has no {token} token (tokens: {' '.join(source_tokens)})")
        rows.append(row)
    notes = []
    if missing:
        notes.append(f"the source has no {', '.join(missing)}: {'these letters take' if len(missing) > 1 else 'it takes'} "
                     f"the source's unknown-token row")
    kept = set(rows)
    dropped = [t for i, t in enumerate(source_tokens) if i not in kept]
    if dropped:
        notes.append(f"source tokens without a place in our alphabet, dropped: {' '.join(dropped)}")
    return rows, notes


class SourceTensors:
    """A source's tensors, taken by name; a missing one is a :class:`ConversionError` naming it."""

    def __init__(self, tensors: dict[str, Tensor], kind: str):
        self.tensors = {_modern_name(n): t for n, t in tensors.items()}
        self.kind, self.used = kind, set()

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def __call__(self, name: str) -> Tensor:
        if name not in self.tensors:
            raise ConversionError(f"tensor {name} not found: not a complete {self.kind} checkpoint")
        self.used.add(name)
        return self.tensors[name].float()

    def ignore(self, name: str) -> None:
        """Count ``name`` as accounted for without using it (the caller says why, in a note)."""
        self.used.add(name)

    def linear(self, source: str, target: str) -> dict[str, Tensor]:
        """``source.weight``/``.bias`` (a Linear or LayerNorm) as ``target.weight``/``.bias``."""
        return {f"{target}.weight": self(f"{source}.weight"), f"{target}.bias": self(f"{source}.bias")}

    def attention(self, prefix: str, target: str) -> dict[str, Tensor]:
        """Separate ``query``/``key``/``value`` Linears under ``prefix`` as our fused ``in_proj``."""
        names = [f"{prefix}.{n}" for n in ("query", "key", "value")]
        return {f"{target}.{kind}": torch.cat([self(f"{n}.{kind}") for n in names]) for kind in ("weight", "bias")}

    def ignored_note(self, body: tuple[str, ...]) -> list[str]:
        """One note naming the groups of source tensors the conversion does not use (other heads).
        An unused tensor under ``body`` (the encoder and embeddings) means config.json describes less
        model than the weights hold (e.g. fewer layers): refused, not silently truncated."""
        unused = [n for n in self.tensors if n not in self.used and not n.endswith(_BUFFERS)]
        stray = [n for n in unused if n.startswith(body)]
        if stray:
            raise ConversionError(f"config.json does not account for {len(stray)} {self.kind} tensors (e.g. {stray[0]}): "
                                  f"it and the weights disagree (num_hidden_layers?)")
        groups = sorted({".".join(n.split(".")[:2]) for n in unused})
        return [f"not used (not part of the masked LM): {', '.join(g + '.*' for g in groups)}"] if groups else []


_BUFFERS = ("position_ids",)  # a buffer some versions save: 0, 1, 2, ...
# LayerNorm parameters under their TensorFlow names, as some checkpoints (and transformers 5's
# save_pretrained of ESM) store them; transformers reads both.
_LEGACY_NAMES = {"gamma": "weight", "beta": "bias"}


def _modern_name(name: str) -> str:
    stem, _, last = name.rpartition(".")
    return f"{stem}.{_LEGACY_NAMES[last]}" if last in _LEGACY_NAMES else name


def tied_decoder(weights: SourceTensors, decoder: str, embedding: Tensor) -> None:
    """Our LM head is tied to the token embedding: refuse a source whose decoder is not."""
    if decoder in weights and not torch.equal(weights(decoder), embedding):
        raise ConversionError(f"{decoder} differs from the token embedding (untied output embedding): "
                              f"protein-performer ties its LM head to the embedding")


def build_model(converted: Converted, seed: int) -> PerformerLM:
    """A :class:`PerformerLM` with the converted tensors; FAVOR projections drawn from ``seed``."""
    model = PerformerLM(converted.config)
    expected = {k: v for k, v in model.state_dict().items() if not k.endswith(".attn.projection") and k != TIED}
    missing = sorted(set(expected) - set(converted.tensors) - {ROTARY_FREQUENCIES})
    unexpected = sorted(set(converted.tensors) - set(expected))
    if missing or unexpected:
        raise ConversionError(f"converted tensors do not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, tensor in converted.tensors.items():
        if tensor.shape != expected[name].shape:
            raise ConversionError(f"{name}: converted shape {tuple(tensor.shape)}, the model's {tuple(expected[name].shape)}")
    model.load_state_dict(converted.tensors, strict=False)
    model.redraw_projections(torch.Generator().manual_seed(seed))
    return model.eval()


def same_path(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and os.path.samefile(a, b)
