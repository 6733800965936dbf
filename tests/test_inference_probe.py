"""protein_performer.inference.probe: secondary-structure and contact probes on the shipped PDB slice,
with the baselines recomputed here independently."""

import gzip
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_model_dir

import protein_performer
from protein_performer.cli import main
from protein_performer.data import DATA_DIR
from protein_performer.inference import probe_split, read_chains, run_probes
from protein_performer.inference.probe import apc

SLICE = DATA_DIR / "pdb_ss_dev_slice.jsonl.gz"
Q3 = {"H": "H", "G": "H", "I": "H", "E": "E", "B": "E", "T": "C", "S": "C", "C": "C"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return random_model_dir(tmp_path_factory.mktemp("model"), d_model=32, num_layers=2, num_heads=4, d_ff=64, num_features=32)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    with gzip.open(SLICE, "rt") as f:
        return [json.loads(line) for line in f]


def is_train(chain_id: str) -> bool:  # the documented rule, written out again
    bucket = (int.from_bytes(hashlib.blake2b(chain_id.encode(), digest_size=8).digest(), "big") >> 11) / 2.0**53
    return bucket < 0.8


def majority_baseline(rows: list[dict], reduce=lambda s: s) -> float:
    train = Counter(reduce(s) for r in rows if is_train(r["id"]) for s in r["dssp8"])
    test = Counter(reduce(s) for r in rows if not is_train(r["id"]) for s in r["dssp8"])
    return test[train.most_common(1)[0][0]] / sum(test.values())


def held_out_coordinates(rows: list[dict], crop: int):
    """Cα coordinates in Å of each test chain, cropped to ``crop`` residues."""
    for r in rows:
        if not is_train(r["id"]):
            yield np.array(r["ca_centi_angstrom"][:crop]) / 100


def contact_baseline(rows: list[dict], crop: int) -> float:
    fractions = []
    for ca in held_out_coordinates(rows, crop):
        n = len(ca)
        far = [(i, j) for i in range(n) for j in range(i + 24, n)]
        if far:
            fractions.append(np.mean([np.linalg.norm(ca[i] - ca[j]) < 8 for i, j in far]))
    return float(np.mean(fractions))


def test_read_chains_and_split(rows):
    chains = read_chains(SLICE)
    assert len(chains) == 60 == len(rows)
    assert chains[0].id == rows[0]["id"] and chains[0].ca.shape == (len(rows[0]["sequence"]), 3)
    assert chains[0].ca[0, 0] == pytest.approx(rows[0]["ca_centi_angstrom"][0][0] / 100)
    assert all((probe_split(c.id) == "train") == is_train(c.id) for c in chains)
    assert 0.6 < sum(is_train(c.id) for c in chains) / 60 < 0.95


def test_read_chains_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_chains(tmp_path / "missing.jsonl.gz")
    good = {"id": "X_A", "sequence": "MKV", "dssp8": "CHC", "ca_centi_angstrom": [[0, 0, 0]] * 3}
    cases = [("{not json", "line 2: expected a JSON object"),
             (json.dumps({**good, "dssp8": "CH"}), "one dssp8 letter and one [x, y, z] per residue"),
             (json.dumps({**good, "dssp8": "CHX"}), "DSSP states 'X'"),
             (json.dumps({"id": "X_A"}), "expected a JSON object")]
    for line, message in cases:
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps(good) + "\n" + line + "\n")
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            read_chains(path)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no chains"):
        read_chains(tmp_path / "empty.jsonl")


def test_apc_removes_row_column_effects():
    x = torch.outer(torch.arange(1.0, 5.0), torch.arange(2.0, 6.0))  # rank one: pure row x column background
    torch.testing.assert_close(apc(x), torch.zeros(4, 4))


def test_probe_cli_json_on_slice(model_dir, rows, capsys):
    assert main(["probe", "--checkpoint", str(model_dir), "--data", str(SLICE), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("q3", "q8", "q3_baseline", "q8_baseline", "contact_precision", "contact_baseline"):
        assert 0.0 <= result[key] <= 1.0, key
    n_train = sum(is_train(r["id"]) for r in rows)
    assert (result["chains_train"], result["chains_test"]) == (n_train, 60 - n_train)
    assert result["residues_test"] == sum(len(r["sequence"]) for r in rows if not is_train(r["id"]))
    assert result["q8_baseline"] == pytest.approx(majority_baseline(rows))
    assert result["q3_baseline"] == pytest.approx(majority_baseline(rows, Q3.get))
    assert result["contact_baseline"] == pytest.approx(contact_baseline(rows, 1024))
    # even a random model's embeddings carry the amino acid, which a linear probe turns into more than the majority class
    assert result["q3"] > result["q3_baseline"]


def test_probe_embedding_contacts_cropped(model_dir, rows):
    plm = protein_performer.load(model_dir)
    result = run_probes(plm, read_chains(SLICE), layer=1, contact_features="embedding", max_length=100)
    assert result["layer"] == 1 and result["contact_features"] == "embedding"
    assert 0.0 <= result["contact_precision"] <= 1.0
    assert result["contact_baseline"] == pytest.approx(contact_baseline(rows, 100))
    assert result["q8_baseline"] == pytest.approx(majority_baseline(rows))  # cropping is for contacts only


def test_probe_needs_both_splits(model_dir):
    plm = protein_performer.load(model_dir)
    chains = [c for c in read_chains(SLICE) if probe_split(c.id) == "train"][:3]
    with pytest.raises(ValueError, match="need both"):
        run_probes(plm, chains)


def test_probe_progress_is_on_stderr_and_changes_no_number(model_dir, capsys, monkeypatch):
    import functools

    from protein_performer.inference import probe

    monkeypatch.setattr(probe, "fit_logistic", functools.partial(probe.fit_logistic, max_iter=5))  # seconds, not half a minute
    plm = protein_performer.load(model_dir)
    chains = sorted(read_chains(SLICE), key=len)[:16]  # short ones: both splits, a few seconds
    quiet = run_probes(plm, chains, contact_features="embedding", max_length=60)
    assert capsys.readouterr().err == ""
    shown = run_probes(plm, chains, contact_features="embedding", max_length=60, progress=True)
    err = capsys.readouterr().err
    assert shown == quiet  # bit for bit
    for phase in ("probe: embed", "probe: secondary structure", "probe: contacts"):
        assert phase in err


def per_letter_majority(rows: list[dict], reduce=lambda s: s) -> float:
    """Test accuracy of predicting, for each amino acid, the class most frequent for it in the train chains."""
    by_letter: dict[str, Counter] = {}
    for r in rows:
        if is_train(r["id"]):
            for a, s in zip(r["sequence"], r["dssp8"], strict=True):
                by_letter.setdefault(a, Counter())[reduce(s)] += 1
    overall = Counter(reduce(s) for r in rows if is_train(r["id"]) for s in r["dssp8"]).most_common(1)[0][0]
    right = total = 0
    for r in rows:
        if not is_train(r["id"]):
            for a, s in zip(r["sequence"], r["dssp8"], strict=True):
                guess = by_letter[a].most_common(1)[0][0] if a in by_letter else overall
                right, total = right + (guess == reduce(s)), total + 1
    return right / total


def separation_baseline(rows: list[dict], crop: int) -> float:
    precisions = []
    for ca in held_out_coordinates(rows, crop):
        n = len(ca)
        far = sorted(((i, j) for i in range(n) for j in range(i + 24, n)), key=lambda p: (p[1] - p[0], p[0]))
        if far:
            top = far[: max(1, n // 5)]
            precisions.append(np.mean([np.linalg.norm(ca[i] - ca[j]) < 8 for i, j in top]))
    return float(np.mean(precisions))


def test_fair_baselines_identity_window_and_separation(rows):
    from protein_performer.inference.probe import DSSP8, DSSP8_TO_3, SS3, identity_baselines, separation_prior

    chains = read_chains(SLICE)
    train_rows = [k for k, c in enumerate(chains) if is_train(c.id)]
    test_rows = [k for k, c in enumerate(chains) if not is_train(c.id)]
    labels8 = [torch.tensor([DSSP8.index(s) for s in c.dssp8]) for c in chains]
    to3 = torch.tensor([SS3.index(DSSP8_TO_3[s]) for s in DSSP8])
    result = identity_baselines(chains, train_rows, test_rows, labels8, to3)
    # A linear probe on one-hot identities predicts each letter's most frequent class (up to near-ties).
    assert result["q3_identity"] == pytest.approx(per_letter_majority(rows, Q3.get), abs=0.01)
    assert result["q8_identity"] == pytest.approx(per_letter_majority(rows), abs=0.01)
    # Neighbours carry local structure propensity: the window beats the residue alone, and both the majority class.
    assert result["q3_window"] > result["q3_identity"] > majority_baseline(rows, Q3.get)
    assert separation_prior(chains, test_rows, 1024) == pytest.approx(separation_baseline(rows, 1024))
    assert separation_prior(chains, test_rows, 1024) > contact_baseline(rows, 1024)  # close pairs touch more often


def test_the_docs_baseline_table_is_the_committed_probe_output():
    root = Path(__file__).resolve().parents[1]
    result = json.loads((root / "docs" / "figures" / "probe_baselines_pdb.json").read_text())
    docs = (root / "docs" / "results.md").read_text()
    for n in ("3", "8"):
        row = (f"| secondary structure Q{n} | {100 * result[f'q{n}_identity']:.1f}% | "
               f"**{100 * result[f'q{n}_window']:.1f}%** | |")
        assert row in docs, row
    assert f"| | | **{100 * result['contact_separation']:.2f}%** (closest pairs first) |" in docs
    assert (result["chains_train"], result["chains_test"]) == (1833, 492)
