"""Where a benchmark's results land in the docs: the section between two markers in a Markdown file,
its figure, and beside the figure the results (``.json``, a few kB) that a test holds the section to."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def publish(docs: Path, markers: tuple[str, str], body: str, result: dict, figure_path: Path,
            draw: Callable[[dict, Path], None] | None) -> None:
    """Replace what lies between ``markers`` in ``docs`` by ``body``; draw the figure (unless ``draw``
    is None: a section without one); save ``result`` as ``figure_path`` with the suffix ``.json``."""
    begin, end = markers
    text = docs.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{docs} has no {begin} ... {end} section to rewrite")
    head, rest = text.split(begin, 1)
    docs.write_text(f"{head}{begin}\n{body}\n{end}{rest.split(end, 1)[1]}")
    if draw is not None:
        draw(result, figure_path)
    figure_path.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
