"""The results document (``OUT/results.json``): one row per (dtype, direction, method, L), merged into
an existing document with ``--update``, written atomically after every configuration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .options import DIRECTIONS, DTYPES, METHODS


def row_key(r: dict[str, Any]) -> tuple:
    return (r["dtype"], r["direction"], r["method"], r["length"])


def best_matmul(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per shape, the fastest of the matmul measurements (start and end of the run): the least disturbed."""
    keys = [k for k, v in runs[0].items() if isinstance(v, dict)]
    return {k: max((r[k] for r in runs), key=lambda v: v["gflops"]) for k in keys}


def merge_base(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """An existing results document extended by this run's settings (``--update``)."""
    doc = dict(old)
    oc, nc = old["config"], new["config"]
    for key in ("batch", "heads", "head_dim", "features", "chunk_size", "device"):
        if oc.get(key) != nc.get(key):
            raise SystemExit(f"--update: {key} differs from the existing results ({oc.get(key)} there, {nc.get(key)} now)")
    config = dict(oc)
    config["lengths"] = sorted(set(oc["lengths"]) | set(nc["lengths"]))
    for key, order in (("dtypes", DTYPES), ("directions", DIRECTIONS), ("methods", METHODS)):
        config[key] = [x for x in order if x in set(oc[key]) | set(nc[key])]
    doc["config"] = config
    doc["matmul_runs"] = list(old.get("matmul_runs", [])) + list(new["matmul_runs"])
    doc["matmul"] = {k: max((r[k] for r in doc["matmul_runs"] if k in r), key=lambda v: v["gflops"])
                     for k, v in new["matmul"].items()}
    doc["meta"] = dict(old["meta"])
    doc["meta"].setdefault("updates", []).append({k: new["meta"][k] for k in ("started", "argv", "attention_source_start")})
    doc["results"] = list(old["results"])
    return doc


def save(doc: dict[str, Any], path: Path) -> None:
    """Write ``doc`` to ``path`` atomically (a temporary file, then a rename)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
