"""The package as a user installs it: a wheel carries the embedded data and finds it without a checkout."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_finds_its_default_data(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next(tmp_path.glob("protein_performer-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "protein_performer/data/embedded/swissprot2014_sp50_40k.fasta.gz" in names
    assert not any(n.startswith(("benchmarks/", "tests/")) for n in names)  # scripts and tests stay in the repository
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)  # what pip install puts in site-packages
    code = ("import protein_performer.data as d; from protein_performer.data import EncodedCorpus;"
            "print(d.DEFAULT_CORPUS_PATH); print(len(EncodedCorpus.from_fasta(split='test')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}).stdout.split()
    assert Path(out[0]).is_relative_to(target) and Path(out[0]).is_file(), out
    assert int(out[1]) > 900, out


def test_metadata_builds_without_deprecation_warnings(tmp_path):
    """``project.license`` is an SPDX string (the table form makes setuptools print a boxed warning)."""
    import shutil
    import tomllib

    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    (source / "src" / "protein_performer").mkdir(parents=True)
    (source / "src" / "protein_performer" / "__init__.py").write_text("")
    (tmp_path / "meta").mkdir()
    code = "from setuptools import build_meta; import sys; build_meta.prepare_metadata_for_build_wheel(sys.argv[1])"
    result = subprocess.run([sys.executable, "-W", "always", "-c", code, str(tmp_path / "meta")], cwd=source, capture_output=True,
                            text=True, check=True)
    assert "Deprecat" not in result.stdout + result.stderr, result.stderr
    metadata = next((tmp_path / "meta").glob("*/METADATA")).read_text()
    assert "License-Expression: Apache-2.0" in metadata
