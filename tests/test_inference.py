"""protein_performer.inference.model and .mutations: log-probabilities, fill-mask, variant scores,
pseudo-perplexity, and the CLI's one-line errors (fill-mask, score, missing / corrupt checkpoints)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import protein_performer
from protein_performer.cli import main
from protein_performer.data import DEFAULT_ALPHABET, STANDARD_AMINO_ACIDS
from protein_performer.inference import (
    MutationError,
    ProteinLanguageModel,
    length_batches,
    parse_mutant,
    parse_mutations,
    read_mutations_csv,
)
from protein_performer.model import PerformerConfig, PerformerLM
from protein_performer.rundir import save_model as save_weights

SEQ = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
STD = list(DEFAULT_ALPHABET.standard_idx)


def make_model_dir(directory: Path, objective: str, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = PerformerConfig(d_model=32, num_layers=2, num_heads=4, d_ff=64, num_features=32, objective=objective, dropout=0.0)
    model = PerformerLM(config)
    with torch.no_grad():  # a random LM head is nearly uniform; a larger bias makes the rankings distinct
        model.lm_head.bias.normal_(0, 1.0)
    save_weights(model, config, directory)
    return directory


@pytest.fixture(scope="module", params=["mlm", "causal"])
def model_dir(request, tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("mlm_cli"), "mlm")


def logits_of(plm: ProteinLanguageModel, sequence: str) -> torch.Tensor:
    tokens = torch.tensor(DEFAULT_ALPHABET.encode(sequence, add_special_tokens=True))
    with torch.no_grad():
        return plm.model(tokens[None])["logits"][0]


# ---- loading -------------------------------------------------------------------------------------
def test_load_returns_eval_model_with_alphabet(model_dir):
    plm = protein_performer.load(model_dir)
    assert isinstance(plm, ProteinLanguageModel)
    assert not plm.training and not plm.model.training
    assert plm.alphabet is DEFAULT_ALPHABET
    assert plm.config.objective in ("mlm", "causal")


def test_load_puts_the_model_on_the_device_given(mlm_dir):
    plm = protein_performer.load(mlm_dir, device="cpu")
    assert plm.device == torch.device("cpu") and all(p.device.type == "cpu" for p in plm.parameters())
    with pytest.raises(ValueError, match=r"unknown device 'gpu': `device` is cpu, cuda or cuda:N"):
        protein_performer.load(mlm_dir, device="gpu")


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        protein_performer.load(tmp_path / "nowhere")


# ---- residue_log_probs ---------------------------------------------------------------------------
def test_residue_log_probs_normalized_and_equal_manual(model_dir):
    plm = protein_performer.load(model_dir)
    lp = plm.residue_log_probs(SEQ)
    assert lp.shape == (len(SEQ), 20)
    torch.testing.assert_close(lp.logsumexp(-1), torch.zeros(len(SEQ)), atol=1e-5, rtol=0)
    logits = logits_of(plm, SEQ)  # [L + 2, V]
    rows = logits[:-2] if plm.config.causal else logits[1:-1]  # causal: residue i from the token before it
    torch.testing.assert_close(lp, F.log_softmax(rows[:, STD], -1))


def test_residue_log_probs_causal_uses_only_left_context(tmp_path):
    plm = protein_performer.load(make_model_dir(tmp_path, "causal"))
    changed = SEQ[:10] + ("A" if SEQ[10] != "A" else "G") + SEQ[11:]
    a, b = plm.residue_log_probs(SEQ), plm.residue_log_probs(changed)
    torch.testing.assert_close(a[:11], b[:11])  # residue 10's own distribution does not see residue 10
    assert not torch.allclose(a[11:], b[11:])


def test_residue_log_probs_case_and_bad_letters(model_dir):
    plm = protein_performer.load(model_dir)
    torch.testing.assert_close(plm.residue_log_probs(SEQ.lower()), plm.residue_log_probs(SEQ))
    with pytest.raises(ValueError, match=r"invalid letter 'J' at position 4"):
        plm.residue_log_probs("MKTJLL")
    with pytest.raises(ValueError, match="invalid token '<mask>' at position 4"):
        plm.residue_log_probs("MKT<mask>LL")
    with pytest.raises(ValueError, match="empty sequence"):
        plm.residue_log_probs("")


# ---- fill-mask -----------------------------------------------------------------------------------
def test_fill_mask_top_k_sorted_and_equal_manual(model_dir):
    plm = protein_performer.load(model_dir)
    masked = "MKT<mask>YIAKQ<mask>QIS"
    preds = plm.fill_mask(masked, top_k=4)
    assert [p.position for p in preds] == [4, 10]
    tokens = torch.tensor(DEFAULT_ALPHABET.encode(masked, add_special_tokens=True))
    with torch.no_grad():
        logits = plm.model(tokens[None])["logits"][0]
    for p in preds:
        assert len(p.residues) == 4
        assert list(p.probabilities) == sorted(p.probabilities, reverse=True)
        row = logits[p.position - 1] if plm.config.causal else logits[p.position]
        probs = F.softmax(row[STD], -1)
        expected = probs.topk(4)
        assert list(p.residues) == [STANDARD_AMINO_ACIDS[i] for i in expected.indices.tolist()]
        torch.testing.assert_close(torch.tensor(p.probabilities), expected.values)
    with pytest.raises(ValueError, match="no <mask>"):
        plm.fill_mask(SEQ)
    with pytest.raises(ValueError, match="top_k"):
        plm.fill_mask(masked, top_k=21)


# ---- variant scores ------------------------------------------------------------------------------
def manual_masked_marginal(plm: ProteinLanguageModel, sequence: str, index: int) -> torch.Tensor:
    """log p over the 20 standard amino acids at 0-based ``index``, masked (mlm) or left context (causal)."""
    if plm.config.causal:
        return F.log_softmax(logits_of(plm, sequence)[index, STD], -1)
    masked = sequence[:index] + "<mask>" + sequence[index + 1 :]
    return F.log_softmax(logits_of(plm, masked)[index + 1, STD], -1)


def test_score_equals_manual_masked_marginals(model_dir):
    plm = protein_performer.load(model_dir)
    col = STANDARD_AMINO_ACIDS.index
    scores = plm.score_mutations(SEQ, ["A4G", "K2L", "A4G:K2L", "Q11W"], tokens_per_batch=40)  # budget forces several batches
    expected = []
    for wt, pos, mt in (("A", 4, "G"), ("K", 2, "L"), ("Q", 11, "W")):
        lp = manual_masked_marginal(plm, SEQ, pos - 1)
        expected.append(float(lp[col(mt)] - lp[col(wt)]))
    assert scores[0] == pytest.approx(expected[0], abs=1e-5)
    assert scores[1] == pytest.approx(expected[1], abs=1e-5)
    assert scores[3] == pytest.approx(expected[2], abs=1e-5)
    assert scores[2] == pytest.approx(float(scores[0] + scores[1]), abs=1e-9)  # multi-mutant = sum of its sites
    with pytest.raises(MutationError, match=r"A4A: the mutant letter is the wild type.s, so it changes nothing"):
        plm.score_mutations(SEQ, ["A4A"])


def test_score_errors(model_dir):
    plm = protein_performer.load(model_dir)
    with pytest.raises(MutationError, match="A23G: position 23 is K, not A"):
        plm.score_mutations(SEQ[:22] + "K" + SEQ[23:], ["A23G"])
    with pytest.raises(MutationError, match=r"position 99 is outside the sequence \(1..33\)"):
        plm.score_mutations(SEQ, ["A99G"])
    with pytest.raises(ValueError, match="invalid letter"):
        plm.score_mutations("MK1A", ["A4G"])


def test_pseudo_perplexity_equals_manual(model_dir):
    plm = protein_performer.load(model_dir)
    seq = SEQ[:12]
    tokens = DEFAULT_ALPHABET.encode(seq)
    if plm.config.causal:
        logits = logits_of(plm, seq)[:-2]
        nll = F.cross_entropy(logits, torch.tensor(tokens))
    else:
        nll = torch.stack([
            F.cross_entropy(logits_of(plm, seq[:i] + "<mask>" + seq[i + 1:])[i + 1], torch.tensor(tokens[i]))
            for i in range(len(seq))
        ]).mean()
    assert plm.pseudo_perplexity(seq, tokens_per_batch=50) == pytest.approx(float(nll.exp()), rel=1e-5)


def test_parse_mutations():
    m = parse_mutant("a23g:L45P")
    assert str(m) == "A23G:L45P" and [s.index for s in m.substitutions] == [22, 44]
    assert [str(x) for x in parse_mutations("A23G, L45P,A23G:L45P")] == ["A23G", "L45P", "A23G:L45P"]
    assert m.apply("A" * 22 + "A" + "C" * 21 + "L") == "A" * 22 + "G" + "C" * 21 + "P"
    for bad, message in [("A23", "malformed"), ("23G", "malformed"), ("A0G", "1-based"), ("J23G", "wild-type letter 'J'"),
                         ("A23X", "mutant letter 'X'"), ("A23G:A23C", "at most once"), ("", "empty")]:
        with pytest.raises(MutationError, match=message):
            parse_mutant(bad)


def test_read_mutations_csv(tmp_path):
    path = tmp_path / "dms.csv"
    path.write_text("mutant,fitness\nA4G,0.5\nK2L:A4G,-1\n")
    rows, mutants = read_mutations_csv(path)
    assert [r["fitness"] for r in rows] == ["0.5", "-1"] and [str(m) for m in mutants] == ["A4G", "K2L:A4G"]
    path.write_text("variant\nA4G\n")
    with pytest.raises(MutationError, match="no 'mutant' column"):
        read_mutations_csv(path)
    path.write_text("mutant\nA4G\nA4\n")
    with pytest.raises(MutationError, match="line 3: malformed"):
        read_mutations_csv(path)


def test_length_batches_respect_budget():
    lengths = [5, 100, 30, 30, 7, 2000, 1]
    batches = length_batches(lengths, 128)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[0] == [5]  # longest first, alone over the budget
    for b in batches[1:]:
        assert len(b) * (max(lengths[i] for i in b) + 2) <= 128


# ---- CLI -----------------------------------------------------------------------------------------
def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "protein_performer", *args], capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess | tuple[int, str], needle: str) -> None:
    code, err = (result.returncode, result.stderr) if isinstance(result, subprocess.CompletedProcess) else result
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("protein-performer: error:"), err
    assert needle in lines[0], lines[0]


def cli_in_process(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def test_cli_fill_mask_and_score_output(mlm_dir, capsys):
    assert main(["fill-mask", "--checkpoint", str(mlm_dir), "--sequence", "MKT<mask>LL", "--top-k", "3"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("position 4: ") and len(out[0].split()) == 2 + 2 * 3
    assert main(["score", "--checkpoint", str(mlm_dir), "--sequence", SEQ, "--mutations", "A4G,K2L,A4G:K2L"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "mutant,score" and [line.split(",")[0] for line in lines[1:]] == ["A4G", "K2L", "A4G:K2L"]
    s = [float(line.split(",")[1]) for line in lines[1:]]
    assert s[2] == pytest.approx(s[0] + s[1], abs=2e-6)
    assert main(["score", "--checkpoint", str(mlm_dir), "--sequence", SEQ[:10], "--pseudo-perplexity"]) == 0
    assert capsys.readouterr().out.startswith("pseudo-perplexity: ")


def test_cli_score_csv(mlm_dir, tmp_path, capsys):
    path, out = tmp_path / "dms.csv", tmp_path / "scores.csv"
    path.write_text("mutant,fitness\nA4G,0.5\nK2L,-1\n")
    assert main(["score", "--checkpoint", str(mlm_dir), "--sequence", SEQ, "--mutations-csv", str(path), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "mutant,fitness,score" and lines[1].startswith("A4G,0.5,")


def test_cli_errors_in_process(mlm_dir, tmp_path, capsys):
    ck = ["--checkpoint", str(mlm_dir)]
    assert_one_line_error(cli_in_process(capsys, "fill-mask", *ck, "--sequence", "MKTLL"), "no <mask>")
    assert_one_line_error(cli_in_process(capsys, "score", *ck, "--sequence", SEQ, "--mutations", "K4G"),
                          "K4G: position 4 is A, not K")
    assert_one_line_error(cli_in_process(capsys, "score", *ck, "--sequence", SEQ, "--mutations", "A4"), "malformed mutation 'A4'")
    assert_one_line_error(cli_in_process(capsys, "score", *ck, "--sequence", SEQ), "nothing to score")
    assert_one_line_error(cli_in_process(capsys, "score", *ck, "--sequence", SEQ, "--mutations-csv", str(tmp_path / "no.csv")),
                          "not found")


@pytest.mark.slow
def test_cli_errors_subprocess(mlm_dir, tmp_path):
    """No traceback reaches the user: one line, exit status 2 (run as a user runs it)."""
    assert_one_line_error(run_cli("score", "--checkpoint", str(mlm_dir), "--sequence", SEQ, "--mutations", "A99G"),
                          "position 99 is outside the sequence (1..33)")
    assert_one_line_error(run_cli("fill-mask", "--checkpoint", str(mlm_dir), "--sequence", "MKT<mask>JL"),
                          "invalid letter 'J' at position 5")
    assert_one_line_error(run_cli("fill-mask", "--checkpoint", str(tmp_path / "missing"), "--sequence", "MKT<mask>"), "not found")
    corrupt = tmp_path / "corrupt"
    make_model_dir(corrupt, "mlm")
    data = (corrupt / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert_one_line_error(run_cli("fill-mask", "--checkpoint", str(corrupt), "--sequence", "MKT<mask>"), "corrupt or incomplete")
