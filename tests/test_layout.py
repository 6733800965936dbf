"""The layout's promises that a change could quietly break."""

from pathlib import Path

from layout import measure

import protein_performer

PACKAGE = Path(protein_performer.__file__).parent


def test_run_directory_files_are_named_in_one_module():
    assert measure(PACKAGE)["modules_naming_run_files"] == ["rundir.py"]


def test_measure_finds_names_and_sizes(tmp_path):
    (tmp_path / "a.py").write_text('def f():\n    return "metrics.jsonl"\n')
    (tmp_path / "b.py").write_text("x = 1\n")
    result = measure(tmp_path)
    assert result["modules_naming_run_files"] == ["a.py"] and result["longest_functions"][0] == ("a.py:f", 2)
    assert result["modules"] == 2 and result["lines"] == 3
