"""Streaming, validating FASTA reader (plain text or gzip).

Parsing is Biopython's :func:`~Bio.SeqIO.FastaIO.SimpleFastaParser`; this module adds what it lacks:
line numbers, validation and clear errors. Memory is bounded by the largest record (plus the set of
ids seen, for the duplicate check), so files larger than memory stream through.

A bad record raises one :class:`FastaError` naming the file, the line and the fix. With
``skip_invalid=True`` bad records are skipped instead and counted in :attr:`FastaReader.stats`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, NamedTuple

from Bio.SeqIO.FastaIO import SimpleFastaParser

from .alphabet import DEFAULT_ALPHABET, RESIDUE_LETTERS, Alphabet

_SKIP_HINT = "or skip such records (`skip_invalid`; skip_invalid=True in Python)"


class FastaError(ValueError):
    """A malformed FASTA file; ``path`` and ``line`` (1-based) locate the problem."""

    def __init__(self, path: Path, line: int, problem: str, fix: str) -> None:
        self.path, self.line, self.problem, self.fix = path, line, problem, fix
        super().__init__(f"{path}, line {line}: {problem}. {fix}")

    def __reduce__(self):  # picklable (raised in a worker process, reported by its parent)
        return type(self), (self.path, self.line, self.problem, self.fix)


class FastaRecord(NamedTuple):
    """One sequence: ``id`` is the first word of the header, ``description`` the whole header
    (without ``>``), ``sequence`` upper case without whitespace, ``line`` the header's line number."""

    id: str
    description: str
    sequence: str
    line: int


@dataclass
class FastaStats:
    """Counts for one pass over a file (complete once iteration has finished)."""

    records: int = 0  # records yielded
    residues: int = 0  # residues in the records yielded
    lines: int = 0  # lines read so far
    invalid_letter: int = 0  # records skipped: a letter outside the alphabet
    empty: int = 0  # records skipped: a header with no sequence
    duplicate: int = 0  # records skipped: an id seen before
    missing_id: int = 0  # records skipped: a header with nothing after '>'
    preamble_lines: int = 0  # non-blank lines before the first '>' (skipped)

    @property
    def skipped_records(self) -> int:
        return self.invalid_letter + self.empty + self.duplicate + self.missing_id

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"skipped_records": self.skipped_records}


class _ByteRange(io.RawIOBase):
    """Bytes ``[start, stop)`` of a file, read as a stream of their own."""

    def __init__(self, path: Path, start: int, stop: int) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 (closed by close())
        self._file.seek(start)
        self._left = stop - start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer)[: max(0, self._left)]
        n = self._file.readinto(view)
        self._left -= n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _open_text(path: Path, byte_range: tuple[int, int] | None = None) -> IO[str]:
    """Open plain or gzip FASTA as text; gzip is recognized by its magic bytes, not the name, by peeking
    at the stream, so a pipe (``<(zcat …)``, ``/dev/stdin``) is read once, like a file. ``byte_range``:
    only those bytes of a plain file."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: FASTA file not found (give a plain or gzipped FASTA file)")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: give a plain or gzipped FASTA file")
    if byte_range is not None:
        encoding = "utf-8-sig" if byte_range[0] == 0 else "utf-8"
        return io.TextIOWrapper(io.BufferedReader(_ByteRange(path, *byte_range)), encoding=encoding, errors="replace")
    raw: IO[bytes] = open(path, "rb")  # noqa: SIM115 (the reader closes it)
    if raw.peek(2)[:2] == b"\x1f\x8b":
        raw = gzip.GzipFile(fileobj=raw, mode="rb")
    # utf-8-sig: a byte-order mark (as some editors write) is not text before the first '>'.
    # errors="replace": a stray non-UTF-8 byte becomes U+FFFD and is then reported as an invalid
    # letter with its line number, instead of an anonymous UnicodeDecodeError mid-stream.
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace")


class _LineTracker:
    """Feeds lines to SimpleFastaParser while noting, per record, its header line and where each
    sequence line ends in the joined sequence (to turn a residue position back into a line number).

    The parser reads one line ahead (it only knows a record is complete when it sees the next
    header), so records are kept in a FIFO and the reader pops the oldest one per parsed record.
    """

    def __init__(self, handle: IO[str], on_preamble: Callable[[int, str], None]) -> None:
        self.handle = handle
        self.on_preamble = on_preamble
        self.lineno = 0
        self.pending: deque[tuple[int, list[tuple[int, int]]]] = deque()

    def __iter__(self) -> Iterator[str]:
        for line in self.handle:
            self.lineno += 1
            if line[0] == ">":  # the parser's own header test, so both agree on what a header is
                self.pending.append((self.lineno, []))
            elif self.pending:
                # Same normalization as the parser, so positions line up with its joined sequence.
                n = len(line.rstrip().replace(" ", "").replace("\r", ""))
                if n:
                    ends = self.pending[-1][1]
                    ends.append((self.lineno, (ends[-1][1] if ends else 0) + n))
            elif line.strip():
                self.on_preamble(self.lineno, line)
            yield line


class FastaReader:
    """Iterate the records of a FASTA file (``.gz`` or plain), validating each one.

    Checks, each raising :class:`FastaError` (or, with ``skip_invalid=True``, skipping and counting):
    text before the first ``>``; a header without id; a record without sequence; a letter outside the
    alphabet (either case; 20 standard amino acids + ``BOUXZ``); an id seen before
    (``check_duplicates``; keeps one entry per id in memory, turn it off for huge files).

    ``stats`` holds the counts of the current (or last) pass; each ``iter()`` starts a new pass.
    ``byte_range``: read only bytes ``[start, stop)`` of a plain file, which must begin at a header
    (line numbers then count from the range's start).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        skip_invalid: bool = False,
        check_duplicates: bool = True,
        alphabet: Alphabet = DEFAULT_ALPHABET,
        byte_range: tuple[int, int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.byte_range = byte_range
        self.skip_invalid = skip_invalid
        self.check_duplicates = check_duplicates
        self.alphabet = alphabet
        self.stats = FastaStats()

    def __iter__(self) -> Iterator[FastaRecord]:
        self.stats = stats = FastaStats()
        seen: dict[str, int] = {}  # id -> header line, to point at the first occurrence
        with _open_text(self.path, self.byte_range) as handle:
            tracker = _LineTracker(handle, self._preamble)
            for title, seq in self._parse(tracker):
                header_line, line_ends = tracker.pending.popleft()
                stats.lines = tracker.lineno
                error = self._check(title, seq, header_line, line_ends, seen)
                if error is not None:
                    kind, line, problem, fix = error
                    if not self.skip_invalid:
                        raise FastaError(self.path, line, problem, fix)
                    setattr(stats, kind, getattr(stats, kind) + 1)
                    continue
                record_id = title.split(None, 1)[0]
                if self.check_duplicates:
                    seen[record_id] = header_line
                stats.records += 1
                stats.residues += len(seq)
                yield FastaRecord(record_id, title, seq.upper(), header_line)
            stats.lines = tracker.lineno

    def _parse(self, tracker: _LineTracker) -> Iterator[tuple[str, str]]:
        """Biopython's parser over ``tracker``; a truncated or damaged (gzip) file is a FastaError."""
        try:
            yield from SimpleFastaParser(tracker)
        except (EOFError, OSError) as err:  # gzip.BadGzipFile is an OSError
            raise FastaError(self.path, tracker.lineno + 1, f"the file could not be read further ({err})",
                             "The file is truncated or damaged: copy, download or compress it again") from None

    def _preamble(self, lineno: int, line: str) -> None:
        if not self.skip_invalid:
            raise FastaError(
                self.path,
                lineno,
                f"text before the first '>' header: {line.strip()[:40]!r}",
                f"A FASTA file must start with a '>' header line: remove that text, {_SKIP_HINT}",
            )
        self.stats.preamble_lines += 1

    def _check(
        self, title: str, seq: str, header_line: int, line_ends: list[tuple[int, int]], seen: dict[str, int]
    ) -> tuple[str, int, str, str] | None:
        """None when the record is valid, else (stats field to count it in, line, problem, fix)."""
        words = title.split(None, 1)
        if not words:
            return "missing_id", header_line, "header '>' has no id", f"Write an id after '>', {_SKIP_HINT}"
        record_id = words[0]
        if "\ufffd" in title:
            return ("invalid_letter", header_line, f"header {title[:40]!r} is not UTF-8 text",
                    f"Re-save the file as UTF-8, {_SKIP_HINT}")
        if not seq:
            return "empty", header_line, f"record {record_id!r} has no sequence", f"Remove the empty record, {_SKIP_HINT}"

        pos = self.alphabet.first_invalid(seq)
        if pos is not None:
            line, line_start = header_line, 0
            for lineno, end in line_ends:  # first sequence line that reaches past pos
                if end > pos:
                    line = lineno
                    break
                line_start = end
            return (
                "invalid_letter",
                line,
                f"invalid letter {seq[pos]!r} (column {pos - line_start + 1}) in record {record_id!r}",
                f"Allowed letters are {RESIDUE_LETTERS} (either case): fix or remove the record, {_SKIP_HINT}",
            )
        if self.check_duplicates and record_id in seen:
            return (
                "duplicate",
                header_line,
                f"duplicate id {record_id!r} (first seen at line {seen[record_id]})",
                f"Ids (the first word of the header) must be unique: rename or remove one, {_SKIP_HINT}",
            )
        return None


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """Size and a hash of the first and last MiB of a regular file ("" for a pipe or device): cheap
    at any size, and different for any file that is not a copy of this one in practice."""
    path = Path(path)
    if not path.is_file():
        return ""
    size = path.stat().st_size
    digest = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        digest.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        digest.update(f.read(1 << 20))
    return f"{size}:{digest.hexdigest()}"


def read_fasta(
    path: str | os.PathLike[str], *, skip_invalid: bool = False, check_duplicates: bool = True
) -> Iterator[FastaRecord]:
    """Stream the records of ``path``; shorthand for ``iter(FastaReader(path, ...))`` (no stats)."""
    return iter(FastaReader(path, skip_invalid=skip_invalid, check_duplicates=check_duplicates))
