"""Each analysis end to end: inputs in, ``NAME.png`` + ``NAME.json`` out (what the CLI's ``analyze``
commands and ``benchmarks/analyses.py`` call). Every function returns the JSON it wrote.

An analysis of a model records the weights it was made from (``weights``: path, fingerprint and
training step, :func:`weights_record`), so that a report can tell whether it belongs to its run."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data import DEFAULT_ALPHABET, DEFAULT_CORPUS_PATH, EncodedCorpus, FastaReader
from ..rundir import RunDir, atomic_write
from . import approximation as approx
from .attention_maps import BPT1_BOVIN, head_statistics, sequence_attention_maps
from .figures import plot_approximation, plot_attention_maps, plot_similarity
from .similarity import attention_similarity


def _write_json(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(result, indent=1) + "\n")


def output_folder(out: str | os.PathLike) -> Path:
    """``out``, created up front so that a path that cannot be a folder fails before any work."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(f"{out} is a file: `out` takes a folder") from None
    return out


def file_stem(name: str, option: str) -> str:
    """A name used in output file names; one with a path separator would write elsewhere."""
    if not name or any(sep in name for sep in ("/", "\\", os.sep)) or name in (".", ".."):
        raise ValueError(f"`{option}` {name!r} cannot be part of a file name: give a name without path separators")
    return name


def weights_record(checkpoint: str | os.PathLike, plm=None) -> dict:
    """``{"checkpoint", "fingerprint", "step"}`` of a model directory: the fingerprint of its weights and
    config (the one ``embed`` records), and the training step of a run or checkpoint (None when unknown,
    e.g. a converted model). ``plm``: the model already loaded from it."""
    from ..inference import load
    from ..inference.embed_h5 import model_fingerprint

    path = Path(checkpoint)
    latest = RunDir(path).latest_checkpoint()
    name = (latest.path if latest is not None else path).name
    step = int(name.removeprefix("step-")) if re.fullmatch(r"step-\d+", name) else None
    return {"checkpoint": str(checkpoint), "fingerprint": model_fingerprint(plm if plm is not None else load(path)), "step": step}


def _progress(enabled: bool, desc: str):
    return lambda items: tqdm(items, desc=desc, disable=not enabled, leave=False)


def read_sequences(fasta: str | os.PathLike | None = None, *, count: int | None = None) -> list[tuple[str, str]]:
    """``(id, sequence)`` of the first ``count`` records of ``fasta`` (plain or gzip), or of the test
    split of the embedded corpus when ``fasta`` is None."""
    if fasta is None:
        corpus = EncodedCorpus.from_fasta(DEFAULT_CORPUS_PATH, split="test")
        stop = len(corpus) if count is None else min(count, len(corpus))
        return [(corpus.ids[i], DEFAULT_ALPHABET.decode(corpus[i])) for i in range(stop)]
    records = []
    for record in FastaReader(fasta):
        if count is not None and len(records) == count:
            break
        records.append((record.id, record.sequence))
    if not records:
        raise ValueError(f"{fasta} holds no sequences")
    return records


def find_sequence(fasta: str | os.PathLike, record_id: str) -> str:
    """The sequence of ``record_id`` in ``fasta``; ``ValueError`` when it is not there."""
    for record in FastaReader(fasta):
        if record.id == record_id:
            return record.sequence
    raise ValueError(f"no record with id {record_id!r} in {fasta}")


def random_approximation(*, samples: int = 15, length: int = 4096, dim: int = 16,
                         feature_counts: Sequence[int] = approx.FEATURE_COUNTS, seed: int = 0, by_value_features: int = 64,
                         progress: bool = True) -> dict:
    """Relative and squared error tables (all ``samples``) and error by true value (the first 3
    samples) on random inputs."""
    if min(samples, length, dim, *feature_counts) < 1:
        raise ValueError("`samples`, `length`, `dim` and `features` must be positive")
    started = time.perf_counter()
    pairs = approx.random_inputs(samples, length, dim, seed=seed)
    return {
        "samples": samples, "length": length, "dim": dim, "feature_counts": list(feature_counts), "seed": seed,
        "inputs": "entries N(0, 1/sqrt(d)): E|q d^-1/4|^2 = 1",
        **approx.error_tables(pairs, feature_counts=feature_counts, seed=seed, progress=_progress(progress, "random q/k")),
        "by_value": approx.error_by_value(pairs[: min(3, samples)], num_features=by_value_features, seed=seed),
        "seconds": round(time.perf_counter() - started, 1),
    }


def checkpoint_approximation(checkpoint: str | os.PathLike, *, fasta: str | os.PathLike | None = None, sequences: int = 15,
                             max_length: int = 1024, label: str | None = None,
                             feature_counts: Sequence[int] = approx.FEATURE_COUNTS, seed: int = 0, by_value_features: int = 64,
                             progress: bool = True) -> dict:
    """The same on the real q/k of every layer and head of ``checkpoint`` for the first ``sequences``
    proteins of ``fasta`` (default: the test split), each cropped to ``max_length`` residues (one sample
    per sequence, layer and head)."""
    from ..inference import load

    if min(sequences, max_length, *feature_counts) < 1:
        raise ValueError("`samples`, `max_length` and `features` must be positive")
    started = time.perf_counter()
    plm = load(checkpoint)
    tokens = [plm.tokenize(s[:max_length]) for _, s in read_sequences(fasta, count=sequences)]
    pairs = approx.checkpoint_pairs(plm.model, tokens)
    return {
        "path": str(checkpoint), "label": label or Path(checkpoint).resolve().name, "weights": weights_record(checkpoint, plm),
        "sequences": len(tokens), "residues": sum(len(t) - 2 for t in tokens), "samples": len(pairs),
        "dim": int(pairs[0][0].shape[-1]), "max_length": max_length, "feature_counts": list(feature_counts), "seed": seed,
        "model": {"attention": plm.config.attention, "kernel": plm.config.kernel, "num_features": plm.config.num_features},
        **approx.error_tables(pairs, feature_counts=feature_counts, seed=seed, progress=_progress(progress, "checkpoint q/k")),
        "by_value": approx.error_by_value(pairs, num_features=by_value_features, seed=seed),
        "seconds": round(time.perf_counter() - started, 1),
    }


def write_approximation(out: str | os.PathLike, result: dict) -> None:
    """``approximation.png`` (and ``approximation_checkpoint.png``) and ``approximation.json`` for a
    ``{"random": ..., "checkpoint": ...}`` result."""
    out = Path(out)
    r = result["random"]
    plot_approximation(r["relative"], r["by_value"], out / "approximation.png",
                       title=f"random inputs: L = {r['length']}, d = {r['dim']}, {r['samples']} samples")
    if "checkpoint" in result:
        c = result["checkpoint"]
        plot_approximation(c["relative"], c["by_value"], out / "approximation_checkpoint.png",
                           title=f"real q/k of {c['label']}: {c['samples']} (sequence, layer, head), d = {c['dim']}")
    _write_json(out / "approximation.json", result)


def run_approximation(out: str | os.PathLike, *, samples: int = 15, length: int = 4096, dim: int = 16,
                      feature_counts: Sequence[int] = approx.FEATURE_COUNTS, seed: int = 0,
                      checkpoint: str | os.PathLike | None = None, fasta: str | os.PathLike | None = None, max_length: int = 1024,
                      progress: bool = True) -> dict:
    """Random inputs, and with ``checkpoint`` its real q/k too (``samples`` proteins of ``fasta``). The
    checkpoint comes first, so that a bad one fails before the long random-input part."""
    out = output_folder(out)
    measured = {}
    if checkpoint is not None:
        measured = {"checkpoint": checkpoint_approximation(checkpoint, fasta=fasta, sequences=samples, max_length=max_length,
                                                           feature_counts=feature_counts, seed=seed, progress=progress)}
    result = {"random": random_approximation(samples=samples, length=length, dim=dim, feature_counts=feature_counts, seed=seed,
                                             progress=progress), **measured}
    write_approximation(out, result)
    return result


def run_attention_maps(out: str | os.PathLike, checkpoint: str | os.PathLike, *, sequence: str = BPT1_BOVIN,
                       name: str = "BPT1_BOVIN", start: int = 0, window: int = 256, label: str | None = None) -> dict:
    """Every layer's and head's attention over residues ``[start, start + window)`` of ``sequence``:
    ``attention_maps_NAME.png`` (grid), ``.json`` (per-head statistics) and ``.npz`` (the matrices).
    ``label`` names the model in the title (default: the checkpoint folder's name)."""
    from ..inference import load

    if window < 1:
        raise ValueError(f"`window` must be positive, got {window}")
    stem = f"attention_maps_{file_stem(name, 'name')}"
    out = output_folder(out)
    plm = load(checkpoint)
    sequence = sequence.strip().upper()
    maps = sequence_attention_maps(plm, sequence, start=start, window=window).numpy()
    shown = sequence[start : start + maps.shape[-1]]
    np.savez_compressed(out / f"{stem}.npz", maps=maps, residues=shown, start=start)
    kind = {"favor": "FAVOR", "softmax": "exact softmax"}.get(plm.config.attention, plm.config.attention)
    label = label or Path(checkpoint).resolve().name
    plot_attention_maps(maps, shown, out / f"{stem}.png", start=start,
                        title=f"{name}: residues {start + 1}-{start + len(shown)} of {len(sequence)}, {kind} attention ({label})")
    result = {"name": name, "checkpoint": str(checkpoint), "attention": plm.config.attention, "length": len(sequence),
              "start": start, "window": len(shown), "residues": shown, "weights": weights_record(checkpoint, plm),
              "heads": head_statistics(torch.from_numpy(maps).double())}
    _write_json(out / f"{stem}.json", result)
    return result


def run_similarity(out: str | os.PathLike, checkpoint: str | os.PathLike, *, fasta: str | os.PathLike | None = None,
                   sequences: int = 800, max_length: int = 1024, label: str | None = None, progress: bool = True) -> dict:
    """Amino-acid similarity from attention over the first ``sequences`` proteins of ``fasta`` (default:
    the test split of the embedded corpus) beside BLOSUM62: ``similarity_LABEL.png`` + ``.json``."""
    from ..inference import load

    if sequences < 1 or max_length < 1:
        raise ValueError("`sequences` and `max_length` must be positive")
    out = output_folder(out)
    label = file_stem(label or Path(checkpoint).resolve().name, "label")
    plm = load(checkpoint)
    records = read_sequences(fasta, count=sequences)
    started = time.perf_counter()
    result = attention_similarity(plm, [s for _, s in records], max_length=max_length, progress=_progress(progress, "sequences"))
    result.update(label=label, checkpoint=str(checkpoint), attention=plm.config.attention, weights=weights_record(checkpoint, plm),
                  data=str(fasta) if fasta else "test split of the embedded corpus", seconds=round(time.perf_counter() - started, 1))
    c = result["comparison"]
    if c["pairs"] < 3:
        raise ValueError(f"only {c['pairs']} amino-acid pairs have a defined similarity (an amino acid no head attends to "
                         f"has none): give more or longer sequences")
    plot_similarity(np.array(result["similarity"], dtype=float), np.array(result["blosum62"]), result["letters"],
                    out / f"similarity_{label}.png",
                    title=f"{label}: Spearman vs BLOSUM62 = {c['spearman']:.3f} (p = {c['p_value']:.2g}, "
                          f"{c['pairs']} pairs; {result['sequences']} sequences, {result['residues']:,} residues)")
    _write_json(out / f"similarity_{label}.json", result)
    return result
