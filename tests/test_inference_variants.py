"""Variant effects as users measure them: ESM-1v's three scores, ProteinGym-style CSVs with measured
columns kept, Spearman's rho against them, and one-line errors naming the CSV line."""

import csv
import io
import json

import pytest
import torch
from scipy.stats import spearmanr
from test_inference import STD, logits_of, make_model_dir, manual_masked_marginal

import protein_performer
from protein_performer.cli import main
from protein_performer.data import STANDARD_AMINO_ACIDS
from protein_performer.inference.mutations import MutationError

SEQ = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
MUTANTS = ["A4G", "K2L", "A4G:K2L", "Q11W", "E25D"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("mlm"), "mlm")


def pll(plm, sequence: str) -> float:
    col = STANDARD_AMINO_ACIDS.index
    return sum(float(manual_masked_marginal(plm, sequence, i)[col(a)]) for i, a in enumerate(sequence))


def test_the_three_methods_by_their_definitions(model_dir):
    plm = protein_performer.load(model_dir)
    col = STANDARD_AMINO_ACIDS.index
    wt = torch.log_softmax(logits_of(plm, SEQ)[1:-1, STD], -1)  # one unmasked pass, residue rows
    scores = plm.score_mutations(SEQ, MUTANTS, method="wt-marginal")
    assert scores[0] == pytest.approx(float(wt[3, col("G")] - wt[3, col("A")]), abs=1e-5)
    assert scores[2] == pytest.approx(float(scores[0] + scores[1]), abs=1e-9)  # additive
    masked = plm.score_mutations(SEQ, MUTANTS)
    assert not torch.allclose(scores, masked)  # a different score, not the same one renamed
    pseudo = plm.score_mutations(SEQ, ["A4G", "A4G:K2L"], method="pseudo-likelihood")
    reference = pll(plm, SEQ)
    assert pseudo[0] == pytest.approx(pll(plm, SEQ[:3] + "G" + SEQ[4:]) - reference, abs=1e-4)
    assert pseudo[1] == pytest.approx(pll(plm, SEQ[:1] + "L" + SEQ[2:3] + "G" + SEQ[4:]) - reference, abs=1e-4)
    with pytest.raises(ValueError, match="`method` must be one of"):
        plm.score_mutations(SEQ, MUTANTS, method="mt-marginal")


def write_csv(path, rows, header=("mutant", "DMS_score", "score")):
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def test_measured_columns_are_kept_and_spearman_equals_scipys(model_dir, tmp_path, capsys):
    rows = [(m, 0.1 * i - 0.2, -i) for i, m in enumerate(MUTANTS)]
    data = write_csv(tmp_path / "dms.csv", rows)
    fasta = tmp_path / "wt.fasta"
    fasta.write_text(f">wt\n{SEQ}\n")
    out = tmp_path / "scored.csv"
    assert main(["score", "--checkpoint", str(model_dir), "--fasta", str(fasta), "--mutations-csv", str(data),
                 "--label-column", "DMS_score", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    written = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(written[0]) == ["mutant", "DMS_score", "score", "model_score"]  # 'score' was taken: model_score
    assert [r["score"] for r in written] == [str(r[2]) for r in rows]
    model = [float(r["model_score"]) for r in written]
    rho = spearmanr(model, [float(r["DMS_score"]) for r in written]).statistic
    assert f"Spearman rho against DMS_score: {rho:.4f} (n = 5, masked-marginal)" in printed
    assert main(["score", "--checkpoint", str(model_dir), "--sequence", SEQ, "--mutations-csv", str(data),
                 "--label-column", "score", "--method", "wt-marginal", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    wt_scores = protein_performer.load(model_dir).score_mutations(SEQ, MUTANTS, method="wt-marginal").tolist()
    assert result["spearman"] == pytest.approx(spearmanr(wt_scores, [r[2] for r in rows]).statistic, abs=1e-9)
    assert (result["n"], result["method"], result["variants"]) == (5, "wt-marginal", 5)


@pytest.mark.parametrize("rows,message", [
    ([("A4G", 1, 1), ("K2A:A4G", 2, 2), ("A4G:K2A", 3, 3)], "line 4: A4G:K2A is already on line 3"),
    ([("A4G", 1, 1), ("A4A", 2, 2)], "line 3: A4A: the mutant letter is the wild type's"),
    ([("A4G", 1, 1), ("A4J", 2, 2)], "line 3: A4J: mutant letter 'J' is not one of the 20 standard amino acids"),
    ([("A99G", 1, 1)], "line 2: A99G: position 99 is outside the sequence (1..33)"),
    ([("K4G", 1, 1)], "line 2: K4G: position 4 is A, not K"),
])
def test_bad_rows_are_one_line_errors_naming_the_line(model_dir, tmp_path, capsys, rows, message):
    data = write_csv(tmp_path / "dms.csv", rows)
    code = main(["score", "--checkpoint", str(model_dir), "--sequence", SEQ, "--mutations-csv", str(data)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err and str(data) in err, err


def test_label_and_wild_type_errors(model_dir, tmp_path, capsys):
    data = write_csv(tmp_path / "dms.csv", [("A4G", "n/a", 1), ("K2L", 2, 1)])
    two = tmp_path / "two.fasta"
    two.write_text(f">a\n{SEQ}\n>b\n{SEQ}\n")
    cases = [
        (["--sequence", SEQ, "--mutations-csv", str(data), "--label-column", "DMS_score"], "line 2: DMS_score 'n/a' is not a number"),
        (["--sequence", SEQ, "--mutations-csv", str(data), "--label-column", "fitness"], "no 'fitness' column"),
        (["--sequence", SEQ, "--mutations", "A4G", "--label-column", "score"], "--label-column names a column of --mutations-csv"),
        (["--fasta", str(two), "--mutations", "A4G"], "holds 2 records: --fasta takes the one wild-type sequence"),
    ]
    for args, message in cases:
        code = main(["score", "--checkpoint", str(model_dir), *args])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, (args, err)
    with pytest.raises(MutationError, match="Spearman's rho needs at least two different score values"):
        protein_performer.inference.score_variants(protein_performer.load(model_dir), SEQ, mutations_csv=data,
                                                   tokens_per_batch=4096).spearman("score", data)
