"""Bad input to the older commands (train, evaluate, score, embed, a bad --device): one line naming what to fix, exit
status 2, no traceback, checked before any work, and nothing of the user's lost."""

import gzip
import json
from pathlib import Path

import pytest
from conftest import random_model_dir

from protein_performer.cli import main
from protein_performer.model import PerformerConfig
from protein_performer.training import TrainConfig

SEQUENCE = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
TRAIN = ["--max-steps", "1", "--seq-len", "32", "--batch-size", "2", "--micro-batch-size", "2", "--eval-every", "1",
         "--save-every", "1", "--num-features", "8", "--quiet"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return random_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def fasta(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "small.fa"
    path.write_text(f">a\n{SEQUENCE}\n>b\nMKVLAAGIVGLLLAQPAMA\n")
    return path


def fails(capsys, argv: list[str], message: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_train_refuses_an_out_it_would_overwrite(tmp_path, capsys, fasta):
    notes = tmp_path / "folder" / "metrics.jsonl"
    notes.parent.mkdir()
    notes.write_text("my notes\n")
    fails(capsys, ["train", "--data", str(fasta), "--out", str(notes.parent), *TRAIN], "holds files but no run to resume")
    assert notes.read_text() == "my notes\n" and sorted(p.name for p in notes.parent.iterdir()) == ["metrics.jsonl"]
    fails(capsys, ["train", "--data", str(fasta), "--out", str(fasta), *TRAIN], "is a file")
    assert fasta.read_text().startswith(">a")
    run = tmp_path / "run"
    assert main(["train", "--data", str(fasta), "--out", str(run), *TRAIN]) == 0
    fails(capsys, ["train", "--data", str(fasta), "--out", str(run), "--resume", "--init-from", str(run)], "--init-from starts a new run")


@pytest.mark.parametrize("extra,message", [
    (["--batch-size", "0"], "--batch-size must be a positive integer"),
    (["--save-every", "0"], "--save-every must be a positive integer"),
    (["--keep-every", "-1"], "--keep-every must be 0 or more"),
    (["--eval-sequences", "0"], "--eval-sequences must be a positive integer"),
])
def test_train_checks_its_numbers_before_any_work(tmp_path, capsys, fasta, extra, message):
    fails(capsys, ["train", "--data", str(fasta), "--out", str(tmp_path / "r"), *TRAIN, *extra], message)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("content,message", [
    ("[1, 2]", "c.json is not a valid model config (it holds list"),
    ("{bad", "c.json is not a valid model config (Expecting"),
    ('{"d_model": "64"}', "c.json is not a valid model config (invalid model config: d_model must be int"),
    ('{"vocab_size": 5}', "vocab_size 5 is smaller than the alphabet's 30 tokens"),
    (None, "c.json not found"),
])
def test_train_config_errors_name_the_file(tmp_path, capsys, fasta, content, message):
    if content is not None:
        (tmp_path / "c.json").write_text(content)
    train = [a for a in TRAIN if a not in ("--num-features", "8")]
    fails(capsys, ["train", "--data", str(fasta), "--out", str(tmp_path / "r"), "--config", str(tmp_path / "c.json"), *train], message)


def test_unreadable_or_empty_fasta(tmp_path, capsys, fasta, model_dir):
    truncated = tmp_path / "t.fa.gz"
    truncated.write_bytes(gzip.compress(fasta.read_bytes())[:30])
    fails(capsys, ["train", "--data", str(truncated), "--out", str(tmp_path / "r"), *TRAIN], "t.fa.gz, line 1: the file could not be read")
    fails(capsys, ["evaluate", "--checkpoint", str(model_dir), "--data", str(truncated)], "truncated or damaged")
    lines = tmp_path / "t.jsonl.gz"
    lines.write_bytes(gzip.compress(b'{"id": "a", "sequence": "MKV"}\n' * 50)[:40])
    fails(capsys, ["evaluate", "--checkpoint", str(model_dir), "--data", str(lines)], "t.jsonl.gz could not be read")
    empty = tmp_path / "e.fa"
    empty.write_text("")
    fails(capsys, ["train", "--data", str(empty), "--out", str(tmp_path / "r"), *TRAIN], "e.fa holds no sequences")


@pytest.mark.parametrize("row,message", [
    ('{"id": "a", "sequence": "MKTJ*"}', "line 1: record 'a' has letters '*J' outside"),
    ('{"id": "a", "sequence": ""}', "line 1: record 'a' has an empty sequence"),
    ("[1, 2]", "line 1: expected a JSON object with 'id' and 'sequence'"),
])
def test_evaluate_checks_json_lines_like_fasta(tmp_path, capsys, model_dir, row, message):
    data = tmp_path / "d.jsonl"
    data.write_text(row + "\n")
    fails(capsys, ["evaluate", "--checkpoint", str(model_dir), "--data", str(data)], message)


def test_evaluate_checks_its_numbers(capsys, model_dir, fasta):
    fails(capsys, ["evaluate", "--checkpoint", str(model_dir), "--data", str(fasta), "--batch-size", "0"], "must be positive")
    fails(capsys, ["evaluate", "--checkpoint", str(model_dir), "--data", str(fasta), "--max-sequences", "0"], "must be positive")


def test_score_output_and_batch_checks(tmp_path, capsys, model_dir):
    score = ["score", "--checkpoint", str(model_dir), "--sequence", SEQUENCE, "--mutations", "A4G"]
    fails(capsys, [*score, "--out", str(tmp_path)], "is a folder")
    fails(capsys, [*score, "--tokens-per-batch", "0"], "tokens_per_batch must be positive")
    out = tmp_path / "new" / "scores.csv"
    assert main([*score, "--out", str(out)]) == 0
    assert out.read_text().startswith("mutant,score\nA4G,")
    bom = tmp_path / "excel.csv"
    bom.write_bytes("\ufeffmutant,note\nA4G,x\n".encode())
    assert main(["score", "--checkpoint", str(model_dir), "--sequence", SEQUENCE, "--mutations-csv", str(bom)]) == 0
    assert capsys.readouterr().out.startswith("mutant,note,score\nA4G,x,")


def test_embed_refuses_an_id_whose_sequence_changed(tmp_path, capsys, model_dir, fasta):
    out = tmp_path / "e.h5"
    assert main(["embed", "--checkpoint", str(model_dir), "--fasta", str(fasta), "--out", str(out), "--quiet"]) == 0
    changed = tmp_path / "changed.fa"
    changed.write_text(fasta.read_text().replace(SEQUENCE, SEQUENCE[:-1] + "A"))  # same id, same length
    fails(capsys, ["embed", "--checkpoint", str(model_dir), "--fasta", str(changed), "--out", str(out)],
          "holds 'a' embedded from a different sequence")


@pytest.mark.parametrize("command", [["embed", "--fasta", "x.fa", "--out", "x.h5"], ["fill-mask", "--sequence", "MK<mask>"],
                                     ["score", "--sequence", SEQUENCE, "--mutations", "M1A"], ["probe"], ["evaluate"]])
def test_a_bad_device_is_named_before_any_work(capsys, model_dir, command):
    fails(capsys, [command[0], "--checkpoint", str(model_dir), *command[1:], "--device", "bogus"],
          "unknown device 'bogus': --device is cpu, cuda or cuda:N")


@pytest.mark.parametrize("bad", [dict(batch_size=0), dict(eval_every=-1), dict(warmup_steps=-1), dict(lr=-1e-3),
                                 dict(precision="fp16"), dict(seq_len=2.5)])
def test_train_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="invalid training setting"):
        TrainConfig(**bad)


def test_model_config_load_names_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"d_model": 16, "bogus": 1}))
    with pytest.raises(ValueError, match=r"config.json is not a valid model config \(unknown model config keys: bogus\)"):
        PerformerConfig.load(path)


def test_errors_in_input_files_name_file_and_line(tmp_path, capsys, model_dir):
    csv = tmp_path / "m.csv"
    csv.write_text("mutant\nA4G\nK5A\n")
    fails(capsys, ["score", "--checkpoint", str(model_dir), "--sequence", SEQUENCE, "--mutations-csv", str(csv)],
          "m.csv, line 3: K5A: position 5 is Y, not K")
    chains = tmp_path / "p.jsonl"
    chains.write_text(json.dumps({"id": "1ABC_A", "sequence": "MKJ", "dssp8": "CCC", "ca_centi_angstrom": [[0, 0, 0]] * 3}) + "\n")
    fails(capsys, ["probe", "--checkpoint", str(model_dir), "--data", str(chains)], "p.jsonl, line 1: chain '1ABC_A' has letters 'J'")


def test_library_settings_are_shown_as_the_commands_options():
    from protein_performer.cli import as_options, build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    assert as_options("`max_steps` must be positive; `init_from`, `unknown`", train) == "--max-steps must be positive; --init-from, unknown"


def test_train_says_what_it_skipped_and_when_there_is_nothing_to_do(tmp_path, capsys, fasta):
    data = tmp_path / "j.fa"
    data.write_text(fasta.read_text() + ">bad\nMKJ\n")
    run = ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--skip-invalid", *TRAIN]
    assert main(run) == 0
    assert "skipped 1 malformed records of" in capsys.readouterr().err
    assert main([*run, "--resume"]) == 0
    assert "already at step 1 of --max-steps 1: nothing to train" in capsys.readouterr().err
