"""protein_performer.inference embeddings: ProteinLanguageModel.embed at any length and the HDF5 writer
(round trip, escaped ids, resume skipping complete ids, settings checks, one-line CLI errors)."""

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import protein_performer
from protein_performer.cli import main
from protein_performer.data import DEFAULT_ALPHABET, FastaError
from protein_performer.inference import group_name, read_embeddings, record_id, write_embeddings
from protein_performer.model import PerformerConfig, PerformerLM
from protein_performer.rundir import save_model as save_weights

RECORDS = {
    "sp|P12345|A/B": "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ",
    "plain": "GSHMLEDPVDAFQ",
    "100%/x": "ACDEFGHIKLMNPQRSTVWYBXZUO",
    "..": "MKV",
}


def make_model_dir(directory: Path, objective: str = "mlm") -> Path:
    torch.manual_seed(0)
    config = PerformerConfig(d_model=32, num_layers=2, num_heads=4, d_ff=64, num_features=32, objective=objective, dropout=0.0)
    save_weights(PerformerLM(config), config, directory)
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def plm(model_dir):
    return protein_performer.load(model_dir)


def write_fasta(path: Path, records: dict[str, str]) -> Path:
    path.write_text("".join(f">{k} some description\n{v}\n" for k, v in records.items()))
    return path


def direct(plm, sequence: str, layer: int) -> torch.Tensor:
    tokens = torch.tensor(DEFAULT_ALPHABET.encode(sequence, add_special_tokens=True))
    with torch.no_grad():
        return plm.model(tokens[None], repr_layers=(layer,))["representations"][layer][0, 1:-1]


@pytest.mark.parametrize("objective", ["mlm", "causal"])
def test_embed_long_sequence_whole_equals_direct_forward(tmp_path, objective):
    plm = protein_performer.load(make_model_dir(tmp_path, objective))
    sequence = "".join(np.random.default_rng(0).choice(list("ACDEFGHIKLMNPQRSTVWY"), 5000))
    out = plm.embed(sequence, layers=-1, tokens_per_batch=1024)  # over the budget: runs alone, not cropped
    assert out.shape == (5000, 32)
    torch.testing.assert_close(out, direct(plm, sequence, 2))


def test_embed_batched_with_padding_equals_single(plm):
    seqs = [*RECORDS.values(), "M" * 70]
    batched = plm.embed(seqs, layers=[0, 1, -1], tokens_per_batch=200)  # several batches, padded
    for seq, reps in zip(seqs, batched):
        assert set(reps) == {0, 1, 2}
        for layer in (0, 1, 2):
            assert reps[layer].shape == (len(seq), 32)
            torch.testing.assert_close(reps[layer], direct(plm, seq, layer), atol=1e-5, rtol=1e-4)
    means = plm.embed(seqs, layers=-1, per_residue=False)
    for seq, mean in zip(seqs, means):
        torch.testing.assert_close(mean, direct(plm, seq, 2).mean(0), atol=1e-5, rtol=1e-4)


def test_embed_layer_errors(plm):
    with pytest.raises(ValueError, match="layer 3 does not exist"):
        plm.embed("MKT", layers=3)
    with pytest.raises(ValueError, match="layer -4 does not exist"):
        plm.embed("MKT", layers=[-4])
    assert plm.resolve_layers([-1, 2, 0, -3]) == (2, 0)


@pytest.mark.parametrize("record", [*RECORDS, "%2F", "a/b/c", ".", "x.y"])
def test_group_names_are_valid_and_reversible(tmp_path, record):
    name = group_name(record)
    assert "/" not in name and set(name) != {"."}
    assert record_id(name) == record
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f.create_group(name)
        assert list(f) == [name]


def test_h5_round_trip(plm, tmp_path):
    fasta = write_fasta(tmp_path / "in.fa", RECORDS)
    out = tmp_path / "out" / "emb.h5"
    stats = write_embeddings(plm, fasta, out, per_residue=True, tokens_per_batch=64, progress=False)
    assert (stats.sequences, stats.written, stats.skipped, stats.residues) == (4, 4, 0, sum(map(len, RECORDS.values())))
    data = read_embeddings(out)
    assert set(data) == set(RECORDS)
    for rid, seq in RECORDS.items():
        expected = direct(plm, seq, 2)
        assert set(data[rid]) == {"mean", "per_residue"}
        np.testing.assert_allclose(data[rid]["per_residue"], expected.numpy(), atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(data[rid]["mean"], expected.mean(0).numpy(), atol=1e-5, rtol=1e-4)
    with h5py.File(out) as f:
        assert f["sp|P12345|A%2FB"].attrs["id"] == "sp|P12345|A/B"
        assert f["sp|P12345|A%2FB"].attrs["length"] == len(RECORDS["sp|P12345|A/B"])
        assert list(f.attrs["layers"]) == [2]


def test_h5_several_layers_mean_only(plm, tmp_path):
    fasta = write_fasta(tmp_path / "in.fa", {"a": "MKTAYIAK", "b": "GSHM"})
    write_embeddings(plm, fasta, tmp_path / "e.h5", layers=[0, -1], progress=False)
    data = read_embeddings(tmp_path / "e.h5")
    assert set(data["a"]) == {"mean_layer0", "mean_layer2"}
    np.testing.assert_allclose(data["b"]["mean_layer0"], direct(plm, "GSHM", 0).mean(0).numpy(), atol=1e-6)


def test_h5_rerun_skips_complete_and_rewrites_incomplete(plm, tmp_path):
    fasta = write_fasta(tmp_path / "in.fa", RECORDS)
    out = tmp_path / "emb.h5"
    write_embeddings(plm, fasta, out, per_residue=True, progress=False)
    with h5py.File(out, "a") as f:
        f["plain/mean"][...] = 7.0  # a complete group: must be left alone by the re-run
        broken = f["sp|P12345|A%2FB"]  # an interrupted write: incomplete, wrong data
        broken.attrs["complete"] = False
        del broken["per_residue"]
        broken["mean"][...] = -1.0
    stats = write_embeddings(plm, fasta, out, per_residue=True, progress=False)
    assert (stats.written, stats.skipped) == (1, 3)
    data = read_embeddings(out)
    assert np.all(data["plain"]["mean"] == 7.0)
    expected = direct(plm, RECORDS["sp|P12345|A/B"], 2)
    np.testing.assert_allclose(data["sp|P12345|A/B"]["per_residue"], expected.numpy(), atol=1e-5, rtol=1e-4)
    # a new record in the FASTA is added, the others skipped
    write_fasta(fasta, {**RECORDS, "new": "MKKL"})
    stats = write_embeddings(plm, fasta, out, per_residue=True, progress=False)
    assert (stats.written, stats.skipped) == (1, 4) and "new" in read_embeddings(out)


def test_h5_rerun_with_other_settings_or_model_is_refused(plm, tmp_path):
    fasta = write_fasta(tmp_path / "in.fa", {"a": "MKTAYIAK"})
    out = tmp_path / "emb.h5"
    write_embeddings(plm, fasta, out, progress=False)
    with pytest.raises(ValueError, match="per_residue=False, this run has per_residue=True"):
        write_embeddings(plm, fasta, out, per_residue=True, progress=False)
    with pytest.raises(ValueError, match="layers="):
        write_embeddings(plm, fasta, out, layers=[0], progress=False)
    other = protein_performer.load(make_model_dir(tmp_path / "other", "causal"))
    with pytest.raises(ValueError, match="model_fingerprint"):
        write_embeddings(other, fasta, out, progress=False)


def test_h5_input_errors(plm, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        write_embeddings(plm, tmp_path / "missing.fa", tmp_path / "o.h5", progress=False)
    (tmp_path / "empty.fa").write_text("")
    with pytest.raises(ValueError, match="holds no sequences"):
        write_embeddings(plm, tmp_path / "empty.fa", tmp_path / "o.h5", progress=False)
    (tmp_path / "dup.fa").write_text(">a\nMKT\n>a\nMKV\n")
    with pytest.raises(FastaError, match="duplicate id 'a'"):
        write_embeddings(plm, tmp_path / "dup.fa", tmp_path / "o.h5", progress=False)
    (tmp_path / "not.h5").write_text("hello")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        write_embeddings(plm, write_fasta(tmp_path / "ok.fa", {"a": "MKT"}), tmp_path / "not.h5", progress=False)


def test_cli_embed(model_dir, tmp_path, capsys):
    fasta = write_fasta(tmp_path / "in.fa", RECORDS)
    out = tmp_path / "emb.h5"
    args = ["embed", "--checkpoint", str(model_dir), "--fasta", str(fasta), "--out", str(out), "--per-residue", "--quiet"]
    assert main(args) == 0
    assert "embedded 4 sequences" in capsys.readouterr().out
    assert main(args) == 0
    second = capsys.readouterr().out
    assert "embedded 0 sequences" in second and "skipped 4 already" in second
    assert set(read_embeddings(out)) == set(RECORDS)


@pytest.mark.slow
def test_cli_embed_errors_are_one_line(model_dir, tmp_path):
    (tmp_path / "empty.fa").write_text("")
    (tmp_path / "bad.fa").write_text(">a\nMKTJ\n")
    for fasta, needle in (("empty.fa", "holds no sequences"), ("bad.fa", "invalid letter 'J'")):
        result = subprocess.run([sys.executable, "-m", "protein_performer", "embed", "--checkpoint", str(model_dir),
                                 "--fasta", str(tmp_path / fasta), "--out", str(tmp_path / "o.h5")],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], result.stderr
