"""Embeddings of a FASTA file into one HDF5 file keyed by sequence id (the ProtTrans embedder's layout).

Layout of ``OUT.h5``::

    /<group name of id>            one group per sequence; attributes id (the FASTA id), length, complete
        mean           [E]         mean over residues of the requested layer
        per_residue    [L, E]      with per_residue=True (``<cls>``/``<eos>`` excluded)
        mean_layer{N}, per_residue_layer{N}   instead of the two above when several layers are requested
    file attributes: layers, per_residue, embed_dim, model_fingerprint (what a re-run must match)

Group names are the ids with ``%`` and ``/`` (and an all-dots name) percent-escaped, so any FASTA id
is a valid, reversible HDF5 name (:func:`group_name`, :func:`record_id`); everything else, ``|``
included, is kept, so ``f["sp|P12345|NAME"]`` works as typed. A group's ``complete`` attribute is set
after its datasets are written and the file flushed after each sequence: a re-run skips complete
groups and rewrites incomplete ones (a run killed mid-write).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from ..data import FastaReader
from .model import DEFAULT_TOKENS_PER_BATCH, PRECISIONS, ProteinLanguageModel


def sequence_hash(sequence: str) -> str:
    """A short fingerprint of a sequence, stored with its embedding so that a re-run can tell an id
    whose sequence changed from one already done."""
    return hashlib.blake2b(sequence.encode(), digest_size=8).hexdigest()

def group_name(record_id: str) -> str:
    """A FASTA id → a valid HDF5 group name; :func:`record_id` inverts it."""
    name = record_id.replace("%", "%25").replace("/", "%2F")
    if set(name) == {"."}:  # "." and ".." are path components in HDF5
        name = name.replace(".", "%2E")
    return name


def record_id(name: str) -> str:
    """The FASTA id a group name was made from."""
    return unquote(name)


def dataset_names(layers: Sequence[int], per_residue: bool) -> dict[int, tuple[str, str | None]]:
    """Layer → (mean dataset name, per-residue dataset name or None)."""
    if len(layers) == 1:
        return {layers[0]: ("mean", "per_residue" if per_residue else None)}
    return {layer: (f"mean_layer{layer}", f"per_residue_layer{layer}" if per_residue else None) for layer in layers}


def model_fingerprint(plm: ProteinLanguageModel) -> str:
    """A short hash of the weights and config: embeddings of two models never mix in one file."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(repr(sorted(plm.config.to_dict().items())).encode())
    for name, tensor in sorted(plm.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class EmbedStats:
    sequences: int  # records in the FASTA file
    written: int  # embedded in this run
    skipped: int  # already complete in the output
    residues: int  # residues embedded in this run
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def _open_output(path: Path, settings: dict, overwrite: bool):
    """The output file: a new one, or one this program wrote with the same settings (to resume it);
    any other existing file only with ``overwrite`` (then replaced)."""
    import h5py

    if path.is_dir():
        raise IsADirectoryError(f"`out` {path} is a folder: give the HDF5 file to write")
    if path.exists() and not overwrite:
        try:
            handle = h5py.File(path, "a")
        except OSError as err:
            raise ValueError(f"{path} exists and is not a readable HDF5 file ({err}); "
                             "choose another `out`, or pass `overwrite` to replace it") from None
        if "model_fingerprint" not in handle.attrs:
            handle.close()
            raise ValueError(f"{path} is an HDF5 file not written by protein-performer embed: choose another `out`, "
                             f"or pass `overwrite` to replace it")
        for key, value in settings.items():
            if key in handle.attrs:
                stored = handle.attrs[key]
                stored = stored.tolist() if isinstance(stored, np.ndarray) else stored
                stored = stored.decode() if isinstance(stored, bytes) else stored
                if stored != value and not (isinstance(value, bool) and bool(stored) == value):
                    handle.close()
                    raise ValueError(f"{path} was written with {key}={stored}, this run has {key}={value}: "
                                     "use the same settings to resume it, or choose another `out`")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = h5py.File(path, "w")
    for key, value in settings.items():
        handle.attrs[key] = value
    return handle


def write_embeddings(
    plm: ProteinLanguageModel,
    fasta: str | os.PathLike,
    out: str | os.PathLike,
    *,
    layers: int | Sequence[int] = -1,
    per_residue: bool = False,
    tokens_per_batch: int = DEFAULT_TOKENS_PER_BATCH,
    precision: str = "fp32",
    progress: bool = True,
    overwrite: bool = False,
) -> EmbedStats:
    """Embed every record of ``fasta`` into ``out`` (HDF5, layout in the module docstring), skipping
    ids already complete there. Sequences are sorted by length and batched by ``tokens_per_batch``;
    each runs whole, at any length. ``out`` must be new or a file this function wrote with the same
    model and settings (it is then resumed); ``overwrite`` replaces any other. Raises
    ``FileNotFoundError`` / ``ValueError`` (a :class:`~protein_performer.data.FastaError` for a
    malformed file) with the file and the fix, before ``out`` is touched; a new ``out`` that receives
    nothing is removed again."""

    fasta, out = Path(fasta), Path(out)
    inputs = [fasta.resolve()] + ([plm.source.resolve()] if plm.source is not None else [])
    if out.resolve() == inputs[0] or out.resolve().parent in inputs[1:]:
        raise ValueError(f"`out` {out} is the FASTA file or in the model's directory: write elsewhere")
    if tokens_per_batch < 1:
        raise ValueError(f"`tokens_per_batch` must be positive, got {tokens_per_batch}")
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    start = time.perf_counter()
    records = list(FastaReader(fasta))  # validates letters and duplicate ids
    if not records:
        raise ValueError(f"{fasta} holds no sequences: nothing to embed")
    resolved = plm.resolve_layers(layers)
    names = dataset_names(resolved, per_residue)
    settings = {"layers": list(resolved), "per_residue": bool(per_residue), "embed_dim": plm.embed_dim,
                "model_fingerprint": model_fingerprint(plm), "precision": precision}
    created = not out.exists() or overwrite
    try:
        todo, residues = _embed_into(plm, records, out, fasta, resolved, names, settings, overwrite=overwrite,
                                     tokens_per_batch=tokens_per_batch, precision=precision, progress=progress)
    except BaseException:
        if created and out.exists() and not _holds_groups(out):
            out.unlink()  # refused or interrupted before the first embedding: leave nothing behind
        raise
    return EmbedStats(len(records), len(todo), len(records) - len(todo), residues, time.perf_counter() - start)


def _embed_into(plm, records, out: Path, fasta: Path, resolved, names, settings, *, overwrite, tokens_per_batch, precision,
                progress) -> tuple[list, int]:
    from tqdm import tqdm

    with _open_output(out, settings, overwrite) as h5:
        todo = []
        for record in records:
            name = group_name(record.id)
            if name in h5:
                if h5[name].attrs.get("complete", False):
                    stored = h5[name].attrs.get("sequence_hash", None)
                    if (h5[name].attrs["length"] != len(record.sequence)
                            or (stored is not None and stored != sequence_hash(record.sequence))):
                        raise ValueError(f"{out} holds {record.id!r} embedded from a different sequence than {fasta} line "
                                         f"{record.line} now has: write to a new file")
                    continue
                del h5[name]  # left incomplete by an interrupted run
            todo.append(record)
        residues = sum(len(r.sequence) for r in todo)
        bar = tqdm(total=residues, unit="res", unit_scale=True, desc="embed", disable=not progress, dynamic_ncols=True)
        with bar:
            reps = plm.iter_representations([r.sequence for r in todo], resolved,
                                            tokens_per_batch=tokens_per_batch, precision=precision)
            for i, by_layer in reps:
                record = todo[i]
                group = h5.create_group(group_name(record.id))
                group.attrs["id"] = record.id
                group.attrs["length"] = len(record.sequence)
                group.attrs["sequence_hash"] = sequence_hash(record.sequence)
                for layer, (mean_name, residue_name) in names.items():
                    group.create_dataset(mean_name, data=by_layer[layer].mean(0).numpy())
                    if residue_name is not None:
                        group.create_dataset(residue_name, data=by_layer[layer].numpy())
                group.attrs["complete"] = True
                h5.flush()
                bar.update(len(record.sequence))
    return todo, residues


def _holds_groups(path: Path) -> bool:
    """Whether an HDF5 file holds any group (without reading a single embedding)."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            return len(h5) > 0
    except OSError:
        return True  # not readable as HDF5: not ours to remove


def read_embeddings(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """Every complete group of an embeddings file: ``{id: {dataset name: array}}``."""
    import h5py

    with h5py.File(path, "r") as h5:
        return {
            group.attrs["id"]: {name: group[name][()] for name in group}
            for group in h5.values()
            if group.attrs.get("complete", False)
        }
