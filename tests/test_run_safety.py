"""Runs that cannot collide, lose or lie: one writer per run directory, divergence stops training,
files this program did not write are never modified, and every bad input is one line (exit 2)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import pytest
import torch
from conftest import corpus_head, random_model_dir

from protein_performer import rundir
from protein_performer.cli import main
from protein_performer.data import read_fasta, split_of
from protein_performer.model import PerformerConfig
from protein_performer.rundir import RunDir, load_model
from protein_performer.training import TrainConfig, start_training

SEQUENCE = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ"
TRAIN = ["--max-steps", "1", "--seq-len", "32", "--batch-size", "2", "--micro-batch-size", "2", "--eval-every", "1",
         "--save-every", "1", "--num-features", "8", "--precision", "fp32", "--quiet"]


@pytest.fixture(scope="module")
def fasta(tmp_path_factory) -> Path:
    return corpus_head(tmp_path_factory.mktemp("data") / "small.fa", 60)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return random_model_dir(tmp_path_factory.mktemp("model"))


def fails(capsys, argv: list[str], message: str, *, started: bool = False) -> str:
    """Exit 2 with one error line holding ``message`` (after train's opening line when ``started``)."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert message in lines[-1] and "Traceback" not in err and len(lines) == 1 + started, err
    return lines[-1]


# ---- one writer per run directory ------------------------------------------------------------------
def test_a_run_directory_has_one_writer_and_a_dead_one_leaves_no_lock(tmp_path):
    first = RunDir(tmp_path / "r").lock()
    with pytest.raises(ValueError, match=f"in use by process {os.getpid()}"):
        RunDir(tmp_path / "r").lock()
    first.release()
    RunDir(tmp_path / "r").lock().release()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from protein_performer.rundir import RunDir; "
                               f"lock = RunDir({str(tmp_path / 'r')!r}).lock(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ValueError, match=f"in use by process {holder.pid}"):
        RunDir(tmp_path / "r").lock()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    RunDir(tmp_path / "r").lock().release()  # the kernel dropped the dead process's lock


@pytest.mark.slow
def test_a_second_train_on_a_running_run_is_refused(fasta, tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--data", str(fasta), "--out", str(run), *TRAIN[2:], "--max-steps", "400"]
    proc = subprocess.Popen([sys.executable, "-m", "protein_performer", "train", *common],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run / rundir.LOCK).exists() or not (run / rundir.LOCK).read_text().strip():
            assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else "timeout"
            time.sleep(0.1)
        fails(capsys, ["train", *common, "--resume"], f"in use by process {proc.pid}")
        fails(capsys, ["train", *common], "")  # a new run there is refused too (it holds a run or is in use)
    finally:
        proc.kill()
        proc.wait()


def test_a_refused_train_leaves_nothing_behind(fasta, tmp_path, capsys):
    fails(capsys, ["train", "--data", str(fasta), "--out", str(tmp_path / "new"), *TRAIN, "--batch-size", "3", "--micro-batch-size", "3",
                   "--seq-len", "0"], "--seq-len must be a positive integer")
    assert not (tmp_path / "new").exists()
    blocker = tmp_path / "file"
    blocker.write_text("mine\n")
    fails(capsys, ["train", "--data", str(fasta), "--out", str(blocker / "run"), *TRAIN], "cannot be written")
    assert blocker.read_text() == "mine\n"


# ---- resume restores what was asked ------------------------------------------------------------------
def test_resume_before_the_first_checkpoint_keeps_the_runs_settings(fasta, tmp_path):
    run = RunDir(tmp_path / "r")
    recorded = TrainConfig(data=str(fasta), seq_len=48, batch_size=4, micro_batch_size=2, max_steps=5, seed=3)
    config = PerformerConfig(d_model=16, num_layers=1, num_heads=2, d_ff=32, num_features=8)
    run.path.mkdir()
    run.write_config(config)  # what train writes before its first step
    run.write_train_config(recorded.to_dict())
    with pytest.raises(ValueError, match="`seq_len` 1024 differs from the run's 48"):
        start_training(run.path, resume=True, train_options={"seq_len": 1024, "max_steps": 7})
    trainer = start_training(run.path, resume=True, train_options={"seq_len": 48, "batch_size": None, "max_steps": 7})
    assert trainer.step == 0 and trainer.config == config
    assert trainer.tc == recorded.replace(max_steps=7)  # only max_steps (and keep_every) may change
    assert json.loads(run.train_config.read_text()) == recorded.to_dict()
    trainer.lock.release()
    trainer = start_training(run.path, resume=True, train_options={"keep_every": 2})
    assert trainer.tc == recorded.replace(keep_every=2)
    trainer.lock.release()


def test_unknown_training_settings_name_the_file(model_dir, tmp_path, capsys):
    run = tmp_path / "m"
    run.mkdir()
    for name in ("config.json", "model.safetensors"):
        (run / name).write_bytes((model_dir / name).read_bytes())
    (run / "train_config.json").write_text(json.dumps({**TrainConfig().to_dict(), "bogus": 1}))
    fails(capsys, ["evaluate", "--checkpoint", str(run), "--max-sequences", "2"], "train_config.json is not a protein-performer "
          "training config (unknown settings: bogus)")


def test_resume_refuses_other_settings_and_changed_data(fasta, tmp_path, capsys):
    data = tmp_path / "data.fa"
    data.write_bytes(fasta.read_bytes())
    run = tmp_path / "r"
    assert main(["train", "--data", str(data), "--out", str(run), *TRAIN]) == 0
    recorded = json.loads((run / "train_config.json").read_text())
    assert recorded["data"] == str(data) and recorded["data_fingerprint"].startswith(f"{data.stat().st_size}:")
    fails(capsys, ["train", "--out", str(run), "--resume", "--max-steps", "2", "--lr", "0.5"], "--lr 0.5 differs from the run's 0.001")
    fails(capsys, ["train", "--out", str(run), "--resume", "--max-steps", "2", "--preset", "small"], "--preset small describes another model")
    data.write_text(data.read_text().replace("M", "A", 1))
    fails(capsys, ["train", "--out", str(run), "--resume", "--max-steps", "2"], "changed since the run started")
    data.unlink()
    fails(capsys, ["train", "--out", str(run), "--resume", "--max-steps", "2"], "not found: the run was trained on it")


def test_a_relative_data_path_is_recorded_whole(fasta, tmp_path, monkeypatch):
    monkeypatch.chdir(fasta.parent)
    trainer = start_training(tmp_path / "r", train_options={"data": fasta.name, "seq_len": 32, "batch_size": 2})
    assert trainer.tc.data == str(fasta)
    trainer.lock.release()


# ---- divergence stops training --------------------------------------------------------------------
def test_non_finite_training_stops_and_keeps_the_last_good_checkpoint(fasta, tmp_path, capsys):
    fails(capsys, ["train", "--data", str(fasta), "--out", str(tmp_path / "inf"), *TRAIN, "--lr", "inf"], "--lr must be a finite number")
    run = tmp_path / "huge"
    err = fails(capsys, ["train", "--data", str(fasta), "--out", str(run), *TRAIN, "--max-steps", "6", "--lr", "1e30",
                         "--warmup-steps", "0"], "training diverged at step", started=True)
    latest = RunDir(run).latest_checkpoint()
    assert latest is not None and latest.path.name < f"step-{int(err.split('at step ')[1].split(':')[0]):07d}"
    assert all(torch.isfinite(t).all() for t in load_model(latest.path).state_dict().values())
    assert all(torch.isfinite(t).all() for t in load_model(run).state_dict().values())


def test_negative_redraw_interval_and_zero_features_are_refused(fasta, model_dir, tmp_path, capsys):
    fails(capsys, ["train", "--data", str(fasta), "--out", str(tmp_path / "r"), *TRAIN, "--redraw-interval", "-5"],
          "--redraw-interval must be 0 (never) or more, got -5")
    fails(capsys, ["convert", "--from", str(model_dir), "--out", str(tmp_path / "c"), "--num-features", "0"],
          "--num-features must be positive, got 0")


# ---- never modify a file this program did not write ------------------------------------------------
def test_embed_refuses_a_foreign_hdf5_and_leaves_nothing_on_refusal(model_dir, fasta, tmp_path, capsys):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["mine"] = [1, 2, 3]
    before = foreign.read_bytes()
    embed = ["embed", "--checkpoint", str(model_dir), "--fasta", str(fasta), "--quiet"]
    fails(capsys, [*embed, "--out", str(foreign)], "not written by protein-performer embed")
    assert foreign.read_bytes() == before
    assert main([*embed, "--out", str(foreign), "--overwrite"]) == 0
    with h5py.File(foreign) as f:
        assert "mine" not in f and len(f) == 60
    fails(capsys, [*embed, "--out", str(tmp_path / "new.h5"), "--tokens-per-batch", "0"], "--tokens-per-batch must be positive")
    assert not (tmp_path / "new.h5").exists()


def test_score_never_overwrites_a_file_unasked(model_dir, tmp_path, capsys):
    out = tmp_path / "existing.csv"
    out.write_text("my results\n")
    score = ["score", "--checkpoint", str(model_dir), "--sequence", SEQUENCE, "--mutations", "A4G", "--out", str(out)]
    fails(capsys, score, "already exists and was not written by protein-performer")
    assert out.read_text() == "my results\n"
    assert main([*score, "--overwrite"]) == 0 and out.read_text().startswith("mutant,score\nA4G,")
    fails(capsys, [*score[:-1], "/proc/scores.csv"], "cannot be written")  # before any scoring


# ---- inputs that were misread ---------------------------------------------------------------------
def test_fasta_with_a_byte_order_mark_folders_pipes_and_dev_null(tmp_path, fasta, capsys):
    bom = tmp_path / "bom.fa"
    bom.write_bytes(b"\xef\xbb\xbf>a\nMKV\n>b\nMKL\n")
    assert [r.id for r in read_fasta(bom)] == ["a", "b"]
    with pytest.raises(IsADirectoryError, match="is a folder"):
        list(read_fasta(tmp_path))
    assert list(read_fasta("/dev/null")) == []
    fifo = tmp_path / "pipe.fa"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(b">p\nMKV\n"))
    writer.start()
    assert [r.id for r in read_fasta(fifo)] == ["p"]
    writer.join()
    fails(capsys, ["train", "--data", "/dev/null", "--out", str(tmp_path / "r"), *TRAIN], "/dev/null holds no sequences")


def test_a_corpus_without_training_proteins_says_so(tmp_path, capsys):
    held_out = [f"Q{i:05d}" for i in range(2000) if split_of(f"Q{i:05d}") != "train"][:3]
    data = tmp_path / "held_out.fa"
    data.write_text("".join(f">{a}\n{SEQUENCE}\n" for a in held_out))
    fails(capsys, ["train", "--data", str(data), "--out", str(tmp_path / "r"), *TRAIN], "none of the 3 proteins")


def test_mutation_inputs_name_what_is_wrong(model_dir, tmp_path, capsys):
    score = ["score", "--checkpoint", str(model_dir), "--sequence", SEQUENCE]
    fails(capsys, [*score, "--mutations", "K2A:"], "malformed mutant 'K2A:'")
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("mutant,note\nA4G,ok\nA4G,caf\xe9\n".encode("latin-1"))
    fails(capsys, [*score, "--mutations-csv", str(latin)], "latin1.csv, line 3: byte 0xe9 is not UTF-8")


def test_unreadable_weights_and_truncated_logs_are_named_for_what_they_are(model_dir, tmp_path, monkeypatch, capsys):
    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(rundir, "open", refuse, raising=False)
    with pytest.raises(OSError, match=r"model\.safetensors cannot be read \(Permission denied\)"):
        load_model(model_dir)
    monkeypatch.undo()
    run = RunDir(tmp_path)
    run.metrics.write_text('{"step": 1}\n{"step": 2, "lo')
    with pytest.raises(ValueError, match=r"metrics\.jsonl, line 2: not valid JSON"):
        run.read_metrics()


@pytest.mark.slow
def test_refusals_are_one_line_from_a_real_process(model_dir, fasta, tmp_path):
    """The same refusals as above, from the installed command: one line on stderr, exit 2, no traceback."""
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["mine"] = [1]
    for argv, message in (
        (["train", "--data", str(fasta), "--out", str(tmp_path / "r"), *TRAIN, "--lr", "inf"], "--lr must be a finite number"),
        (["embed", "--checkpoint", str(model_dir), "--fasta", str(fasta), "--out", str(foreign)], "not written by protein-performer"),
        (["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), *TRAIN], "is a folder"),
    ):
        result = subprocess.run([sys.executable, "-m", "protein_performer", *argv], capture_output=True, text=True, timeout=300)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr


def test_more_inputs_found_by_the_second_sweep(model_dir, fasta, tmp_path, capsys):
    score = ["score", "--checkpoint", str(model_dir), "--sequence", SEQUENCE]
    twice = tmp_path / "twice.csv"
    twice.write_text("mutant,mutant\nA4G,K2A\n")
    fails(capsys, [*score, "--mutations-csv", str(twice)], "twice.csv, line 1: the header names column 'mutant' twice")
    extra = tmp_path / "extra.csv"
    extra.write_text("mutant,note\nA4G,1,extra\n")
    fails(capsys, [*score, "--mutations-csv", str(extra)], "extra.csv, line 2: 3 fields where the header has 2")
    fails(capsys, [*score, "--mutations-csv", str(tmp_path)], "is a folder")
    with pytest.raises(SystemExit) as exit_:  # an argparse error: usage, then one error line
        main(["fill-mask", "--checkpoint", str(model_dir), "--sequence", "MK<mask>", "--threads", "100000"])
    assert exit_.value.code == 2 and "cores: give 1 to" in capsys.readouterr().err
    fails(capsys, ["embed", "--checkpoint", str(model_dir), "--fasta", str(fasta), "--out", str(fasta), "--overwrite"],
          "is the FASTA file or in the model's directory")
    fails(capsys, ["embed", "--checkpoint", str(model_dir), "--fasta", str(fasta), "--out", str(model_dir / "model.safetensors"),
                   "--overwrite"], "in the model's directory")
    fails(capsys, ["evaluate", "--checkpoint", str(model_dir / "config.json")], "is a file: give the model directory")
    fails(capsys, ["probe", "--checkpoint", str(model_dir), "--max-length", "10"], "(cropped to --max-length 10)")
    bad_header = tmp_path / "cp1252.fa"
    bad_header.write_bytes(b">caf\xe9\nMKV\n>caf\xe8\nMKL\n")
    fails(capsys, ["embed", "--checkpoint", str(model_dir), "--fasta", str(bad_header), "--out", str(tmp_path / "e.h5")],
          "is not UTF-8 text")
    fails(capsys, ["train", "--data", str(fasta), "--out", str(tmp_path / "s"), *TRAIN, "--seed", str(2**70)], "--seed must be an integer")
    config = tmp_path / "eps.json"
    config.write_text(json.dumps({"layer_norm_eps": -1.0}))
    fails(capsys, ["train", "--data", str(fasta), "--out", str(tmp_path / "e"), *TRAIN, "--config", str(config)],
          "layer_norm_eps must be positive")


def test_learned_positions_cover_what_is_trained_and_frequencies_are_checked(fasta, model_dir, tmp_path, capsys):
    trainer = start_training(tmp_path / "r", model_options={"positions": "learned", "num_features": 8},
                             train_options={"data": str(fasta), "seq_len": 64, "batch_size": 2})
    assert trainer.config.max_len == 64
    trainer.lock.release()
    run = tmp_path / "m"
    run.mkdir()
    for name in ("config.json", "model.safetensors"):
        (run / name).write_bytes((model_dir / name).read_bytes())
    for bad in ({"A": 0.5}, {"frequencies": [0.5, 0.5]}, {"frequencies": "x"}, {"frequencies": [0.0] * 30}):
        (run / "frequencies.json").write_text(json.dumps(bad))
        fails(capsys, ["evaluate", "--checkpoint", str(run), "--max-sequences", "2"], "frequencies.json is not a valid frequency table")


def test_models_larger_than_the_machine_are_refused_up_front(fasta, model_dir, tmp_path, capsys):
    config = tmp_path / "huge.json"
    config.write_text(json.dumps({"num_layers": 100000, "d_model": 512, "num_heads": 8, "d_ff": 2048}))
    fails(capsys, ["train", "--data", str(fasta), "--out", str(tmp_path / "h"), *TRAIN, "--config", str(config)],
          "more than this machine's")
    assert not (tmp_path / "h").exists()
    fails(capsys, ["convert", "--from", str(model_dir), "--out", str(tmp_path / "c"), "--num-features", "100000000000"],
          "more than this machine's")
    fails(capsys, ["convert", "--from", str(model_dir), "--out", str(tmp_path / "c"), "--seed", "-1"], "--seed must be an integer")
