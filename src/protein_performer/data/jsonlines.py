"""JSON-lines input (one object per line; plain or gzip, recognized by its magic bytes), with errors that
name the file and line."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path


def read_json_lines(path: str | os.PathLike, *, expected: str) -> list[tuple[str, dict]]:
    """``(where, row)`` for every non-blank line, ``where`` being ``"PATH, line N"`` for the caller's
    own messages. ``expected`` says what a row should be (``"a JSON object with 'id' and 'sequence'"``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: give a JSON-lines file ({expected} per line)")
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    with gzip.open(path, "rt") if gzipped else open(path) as f:
        try:
            lines = list(enumerate(f, start=1))
        except (OSError, EOFError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} could not be read ({err}): the file is truncated or damaged") from None
    rows = []
    for number, line in lines:
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected {expected}")
        rows.append((where, row))
    return rows
