"""RunDir: the one home of a run directory's files, its atomic writes and its readers."""

import json

import pytest
import torch

from protein_performer.model import PerformerConfig, PerformerLM
from protein_performer.rundir import RunDir, atomic_write, load_model, output_file, read_json_object, save_model


def tiny_model() -> tuple[PerformerLM, PerformerConfig]:
    torch.manual_seed(0)
    config = PerformerConfig(d_model=16, num_layers=1, num_heads=2, d_ff=32, num_features=8, dropout=0.0)
    return PerformerLM(config), config


def test_atomic_write_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "notes.json"
    atomic_write(path, "old\n")
    atomic_write(path, b"new\n")
    atomic_write(tmp_path / "plot.png", lambda tmp: tmp.write_bytes(tmp.suffix.encode()))  # the writer sees the suffix
    assert path.read_text() == "new\n" and (tmp_path / "plot.png").read_bytes() == b".png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.json", "plot.png"]


def test_model_round_trip_is_exact(tmp_path):
    model, config = tiny_model()
    save_model(model, config, tmp_path / "m")
    run = RunDir(tmp_path / "m")
    assert run.has_model() and not run.is_run() and run.read_config() == config
    loaded = load_model(tmp_path / "m")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert not loaded.training


def test_checkpoints_keep_the_last_two_and_latest_points_at_the_newest(tmp_path):
    model, config = tiny_model()
    run = RunDir(tmp_path / "run")
    assert run.latest_checkpoint() is None
    for step in (1, 2, 3):
        run.write_checkpoint(step, config=config, weights=model.state_dict(), state_tensors={"rng.torch": torch.get_rng_state()},
                             state={"step": step}, train_config={"seed": 0})
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["latest", "step-0000002", "step-0000003"]
    latest = run.latest_checkpoint()
    tensors, state = latest.read_state()
    assert latest.path.name == "step-0000003" and state == {"step": 3} and torch.equal(tensors["rng.torch"], torch.get_rng_state())
    assert latest.read_train_config() == {"seed": 0} and run.has_model()


def test_checkpoints_at_multiples_of_keep_every_stay(tmp_path):
    model, config = tiny_model()
    run = RunDir(tmp_path / "run")
    for step in range(1, 8):
        run.write_checkpoint(step, config=config, weights=model.state_dict(), state_tensors={"rng.torch": torch.get_rng_state()},
                             state={"step": step}, train_config={"seed": 0}, keep_every=3)
    assert sorted(p.name for p in run.checkpoints.glob("step-*")) == ["step-0000003", "step-0000006", "step-0000007"]
    assert run.latest_checkpoint().path.name == "step-0000007"


def test_readers_name_file_and_line(tmp_path):
    run = RunDir(tmp_path)
    run.metrics.write_text('{"step": 1}\n{"loss": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: no step number"):
        run.read_metrics()
    (tmp_path / "list.json").write_text(json.dumps([1]))
    with pytest.raises(ValueError, match="holds list, not a JSON object"):
        read_json_object(tmp_path / "list.json")
    run.weights.write_bytes(b"garbage")
    run.config.write_text(json.dumps(tiny_model()[1].to_dict()))
    with pytest.raises(ValueError, match="corrupt or incomplete"):
        run.load_model()
    with pytest.raises(FileNotFoundError, match=r"config\.json not found"):
        RunDir(tmp_path / "nowhere").load_model()


def test_output_file_refuses_a_folder_and_creates_the_parent(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        output_file(tmp_path)
    assert output_file(tmp_path / "a" / "b.csv").parent.is_dir()


def test_model_files_get_the_permissions_of_any_new_file(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        model, config = tiny_model()
        save_model(model, config, tmp_path / "m")
    finally:
        os.umask(mask)
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "m" / name).stat().st_mode & 0o777 == 0o666 & ~0o022, name


def test_rotary_frequencies_are_saved_and_older_checkpoints_load_with_the_standard_ones(tmp_path):
    from safetensors.torch import load_file, save_file

    from protein_performer.model.rotary import standard_frequencies
    from protein_performer.rundir import ROTARY_FREQUENCIES

    model, config = tiny_model()
    model.rotary.inv_freq.copy_(model.rotary.inv_freq.half().float())  # a converted model's own frequencies
    save_model(model, config, tmp_path / "m")
    assert torch.equal(load_model(tmp_path / "m").rotary.inv_freq, model.rotary.inv_freq)
    weights = tmp_path / "m" / "model.safetensors"
    tensors = load_file(str(weights))
    del tensors[ROTARY_FREQUENCIES]  # as written before the frequencies were saved
    save_file(tensors, str(weights))
    assert torch.equal(load_model(tmp_path / "m").rotary.inv_freq, standard_frequencies(8))
