"""A prepared corpus: FASTA tokenized once into a directory of memory-mappable files, which every
process of a node then shares through the page cache (start-up is instant, memory does not grow
with the corpus).

Layout of ``CORPUS_DIR`` (all little-endian, native numpy files without headers):

    residues.u8        every residue id, back to back (no specials)
    offsets.i64        [n + 1]: protein j is residues[offsets[j]:offsets[j + 1]]
    ids.bin            the accessions, UTF-8, back to back; id_offsets.i64 [n + 1] cuts them
    splits.u8          [n]: the split of each protein (its position in ``SPLITS``), by accession hash
    index.SPLIT.i64    the proteins of each split, in corpus order
    manifest.json      written last: format, counts (proteins, residues, per split, per token),
                       the alphabet, the source's size and SHA-256, skipped records

:func:`prepare` streams the FASTA (memory bounded by one buffer, plus one entry per id for the
duplicate check unless turned off), writes into ``CORPUS_DIR.partial`` and renames it when
complete: a directory named ``CORPUS_DIR`` is always a finished corpus, and an interrupted prepare
leaves only the ``.partial`` folder, which the next prepare replaces.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .alphabet import DEFAULT_ALPHABET, Alphabet
from .corpus import EncodedCorpus
from .fasta import FastaReader, file_fingerprint
from .split import SPLITS, split_of

FORMAT, VERSION = "protein-performer corpus", 1
MANIFEST = "manifest.json"
_FLUSH_RESIDUES = 1 << 24  # residues buffered between writes (16 MiB)


class PreparedCorpusError(ValueError):
    """A directory that is not a complete prepared corpus (one line: what is wrong, what to do)."""


class IdTable(Sequence):
    """The accessions of a prepared corpus, read from the memory-mapped ``ids.bin`` on demand."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        self._blob, self._offsets = blob, offsets

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"id {i} out of range for {len(self)} proteins")
        i %= len(self)
        return self._blob[self._offsets[i] : self._offsets[i + 1]].tobytes().decode("utf-8")


def _sha256(path: Path, out: dict) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    out["sha256"] = digest.hexdigest()


class _Writer:
    """Appends proteins to the open files of a ``.partial`` directory, a buffer at a time."""

    def __init__(self, folder: Path, vocab_size: int) -> None:
        self.files = {name: open(folder / name, "wb") for name in  # noqa: SIM115 (closed by close())
                      ("residues.u8", "offsets.i64", "ids.bin", "id_offsets.i64", "splits.u8")}
        self.files["offsets.i64"].write(np.zeros(1, dtype=np.int64).tobytes())
        self.files["id_offsets.i64"].write(np.zeros(1, dtype=np.int64).tobytes())
        self.residues = self.id_bytes = self.proteins = 0
        self.counts = {split: np.zeros(vocab_size, dtype=np.int64) for split in SPLITS}
        self.split_proteins = dict.fromkeys(SPLITS, 0)
        self.split_residues = dict.fromkeys(SPLITS, 0)
        self._reset()

    def _reset(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.codes: list[int] = []
        self.ids: list[bytes] = []
        self.buffered = 0

    def add(self, record_id: str, encoded: np.ndarray) -> None:
        self.chunks.append(encoded)
        self.codes.append(SPLITS.index(split_of(record_id)))
        self.ids.append(record_id.encode("utf-8"))
        self.buffered += len(encoded)
        if self.buffered >= _FLUSH_RESIDUES:
            self.flush()

    def flush(self) -> None:
        if not self.chunks:
            return
        lengths = np.array([len(c) for c in self.chunks], dtype=np.int64)
        codes = np.array(self.codes, dtype=np.uint8)
        residues = np.concatenate(self.chunks)
        self.files["residues.u8"].write(residues.tobytes())
        self.files["offsets.i64"].write((self.residues + np.cumsum(lengths)).tobytes())
        id_lengths = np.array([len(b) for b in self.ids], dtype=np.int64)
        self.files["ids.bin"].write(b"".join(self.ids))
        self.files["id_offsets.i64"].write((self.id_bytes + np.cumsum(id_lengths)).tobytes())
        self.files["splits.u8"].write(codes.tobytes())
        owner = np.repeat(codes, lengths)  # the split of every residue
        for code, split in enumerate(SPLITS):
            mine = residues[owner == code]
            self.counts[split] += np.bincount(mine, minlength=len(self.counts[split]))[: len(self.counts[split])]
            self.split_proteins[split] += int((codes == code).sum())
            self.split_residues[split] += len(mine)
        self.residues += len(residues)
        self.id_bytes += int(id_lengths.sum())
        self.proteins += len(lengths)
        self._reset()

    def close(self) -> None:
        self.flush()
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()


def _write_split_indices(folder: Path, proteins: int) -> None:
    codes = np.memmap(folder / "splits.u8", dtype=np.uint8, mode="r", shape=(proteins,)) if proteins else np.zeros(0, np.uint8)
    files = {split: open(folder / f"index.{split}.i64", "wb") for split in SPLITS}  # noqa: SIM115
    try:
        for start in range(0, proteins, 1 << 24):
            part = np.asarray(codes[start : start + (1 << 24)])
            for code, split in enumerate(SPLITS):
                files[split].write((start + np.flatnonzero(part == code)).astype(np.int64).tobytes())
    finally:
        for f in files.values():
            f.close()


def prepare(fasta: str | os.PathLike, out: str | os.PathLike, *, skip_invalid: bool = False, check_duplicates: bool = True,
            progress: bool = False, alphabet: Alphabet = DEFAULT_ALPHABET) -> dict:
    """Tokenize ``fasta`` (plain or gzip) into the corpus directory ``out`` (see the module
    docstring); return its manifest. Bad records raise :class:`~protein_performer.data.fasta.FastaError`
    naming file and line, or with ``skip_invalid`` are skipped and counted. ``out`` must not exist."""
    fasta, out = Path(fasta), Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists: remove it or choose another --out")
    if not fasta.is_file():
        raise FileNotFoundError(f"{fasta}: FASTA file not found (give a plain or gzipped FASTA file)")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # what an interrupted prepare left
    partial.mkdir(parents=True)
    started = time.perf_counter()
    source = {"path": str(fasta.resolve()), "bytes": fasta.stat().st_size}
    hasher = threading.Thread(target=_sha256, args=(fasta, source), daemon=True)
    hasher.start()
    reader = FastaReader(fasta, skip_invalid=skip_invalid, check_duplicates=check_duplicates, alphabet=alphabet)
    writer = _Writer(partial, len(alphabet))
    try:
        with tqdm(unit="res", unit_scale=True, desc="prepare", disable=not progress, dynamic_ncols=True) as bar:
            for record in reader:
                writer.add(record.id, alphabet.encode_array(record.sequence))
                bar.update(len(record.sequence))
        writer.close()
        _write_split_indices(partial, writer.proteins)
        hasher.join()
        counts = {split: writer.counts[split].tolist() for split in SPLITS}
        manifest = {
            "format": FORMAT, "version": VERSION, "alphabet": list(alphabet.tokens),
            "proteins": writer.proteins, "residues": writer.residues,
            "splits": {split: {"proteins": writer.split_proteins[split], "residues": writer.split_residues[split]}
                       for split in SPLITS},
            "counts": {"all": np.sum([writer.counts[s] for s in SPLITS], axis=0).tolist(), **counts},
            "source": source, "skipped": reader.stats.as_dict(), "seconds": round(time.perf_counter() - started, 2),
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        partial.rename(out)
    except BaseException:
        for f in writer.files.values():
            f.close()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def data_fingerprint(path: str | os.PathLike) -> str:
    """What a run records of its training data, to refuse resuming on other data: for a corpus
    directory its source's checksum and counts, for a file :func:`~protein_performer.data.fasta.file_fingerprint`."""
    path = Path(path)
    if path.is_dir():
        manifest = read_manifest(path)
        return f"corpus:{manifest['source']['sha256'][:16]}:{manifest['proteins']}:{manifest['residues']}"
    return file_fingerprint(path)


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of a complete prepared corpus, or one :class:`PreparedCorpusError`."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise PreparedCorpusError(f"{path} is not a prepared corpus (no {MANIFEST}; an interrupted prepare leaves none): "
                                  "run `protein-performer prepare` again")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise PreparedCorpusError(f"{manifest_path}: not valid JSON ({err}): prepare the corpus again") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise PreparedCorpusError(f"{path}: format {manifest.get('format')!r} version {manifest.get('version')!r}, "
                                  f"this version reads {FORMAT!r} version {VERSION}: prepare the corpus again")
    return manifest


def open_prepared(path: str | os.PathLike, *, alphabet: Alphabet = DEFAULT_ALPHABET) -> EncodedCorpus:
    """The corpus of a prepared directory, memory-mapped (read-only; nothing is loaded)."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest["alphabet"] != list(alphabet.tokens):
        raise PreparedCorpusError(f"{path} was prepared with another alphabet: prepare it again with this version")
    n, residues = manifest["proteins"], manifest["residues"]
    expected = {"residues.u8": residues, "offsets.i64": 8 * (n + 1), "id_offsets.i64": 8 * (n + 1), "splits.u8": n,
                **{f"index.{s}.i64": 8 * manifest["splits"][s]["proteins"] for s in SPLITS}}
    for name, size in expected.items():
        actual = (path / name).stat().st_size if (path / name).is_file() else None
        if actual != size:
            raise PreparedCorpusError(f"{path / name}: {actual} bytes where the manifest implies {size}: "
                                      "the corpus is damaged, prepare it again")

    def mapped(name: str, dtype, count: int) -> np.ndarray:
        return np.memmap(path / name, dtype=dtype, mode="r", shape=(count,)) if count else np.zeros(count, dtype=dtype)

    id_offsets = mapped("id_offsets.i64", np.int64, n + 1)
    ids = IdTable(mapped("ids.bin", np.uint8, int(id_offsets[-1])), id_offsets)
    return EncodedCorpus(ids, mapped("residues.u8", np.uint8, residues), mapped("offsets.i64", np.int64, n + 1),
                         split_codes=mapped("splits.u8", np.uint8, n),
                         split_index={s: mapped(f"index.{s}.i64", np.int64, manifest["splits"][s]["proteins"]) for s in SPLITS},
                         counts={k: np.asarray(v, dtype=np.int64) for k, v in manifest["counts"].items()}, source=str(path))
