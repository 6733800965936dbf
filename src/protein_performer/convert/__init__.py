"""Run pretrained Transformers as Performers (the seed paper's backwards compatibility).

:func:`convert_model` reads a model trained with exact softmax attention — a run of this project, a
Hugging Face ESM-2 (``EsmForMaskedLM``) or BERT (``BertForMaskedLM``) directory — and writes a
protein-performer checkpoint (``config.json`` + ``model.safetensors``) with FAVOR (or exact) attention
and the same weights. Composes ``model`` and ``rundir``; never imports ``transformers``.

- ``common.py``: formats, reading tensors (safetensors, ``.bin``, shards), vocabulary mapping.
- ``esm.py``, ``bert.py``: the Hugging Face architectures (ESM-2; BERT and RoBERTa); ``own.py``: this
  project's checkpoints.
- ``distill.py``: recovery of a FAVOR conversion by distillation from the exact one (``distill``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..rundir import RunDir, read_json_object
from .bert import convert_bert
from .common import (
    ConversionError,
    Converted,
    build_model,
    detect_format,
    read_tensors,
    read_vocabulary,
    same_path,
)
from .distill import DistillSettings, distill
from .esm import ESM2_VOCABULARY, convert_esm
from .own import read_own


@dataclass
class ConversionReport:
    source_format: str
    config: dict
    parameters: int
    notes: list[str]
    distillation: list[dict] | None = None  # distill()'s history, when distilled


def read_source(source: Path, vocab: Path | None = None) -> tuple[str, Converted]:
    """``(format, converted)`` for a source directory (exact attention, tensors in our names)."""
    kind = detect_format(source)
    if kind == "protein-performer":
        if vocab is not None:
            raise ConversionError("`vocab` applies to Hugging Face sources; a protein-performer checkpoint has our alphabet")
        return kind, read_own(source)
    hf = read_json_object(RunDir(source).config)
    vocabulary = read_vocabulary(source, vocab, ESM2_VOCABULARY if kind == "esm" else None)
    convert = convert_esm if kind == "esm" else convert_bert
    try:
        return kind, convert(hf, read_tensors(source), vocabulary)
    except KeyError as err:
        raise ConversionError(f"{RunDir(source).config} lacks {err.args[0]!r}") from None
    except TypeError as err:  # a value of the wrong type (a string for a size, ...)
        raise ConversionError(f"{RunDir(source).config} has a value of the wrong type ({err})") from None


def convert_model(source: str | Path, out: str | Path, *, attention: str = "favor", kernel: str | None = None,
                  num_features: int | None = None, seed: int = 0, vocab: str | Path | None = None,
                  overwrite: bool = False, distillation: DistillSettings | None = None, progress: bool = False,
                  log: Callable[[str], None] | None = None) -> ConversionReport:
    """Convert ``source`` into ``out`` with ``attention`` ("favor" or "softmax"); FAVOR projections are
    drawn from ``seed``. ``kernel`` / ``num_features`` default to the source's (its own config) or to
    FAVOR+ with M = 256. ``vocab``: the source's vocabulary file when its directory has no vocab.txt.
    ``out`` must be new or empty unless ``overwrite`` (a run's other files would no longer match).

    ``distillation``: train the FAVOR model to reproduce the exact conversion (:func:`distill`) before
    writing it, its projections then fixed (``redraw_interval`` 0: the weights fit these features);
    its history goes to ``out/distillation.jsonl``. ``progress``/``log``: its progress bar and lines."""
    source, out = Path(source), Path(out)
    kind, converted = read_source(source, Path(vocab) if vocab is not None else None)
    if same_path(source, out):
        raise ConversionError(f"`out` {out} is the source directory: write the converted model elsewhere")
    if out.exists() and not out.is_dir():
        raise ConversionError(f"`out` {out} is a file: give a directory for the converted model")
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise ConversionError(f"`out` {out} already holds files: give a new or empty directory (or delete it first)")
    if attention not in ("favor", "softmax"):
        raise ConversionError(f"`attention` must be 'favor' or 'softmax' for a conversion, got {attention!r}")
    if distillation is not None and attention != "favor":
        raise ConversionError("`distill` trains a FAVOR conversion toward the exact one: use it with attention 'favor' "
                              "(the exact conversion already equals the source)")
    exact = dataclasses.replace(converted, config=converted.config.replace(attention="softmax"))
    changes = {"attention": attention, "kernel": kernel, "num_features": num_features,
               "redraw_interval": 0 if distillation is not None else None}
    converted.config = converted.config.replace(**{k: v for k, v in changes.items() if v is not None})
    converted.config.check_fits(8, "converting (the source and the model)")
    if not 0 <= seed < 2**63:
        raise ConversionError(f"`seed` must be an integer from 0 to 2**63 - 1, got {seed}")
    model = build_model(converted, seed)
    history = None
    if distillation is not None:
        history = distill(model, build_model(exact, seed), distillation, progress=progress, log=log)
    target = RunDir(out)
    target.write_model(model.state_dict(), converted.config)
    if kind == "protein-performer":
        target.copy_companions(RunDir(source))
    if history is not None:
        target.write_metrics(history, distillation=True)
    return ConversionReport(kind, converted.config.to_dict(), model.num_parameters(), converted.notes, history)


__all__ = ["ConversionError", "ConversionReport", "DistillSettings", "convert_model", "distill", "read_source"]
