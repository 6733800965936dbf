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
from .fasta import _SKIP_HINT, FastaError, FastaReader, file_fingerprint, is_gzip
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


PART_FILES = ("residues.u8", "offsets.i64", "ids.bin", "id_offsets.i64", "splits.u8", "lines.i64")


class _PartWriter:
    """Appends proteins to the files of one part (a byte range of the FASTA, or all of it), a buffer
    at a time; ``lines.i64`` keeps each header's line number within the part (for duplicate errors)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.files = {name: open(folder / name, "wb") for name in PART_FILES}  # noqa: SIM115 (closed by close())
        for name in ("offsets.i64", "id_offsets.i64"):
            self.files[name].write(np.zeros(1, dtype=np.int64).tobytes())
        self.residues = self.id_bytes = self.proteins = 0
        self._reset()

    def _reset(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.codes: list[int] = []
        self.ids: list[bytes] = []
        self.lines: list[int] = []
        self.buffered = 0

    def add(self, record_id: str, encoded: np.ndarray, line: int) -> None:
        self.chunks.append(encoded)
        self.codes.append(SPLITS.index(split_of(record_id)))
        self.ids.append(record_id.encode("utf-8"))
        self.lines.append(line)
        self.buffered += len(encoded)
        if self.buffered >= _FLUSH_RESIDUES:
            self.flush()

    def flush(self) -> None:
        if not self.chunks:
            return
        lengths = np.array([len(c) for c in self.chunks], dtype=np.int64)
        id_lengths = np.array([len(b) for b in self.ids], dtype=np.int64)
        self.files["residues.u8"].write(np.concatenate(self.chunks).tobytes())
        self.files["offsets.i64"].write((self.residues + np.cumsum(lengths)).tobytes())
        self.files["ids.bin"].write(b"".join(self.ids))
        self.files["id_offsets.i64"].write((self.id_bytes + np.cumsum(id_lengths)).tobytes())
        self.files["splits.u8"].write(np.array(self.codes, dtype=np.uint8).tobytes())
        self.files["lines.i64"].write(np.array(self.lines, dtype=np.int64).tobytes())
        self.residues += int(lengths.sum())
        self.id_bytes += int(id_lengths.sum())
        self.proteins += len(lengths)
        self._reset()

    def close(self) -> None:
        self.flush()
        for f in self.files.values():
            f.close()


def _prepare_part(fasta: Path, byte_range: tuple[int, int] | None, folder: Path, skip_invalid: bool,
                  progress: bool = False) -> dict:
    """Parse one part into ``folder``: its counts, and the reader's statistics (lines included)."""
    reader = FastaReader(fasta, skip_invalid=skip_invalid, check_duplicates=False, byte_range=byte_range)
    writer = _PartWriter(folder)
    try:
        with tqdm(unit="res", unit_scale=True, desc="prepare", disable=not progress, dynamic_ncols=True) as bar:
            for record in reader:
                writer.add(record.id, DEFAULT_ALPHABET.encode_array(record.sequence), record.line)
                bar.update(len(record.sequence))
    finally:
        writer.close()
    return {"proteins": writer.proteins, "residues": writer.residues, "stats": reader.stats.as_dict()}


def _cuts(fasta: Path, parts: int) -> list[tuple[int, int]]:
    """Byte ranges of about equal size, each beginning at a header line."""
    size = fasta.stat().st_size
    starts = [0]
    with open(fasta, "rb") as f:
        for k in range(1, parts):
            f.seek(max(starts[-1] + 1, k * size // parts))
            position, carry = f.tell(), b""
            while chunk := f.read(1 << 20):
                found = (carry + chunk).find(b"\n>")
                if found >= 0:
                    starts.append(position - len(carry) + found + 1)
                    break
                position, carry = f.tell(), chunk[-1:]
            else:
                break
    return [(a, b) for a, b in zip(starts, [*starts[1:], size], strict=True) if b > a]


def _merge(fasta: Path, parts: list[Path], lines_before: list[int], partial: Path, *, check_duplicates: bool,
           skip_invalid: bool) -> int:
    """The parts, in order, into the corpus files of ``partial``; returns the duplicates skipped.
    Ids are checked for duplicates across all parts here (one entry per id in memory)."""
    keeps = _duplicates(fasta, parts, lines_before, skip_invalid) if check_duplicates else [None] * len(parts)
    out = {name: open(partial / name, "wb") for name in PART_FILES[:-1]}  # noqa: SIM115
    try:
        for name in ("offsets.i64", "id_offsets.i64"):
            out[name].write(np.zeros(1, dtype=np.int64).tobytes())
        residues = id_bytes = 0
        for folder, keep in zip(parts, keeps, strict=True):
            offsets, id_offsets = (np.fromfile(folder / n, dtype=np.int64) for n in ("offsets.i64", "id_offsets.i64"))
            if keep is None:  # the whole part: copied as it is, offsets shifted
                for name in ("residues.u8", "ids.bin", "splits.u8"):
                    with open(folder / name, "rb") as f:
                        shutil.copyfileobj(f, out[name], 1 << 24)
                out["offsets.i64"].write((offsets[1:] + residues).tobytes())
                out["id_offsets.i64"].write((id_offsets[1:] + id_bytes).tobytes())
                residues, id_bytes = residues + int(offsets[-1]), id_bytes + int(id_offsets[-1])
                continue
            for name, offs, dtype in (("residues.u8", offsets, np.uint8), ("ids.bin", id_offsets, np.uint8)):
                data = np.memmap(folder / name, dtype=dtype, mode="r") if offs[-1] else np.zeros(0, dtype)
                for a in range(0, len(keep), 1 << 20):
                    b = min(len(keep), a + (1 << 20))
                    mask = np.repeat(keep[a:b], np.diff(offs[a : b + 1]))
                    out[name].write(np.asarray(data[offs[a] : offs[b]])[mask].tobytes())
            out["splits.u8"].write(np.fromfile(folder / "splits.u8", dtype=np.uint8)[keep].tobytes())
            kept_lengths, kept_id_lengths = np.diff(offsets)[keep], np.diff(id_offsets)[keep]
            out["offsets.i64"].write((residues + np.cumsum(kept_lengths)).tobytes())
            out["id_offsets.i64"].write((id_bytes + np.cumsum(kept_id_lengths)).tobytes())
            residues, id_bytes = residues + int(kept_lengths.sum()), id_bytes + int(kept_id_lengths.sum())
    finally:
        for f in out.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
    return sum(int((~keep).sum()) for keep in keeps if keep is not None)


def _duplicates(fasta: Path, parts: list[Path], lines_before: list[int], skip_invalid: bool) -> list[np.ndarray | None]:
    """Per part, which proteins to keep (None: all): an id seen before is an error naming its line
    in the whole file, or with ``skip_invalid`` is left out (the first occurrence stays)."""
    keeps: list[np.ndarray | None] = []
    seen: dict[str, int] = {}
    for folder, before in zip(parts, lines_before, strict=True):
        table, keep = _part_table(folder), None
        lines = np.fromfile(folder / "lines.i64", dtype=np.int64) + before
        for i in range(len(table)):
            record_id = table[i]
            if record_id not in seen:
                seen[record_id] = int(lines[i])
                continue
            if not skip_invalid:
                raise FastaError(fasta, int(lines[i]), f"duplicate id {record_id!r} (first seen at line {seen[record_id]})",
                                 f"Ids (the first word of the header) must be unique: rename or remove one, {_SKIP_HINT}")
            keep = np.ones(len(table), dtype=bool) if keep is None else keep
            keep[i] = False
        keeps.append(keep)
    return keeps


def _part_table(folder: Path) -> IdTable:
    offsets = np.fromfile(folder / "id_offsets.i64", dtype=np.int64)
    blob = np.memmap(folder / "ids.bin", dtype=np.uint8, mode="r") if offsets[-1] else np.zeros(0, np.uint8)
    return IdTable(blob, offsets)


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


def _statistics(folder: Path, proteins: int, vocab_size: int) -> dict:
    """Proteins, residues and token counts per split, in one pass over the merged files."""
    offsets = np.fromfile(folder / "offsets.i64", dtype=np.int64)
    codes = np.fromfile(folder / "splits.u8", dtype=np.uint8)
    residues = np.memmap(folder / "residues.u8", dtype=np.uint8, mode="r") if offsets[-1] else np.zeros(0, np.uint8)
    counts = np.zeros((len(SPLITS), vocab_size), dtype=np.int64)
    for a in range(0, proteins, 1 << 20):
        b = min(proteins, a + (1 << 20))
        owner = np.repeat(codes[a:b], np.diff(offsets[a : b + 1]))
        chunk = np.asarray(residues[offsets[a] : offsets[b]])
        for code in range(len(SPLITS)):
            counts[code] += np.bincount(chunk[owner == code], minlength=vocab_size)[:vocab_size]
    lengths = np.diff(offsets)
    return {"splits": {s: {"proteins": int((codes == c).sum()), "residues": int(lengths[codes == c].sum())} for c, s in enumerate(SPLITS)},
            "counts": {"all": counts.sum(0).tolist(), **{s: counts[c].tolist() for c, s in enumerate(SPLITS)}}}


def prepare(fasta: str | os.PathLike, out: str | os.PathLike, *, workers: int = 1, skip_invalid: bool = False,
            check_duplicates: bool = True, progress: bool = False) -> dict:
    """Tokenize ``fasta`` (plain or gzip) into the corpus directory ``out`` (see the module
    docstring); return its manifest. Bad records raise :class:`~protein_performer.data.fasta.FastaError`
    naming file and line, or with ``skip_invalid`` are skipped and counted. ``out`` must not exist.

    ``workers``: processes parsing byte ranges of a plain FASTA in parallel (a gzip stream is read by
    one: decompress it first, e.g. with ``pigz -d``, to use more); the result is the same."""
    fasta, out = Path(fasta), Path(out)
    if workers < 1:
        raise ValueError(f"`workers` must be at least 1, got {workers}")
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
    try:
        ranges = [None] if workers == 1 or is_gzip(fasta) else _cuts(fasta, workers)
        folders = [partial / "parts" / f"{k:04d}" for k in range(len(ranges))]
        if len(ranges) == 1:
            results = [_prepare_part(fasta, ranges[0], folders[0], skip_invalid, progress)]
        else:
            results = _run_parts(fasta, ranges, folders, skip_invalid, progress)
        lines_before = np.cumsum([0] + [r["stats"]["lines"] for r in results[:-1]]).tolist()
        duplicates = _merge(fasta, folders, lines_before, partial, check_duplicates=check_duplicates, skip_invalid=skip_invalid)
        shutil.rmtree(partial / "parts")
        proteins = sum(r["proteins"] for r in results) - duplicates
        _write_split_indices(partial, proteins)
        statistics = _statistics(partial, proteins, len(DEFAULT_ALPHABET))
        skipped = {k: sum(r["stats"][k] for r in results) for k in results[0]["stats"]}
        skipped["duplicate"] += duplicates
        skipped["skipped_records"] += duplicates
        skipped["records"] -= duplicates
        hasher.join()
        manifest = {
            "format": FORMAT, "version": VERSION, "alphabet": list(DEFAULT_ALPHABET.tokens),
            "proteins": proteins, "residues": int(np.fromfile(partial / "offsets.i64", dtype=np.int64)[-1]), **statistics,
            "source": source, "skipped": skipped, "workers": len(ranges), "seconds": round(time.perf_counter() - started, 2),
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def _run_parts(fasta: Path, ranges: list[tuple[int, int]], folders: list[Path], skip_invalid: bool, progress: bool) -> list[dict]:
    """The parts in a pool of processes; the first error in file order is raised with its line in
    the whole file (the lines of the parts before it added)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    results: list[dict | FastaError] = []
    with ProcessPoolExecutor(len(ranges), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_prepare_part, fasta, r, f, skip_invalid) for r, f in zip(ranges, folders, strict=True)]
        with tqdm(total=len(futures), unit="part", desc="prepare", disable=not progress, dynamic_ncols=True) as bar:
            for future in futures:
                try:
                    results.append(future.result())
                except FastaError as err:
                    results.append(err)
                bar.update(1)
    for k, result in enumerate(results):
        if isinstance(result, FastaError):
            before = sum(r["stats"]["lines"] for r in results[:k])  # every part before it finished
            raise FastaError(fasta, before + result.line, result.problem, result.fix)
    return results


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
        raise PreparedCorpusError(f"{path} is a folder but not a prepared corpus (no {MANIFEST}; an interrupted prepare "
                                  "leaves none): give a FASTA file, or a folder written by `protein-performer prepare` "
                                  "(run it again if it was interrupted)")
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
