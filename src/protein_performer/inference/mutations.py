"""Mutation strings as deep-mutational-scanning files write them: ``A23G`` (wild type, 1-based
position, mutant) and multi-mutants joined by ``:`` (``A23G:L45P``), the fair-esm convention.

Every problem is one :class:`MutationError` (a ``ValueError``) naming the mutation and the fix.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..data import STANDARD_AMINO_ACIDS

_SUBSTITUTION = re.compile(r"^([A-Za-z])([0-9]+)([A-Za-z])$")


class MutationError(ValueError):
    """A malformed mutation, or one that does not fit the sequence."""


@dataclass(frozen=True)
class Substitution:
    """One amino-acid change: ``wild_type`` at 1-based ``position`` becomes ``mutant``."""

    wild_type: str
    position: int
    mutant: str

    @property
    def index(self) -> int:
        """0-based position in the sequence."""
        return self.position - 1

    def __str__(self) -> str:
        return f"{self.wild_type}{self.position}{self.mutant}"


@dataclass(frozen=True)
class Mutant:
    """A variant of the wild-type sequence: one or more substitutions at distinct positions."""

    substitutions: tuple[Substitution, ...]

    def __str__(self) -> str:
        return ":".join(str(s) for s in self.substitutions)

    def check(self, sequence: str) -> None:
        """Raise :class:`MutationError` unless every site lies inside ``sequence`` and its wild-type
        letter matches."""
        for s in self.substitutions:
            if not 1 <= s.position <= len(sequence):
                raise MutationError(f"{self}: position {s.position} is outside the sequence (1..{len(sequence)})")
            found = sequence[s.index].upper()
            if found != s.wild_type:
                raise MutationError(f"{self}: position {s.position} is {found}, not {s.wild_type}")

    def apply(self, sequence: str) -> str:
        """The mutant sequence (after :meth:`check`)."""
        self.check(sequence)
        letters = list(sequence.upper())
        for s in self.substitutions:
            letters[s.index] = s.mutant
        return "".join(letters)


def parse_substitution(text: str) -> Substitution:
    """``"A23G"`` → ``Substitution("A", 23, "G")``; both letters among the 20 standard amino acids."""
    match = _SUBSTITUTION.match(text.strip())
    if match is None:
        raise MutationError(f"malformed mutation {text!r}: write wild type, 1-based position, mutant, e.g. A23G")
    wild_type, position, mutant = match.group(1).upper(), int(match.group(2)), match.group(3).upper()
    for role, letter in (("wild-type", wild_type), ("mutant", mutant)):
        if letter not in STANDARD_AMINO_ACIDS:
            raise MutationError(f"{text}: {role} letter {letter!r} is not one of the 20 standard amino acids "
                                f"{STANDARD_AMINO_ACIDS}")
    if position < 1:
        raise MutationError(f"{text}: positions are 1-based, {position} is not a position")
    if wild_type == mutant:
        raise MutationError(f"{text}: the mutant letter is the wild type's, so it changes nothing (its score would be 0 by "
                            f"definition): remove it")
    return Substitution(wild_type, position, mutant)


def parse_mutant(text: str) -> Mutant:
    """``"A23G:L45P"`` → a :class:`Mutant` with two substitutions (at distinct positions)."""
    if not text.strip():
        raise MutationError("empty mutation: write e.g. A23G, or A23G:L45P for a multi-mutant")
    parts = text.strip().split(":")
    if not all(p.strip() for p in parts):
        raise MutationError(f"malformed mutant {text.strip()!r}: an empty part between ':' (write e.g. A23G:L45P)")
    substitutions = tuple(parse_substitution(part) for part in parts)
    positions = [s.position for s in substitutions]
    if len(set(positions)) != len(positions):
        raise MutationError(f"{text}: a multi-mutant changes each position at most once")
    return Mutant(substitutions)


def parse_mutations(text: str) -> list[Mutant]:
    """A comma-separated list, ``"A23G,L45P,A23G:L45P"`` → three mutants."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise MutationError("no mutations given: write e.g. `mutations` A23G,L45P")
    return [parse_mutant(p) for p in parts]


def read_mutations_csv(path: str | os.PathLike, column: str = "mutant",
                       sequence: str | None = None) -> tuple[list[dict[str, str]], list[Mutant]]:
    """Rows of a CSV file and the mutants of its ``column`` (fair-esm's ``mutant`` column by default),
    each checked against ``sequence`` when given. Errors name the file and line."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: `mutations_csv` takes a CSV file with a {column!r} column")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: `mutations_csv` takes a CSV file with a {column!r} column")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # -sig: the byte-order mark spreadsheets write
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise MutationError(f"{path}, line {line}: byte {raw[err.start]:#04x} is not UTF-8 text: save the file as UTF-8 "
                            f"(\"CSV UTF-8\" in spreadsheets)") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None or column not in reader.fieldnames:
        raise MutationError(f"{path}: no {column!r} column in the header (found {reader.fieldnames or 'nothing'})")
    repeated = sorted({name for name in reader.fieldnames if reader.fieldnames.count(name) > 1})
    if repeated:
        raise MutationError(f"{path}, line 1: the header names column {repeated[0]!r} twice: give each column its own name")
    rows, mutants, first_line = [], [], {}
    for row in reader:
        extra, missing = row.get(None) or [], sum(value is None for value in row.values())
        if extra or missing:  # DictReader files surplus fields under None and fills missing ones with None
            raise MutationError(f"{path}, line {reader.line_num}: {len(reader.fieldnames) + len(extra) - missing} fields where "
                                f"the header has {len(reader.fieldnames)}: quote fields that hold commas")
        try:
            mutant = parse_mutant(row[column] or "")
            if sequence is not None:
                mutant.check(sequence)
        except MutationError as err:
            raise MutationError(f"{path}, line {reader.line_num}: {err}") from None
        key = tuple(sorted(mutant.substitutions, key=lambda s: s.position))
        if key in first_line:
            raise MutationError(f"{path}, line {reader.line_num}: {mutant} is already on line {first_line[key]}: "
                                f"remove the duplicate row")
        first_line[key] = reader.line_num
        mutants.append(mutant)
        rows.append(row)
    if not rows:
        raise MutationError(f"{path}: no mutations (the file has a header but no rows)")
    return rows, mutants


SCORE_COLUMNS = ("score", "model_score")  # the model's column: the first name the input does not use


@dataclass
class VariantScores:
    """Variants of one wild type with their scores: the input rows (every column kept) and one score
    per row, written back as a CSV with the model's column (``score``, or ``model_score`` when the input
    has a ``score`` column, e.g. measured fitness) added."""

    fields: list[str]
    rows: list[dict[str, str]]
    scores: list[float]
    column: str = "score"

    def write_csv(self, handle: TextIO) -> None:
        writer = csv.DictWriter(handle, fieldnames=[*self.fields, self.column], lineterminator="\n")
        writer.writeheader()
        for row, score in zip(self.rows, self.scores):
            writer.writerow({**row, self.column: f"{score:.6f}"})

    def spearman(self, label_column: str, source: str | os.PathLike) -> dict:
        """Spearman's ρ between the model's scores and the numbers of ``label_column`` (``n`` rows)."""
        from scipy.stats import spearmanr

        if label_column not in self.fields:
            raise MutationError(f"{source}: no {label_column!r} column to compare with (found {', '.join(self.fields)})")
        labels = []
        for line, row in enumerate(self.rows, start=2):
            try:
                labels.append(float(row[label_column]))
            except ValueError:
                raise MutationError(f"{source}, line {line}: {label_column} {row[label_column]!r} is not a number") from None
        if len(labels) < 2 or len(set(labels)) < 2:
            raise MutationError(f"{source}: Spearman's rho needs at least two different {label_column} values")
        return {"spearman": float(spearmanr(self.scores, labels).statistic), "n": len(labels), "label_column": label_column}


def score_variants(plm, sequence: str, *, mutations: str | None = None, mutations_csv: str | os.PathLike | None = None,
                   method: str = "masked-marginal", tokens_per_batch: int, progress: bool = False) -> VariantScores:
    """Scores (``method``, see :meth:`~protein_performer.inference.ProteinLanguageModel.score_mutations`)
    of ``mutations`` (``"A23G,L45P,A23G:L45P"``) or of the ``mutant`` column of ``mutations_csv`` against
    ``sequence``, with ``plm`` (a :class:`~protein_performer.inference.ProteinLanguageModel`). The
    sequence is checked first, then every mutant, before any scoring."""
    plm.tokenize(sequence)  # an invalid letter is reported before any mutation
    if mutations_csv is not None:
        rows, mutants = read_mutations_csv(mutations_csv, sequence=sequence.strip().upper())
        fields = list(rows[0].keys())
        free = [name for name in SCORE_COLUMNS if name not in fields]
        if not free:
            raise MutationError(f"{mutations_csv} already has columns {' and '.join(SCORE_COLUMNS)}: rename one of them")
    else:
        mutants = parse_mutations(mutations or "")
        rows, fields, free = [{"mutant": str(m)} for m in mutants], ["mutant"], list(SCORE_COLUMNS)
    scores = plm.score_mutations(sequence, mutants, method=method, tokens_per_batch=tokens_per_batch, progress=progress)
    return VariantScores(fields, rows, scores.tolist(), free[0])
