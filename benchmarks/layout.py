"""The package's layout in numbers: module and function sizes, and which modules spell the names of a
run directory's files (the target is one: ``rundir.py``). Writes ``runs/layout/results.json`` and
prints the table that docs/layout.md quotes.

    python benchmarks/layout.py [--root src/protein_performer] [--out runs/layout]
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A run directory's file names, as string literals.
RUN_FILES = re.compile(r"""["'](config\.json|model\.safetensors|metrics\.jsonl|train_config\.json|frequencies\.json|checkpoints|"""
                       r"""trainer_state\.(?:json|safetensors)|latest|training_curves\.png)["']""")


def measure(root: Path) -> dict:
    """Sizes (lines) of every module and function under ``root``, and the modules that spell a
    run-directory file name."""
    modules, functions, naming = {}, {}, []
    for path in sorted(root.rglob("*.py")):
        name = str(path.relative_to(root))
        text = path.read_text()
        modules[name] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions[f"{name}:{node.name}"] = node.end_lineno - node.lineno + 1
        if RUN_FILES.search(text):
            naming.append(name)
    largest = sorted(modules.items(), key=lambda kv: -kv[1])
    longest = sorted(functions.items(), key=lambda kv: -kv[1])
    return {"modules": len(modules), "lines": sum(modules.values()), "largest_modules": largest[:5],
            "longest_functions": longest[:5], "functions_over_50_lines": sum(v > 50 for v in functions.values()),
            "modules_naming_run_files": naming}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(ROOT / "src" / "protein_performer"))
    parser.add_argument("--out", default="runs/layout")
    args = parser.parse_args()
    result = measure(Path(args.root))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['modules']} modules, {result['lines']:,} lines; functions over 50 lines: {result['functions_over_50_lines']}")
    print("largest modules: " + ", ".join(f"{n} {v}" for n, v in result["largest_modules"]))
    print("longest functions: " + ", ".join(f"{n} {v}" for n, v in result["longest_functions"]))
    print("modules naming run-directory files: " + ", ".join(result["modules_naming_run_files"]))


if __name__ == "__main__":
    main()
