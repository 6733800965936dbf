"""Prepared corpora: FASTA tokenized once into memory-mapped files. The same proteins, splits, counts
and training as from the FASTA; views that copy nothing; an interrupted or damaged prepare never
looks complete; bad input is one line."""

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import corpus_head
from safetensors.torch import load_file
from test_cli_errors import fails

from protein_performer.cli import main
from protein_performer.data import (
    DEFAULT_ALPHABET,
    EncodedCorpus,
    FastaError,
    PackedDataset,
    PreparedCorpusError,
    data_fingerprint,
    open_prepared,
    prepare,
)
from protein_performer.training import evaluate, start_training
from protein_performer.training.objective import amino_acid_frequencies

V = len(DEFAULT_ALPHABET)


@pytest.fixture(scope="module")
def fasta(tmp_path_factory) -> Path:
    return corpus_head(tmp_path_factory.mktemp("data") / "small.fasta", 1500)


@pytest.fixture(scope="module")
def prepared(fasta, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "corpus"
    prepare(fasta, out)
    return out


def test_a_prepared_corpus_is_the_fasta_corpus_memory_mapped(fasta, prepared, tmp_path):
    expected, corpus = EncodedCorpus.from_fasta(fasta), open_prepared(prepared)
    assert isinstance(corpus.residues, np.memmap) and len(corpus) == len(expected) == 1500
    assert list(corpus.ids) == list(expected.ids) and np.array_equal(corpus.residues, expected.residues)
    assert np.array_equal(corpus.offsets, expected.offsets)
    for split in ("train", "valid", "test", None):
        a = expected if split is None else expected.select(split)
        b = corpus if split is None else corpus.select(split)
        assert list(b.ids) == list(a.ids) and b.lengths.tolist() == a.lengths.tolist()
        assert np.array_equal(b.residue_counts(V), np.bincount(a.residues, minlength=V))  # from the manifest
        assert np.shares_memory(b[0], corpus.residues)  # a view of the mapped file
    assert amino_acid_frequencies(corpus.select("train"), with_eos=True) == amino_acid_frequencies(expected.select("train"), with_eos=True)
    packed_a, packed_b = PackedDataset(expected.select("train"), 700, seed=3), PackedDataset(corpus.select("train"), 700, seed=3)
    assert all(torch.equal(packed_a[g], packed_b[g]) for g in range(0, 2 * len(packed_a), 13))
    # gzip input, the same corpus; the manifest records the source and its checksum
    gz = tmp_path / "small.fasta.gz"
    gz.write_bytes(gzip.compress(fasta.read_bytes()))
    manifest = prepare(gz, tmp_path / "from_gz", workers=2)
    assert manifest["workers"] == 1  # a gzip stream is read by one process
    assert np.array_equal(open_prepared(tmp_path / "from_gz").residues, corpus.residues)
    assert manifest["source"]["bytes"] == gz.stat().st_size and len(manifest["source"]["sha256"]) == 64
    assert manifest["proteins"] == 1500 and sum(s["proteins"] for s in manifest["splits"].values()) == 1500
    assert data_fingerprint(prepared) != data_fingerprint(tmp_path / "from_gz")  # another source file


def test_workers_split_a_plain_fasta_and_give_the_same_corpus(fasta, prepared, tmp_path, capsys):
    manifest = prepare(fasta, tmp_path / "parallel", workers=3)
    assert manifest["workers"] == 3
    for name in ("residues.u8", "offsets.i64", "ids.bin", "id_offsets.i64", "splits.u8", "index.train.i64"):
        assert (tmp_path / "parallel" / name).read_bytes() == (prepared / name).read_bytes(), name
    # An error in a later part names the line in the whole file; a duplicate across parts is found too.
    lines = fasta.read_text().splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith(">")]
    bad = lines.copy()
    bad[headers[1400] + 1] = "MK7" + bad[headers[1400] + 1][3:]
    broken = tmp_path / "broken.fasta"
    broken.write_text("\n".join(bad) + "\n")
    fails(capsys, ["prepare", "--fasta", str(broken), "--out", str(tmp_path / "b"), "--workers", "3"],
          f"{broken}, line {headers[1400] + 2}: invalid letter '7'")
    twice = lines.copy()
    twice[headers[1300]] = lines[headers[2]]
    duplicated = tmp_path / "duplicated.fasta"
    duplicated.write_text("\n".join(twice) + "\n")
    fails(capsys, ["prepare", "--fasta", str(duplicated), "--out", str(tmp_path / "d"), "--workers", "3"],
          f"{duplicated}, line {headers[1300] + 1}: duplicate id {lines[headers[2]][1:].split()[0]!r} (first seen at line {headers[2] + 1})")
    manifest = prepare(duplicated, tmp_path / "d", workers=3, skip_invalid=True)
    assert manifest["proteins"] == 1499 and manifest["skipped"]["duplicate"] == 1
    serial = prepare(duplicated, tmp_path / "d1", skip_invalid=True)
    assert (tmp_path / "d" / "residues.u8").read_bytes() == (tmp_path / "d1" / "residues.u8").read_bytes()
    assert serial["counts"] == manifest["counts"] and serial["splits"] == manifest["splits"]


def test_training_on_a_prepared_corpus_equals_training_on_its_fasta(fasta, prepared, tmp_path):
    options = {"seq_len": 64, "batch_size": 4, "micro_batch_size": 2, "max_steps": 3, "eval_every": 3, "save_every": 3,
               "eval_sequences": 8, "precision": "fp32"}
    model = {"num_features": 16, "redraw_interval": 2}
    for name, data in (("fasta", fasta), ("prepared", prepared)):
        trainer = start_training(tmp_path / name, preset_name="tiny", model_options=model, train_options={**options, "data": str(data)})
        trainer.fit(progress=False)
    a, b = load_file(str(tmp_path / "fasta" / "model.safetensors")), load_file(str(tmp_path / "prepared" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    on_dir = evaluate(tmp_path / "prepared", prepared, max_sequences=20)
    on_fasta = evaluate(tmp_path / "prepared", fasta, max_sequences=20)
    assert on_dir == on_fasta


def test_an_interrupted_prepare_never_looks_complete(fasta, tmp_path, monkeypatch):
    from protein_performer.data import prepared as module

    out = tmp_path / "corpus"
    calls = []

    def failing_flush(self):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(module._PartWriter, "flush", failing_flush)
    with pytest.raises(KeyboardInterrupt):
        prepare(fasta, out)
    assert calls and not out.exists() and not out.with_name("corpus.partial").exists()
    monkeypatch.undo()
    # What kill -9 leaves: a .partial folder without a manifest. Opening it says so; prepare replaces it.
    partial = out.with_name("corpus.partial")
    partial.mkdir()
    (partial / "residues.u8").write_bytes(b"\x05" * 100)
    with pytest.raises(PreparedCorpusError, match="not a prepared corpus"):
        open_prepared(partial)
    prepare(fasta, out)
    assert not partial.exists() and len(open_prepared(out)) == 1500


@pytest.mark.slow
def test_kill_9_during_prepare_leaves_no_corpus(tmp_path):
    big = tmp_path / "big.fasta"
    rng = np.random.default_rng(0)
    letters = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", dtype=np.uint8)
    with open(big, "wb") as f:
        for i in range(60_000):
            f.write(b">P%07d\n" % i + letters[rng.integers(0, 20, 400)].tobytes() + b"\n")
    out = tmp_path / "corpus"
    process = subprocess.Popen([sys.executable, "-m", "protein_performer", "prepare", "--fasta", str(big), "--out", str(out),
                                "--quiet"], stderr=subprocess.PIPE)
    partial = out.with_name("corpus.partial")
    deadline = time.monotonic() + 60
    while not (partial / "ids.bin").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists() and partial.exists()
    assert main(["train", "--data", str(partial), "--out", str(tmp_path / "run"), "--max-steps", "1", "--quiet"]) == 2
    prepare(big, out)
    assert len(open_prepared(out)) == 60_000 and not partial.exists()


def test_damaged_corpus_and_bad_input_are_one_line(fasta, prepared, tmp_path, capsys):
    fails(capsys, ["prepare", "--fasta", str(fasta), "--out", str(prepared)], "already exists")
    bad = tmp_path / "bad.fasta"
    bad.write_text(">a\nMKV\n>b\nMK1V\n")
    fails(capsys, ["prepare", "--fasta", str(bad), "--out", str(tmp_path / "c")], f"{bad}, line 4: invalid letter '1'")
    assert not (tmp_path / "c").exists() and not (tmp_path / "c.partial").exists()
    assert main(["prepare", "--fasta", str(bad), "--out", str(tmp_path / "c"), "--skip-invalid", "--quiet"]) == 0
    assert "skipped 1 malformed records" in capsys.readouterr().out and len(open_prepared(tmp_path / "c")) == 1
    fails(capsys, ["prepare", "--fasta", str(tmp_path / "missing.fa"), "--out", str(tmp_path / "d")], "not found")
    damaged = tmp_path / "damaged"
    prepare(fasta, damaged)
    with open(damaged / "residues.u8", "r+b") as f:
        f.truncate(1000)
    fails(capsys, ["train", "--data", str(damaged), "--out", str(tmp_path / "run"), "--quiet"], "residues.u8: 1000 bytes")
    assert not (tmp_path / "run").exists()
    with pytest.raises(FastaError):
        prepare(bad, tmp_path / "e")
