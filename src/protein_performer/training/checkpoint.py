"""Checkpoints: ``config.json`` + ``model.safetensors`` (what :func:`protein_performer.load` reads) and the
trainer state (optimizer, scheduler, RNG, data position) beside them. Never pickled.

Layout of a run directory ``DIR``::

    DIR/config.json, DIR/model.safetensors       the latest weights (for inference)
    DIR/checkpoints/step-000100/                 a complete checkpoint: the two above plus
        trainer_state.safetensors, trainer_state.json, train_config.json
    DIR/checkpoints/latest                       name of the newest complete checkpoint

A checkpoint is written into a temporary folder, flushed, and renamed into place; only then does
``latest`` move (an atomic ``os.replace``). A ``kill -9`` at any moment leaves the previous complete
checkpoint as ``latest``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..model import PerformerConfig

MODEL_FILE, CONFIG_FILE = "model.safetensors", "config.json"
STATE_TENSORS, STATE_JSON, TRAIN_CONFIG = "trainer_state.safetensors", "trainer_state.json", "train_config.json"
KEEP = 2  # complete checkpoints kept on disk


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def save_weights(model: nn.Module, config: PerformerConfig, directory: Path) -> None:
    """``config.json`` and ``model.safetensors`` into ``directory``, each replaced atomically."""
    write_weights(model.state_dict(), config, directory)


def write_weights(tensors: dict[str, torch.Tensor], config: PerformerConfig, directory: Path) -> None:
    """Like :func:`save_weights`, from a state dict (e.g. one consolidated from shards). The tied
    LM-head weight is left out (safetensors refuses shared storage; loading re-ties it)."""
    tensors = {k: v for k, v in tensors.items() if k != "lm_head.embedding.weight"}
    directory.mkdir(parents=True, exist_ok=True)
    for name, write in ((CONFIG_FILE, lambda p: _write_text(p, json.dumps(config.to_dict(), indent=2) + "\n")),
                        (MODEL_FILE, lambda p: _save_tensors(tensors, p))):
        tmp = directory / f".{name}.tmp"
        write(tmp)
        os.replace(tmp, directory / name)
    _fsync_dir(directory)


def optimizer_tensors(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict (parameters numbered) into tensors (for safetensors) and JSON-able rest."""
    tensors, scalars = {}, {}
    for pid, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """The optimizer state dict that :func:`optimizer_tensors` split (inverse)."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    config: PerformerConfig,
    weights: dict[str, torch.Tensor],
    optimizer: dict,
    rng: dict[str, torch.Tensor],
    trainer_state: dict,
    train_config: dict,
) -> Path:
    """Write a complete checkpoint for ``step`` atomically and point ``latest`` at it.

    ``weights``: the model's state dict; ``optimizer``: an optimizer state dict with numbered
    parameters; ``rng``: generator states (one per data-parallel rank) to continue dropout exactly.
    """
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    write_weights(weights, config, tmp)
    tensors, meta = optimizer_tensors(optimizer)
    tensors.update(rng)
    _save_tensors(tensors, tmp / STATE_TENSORS)
    _write_text(tmp / STATE_JSON, json.dumps({**trainer_state, "step": step, "optimizer": meta}, indent=1) + "\n")
    _write_text(tmp / TRAIN_CONFIG, json.dumps(train_config, indent=2) + "\n")
    _fsync_dir(tmp)
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _fsync_dir(root)
    pointer = root / ".latest.tmp"
    _write_text(pointer, name + "\n")
    os.replace(pointer, root / "latest")
    _fsync_dir(root)
    write_weights(weights, config, run_dir)  # the run directory itself always holds the newest weights
    complete = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in complete[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    path = run_dir / "checkpoints" / pointer.read_text().strip()
    return path if (path / STATE_JSON).exists() else None


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of one safetensors file; ``FileNotFoundError`` / ``ValueError`` naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        return load_file(str(path))
    except Exception as err:  # SafetensorError: a damaged or truncated file
        raise ValueError(f"{path} is not a readable safetensors file ({err}): it is corrupt or incomplete") from None


def load_trainer_state(checkpoint: Path) -> tuple[dict[str, torch.Tensor], dict]:
    return read_safetensors(checkpoint / STATE_TENSORS), json.loads((checkpoint / STATE_JSON).read_text())


def load_weights(model: nn.Module, directory: Path) -> None:
    """``directory/model.safetensors`` into ``model``; ``ValueError`` when names or shapes differ."""
    tensors = read_safetensors(directory / MODEL_FILE)
    expected = model.state_dict()
    wrong = [f"{k} is {tuple(v.shape)}, the model's {tuple(expected[k].shape)}"
             for k, v in tensors.items() if k in expected and v.shape != expected[k].shape]
    if wrong:
        raise ValueError(f"{directory / MODEL_FILE} does not match the model's config: {wrong[0]}"
                         + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if k != "lm_head.embedding.weight"]
    if missing or unexpected:
        raise ValueError(f"{directory / MODEL_FILE} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}")


def load_checkpoint(directory: str | os.PathLike) -> tuple[nn.Module, PerformerConfig]:
    """A run (or converted-model) directory → ``(PerformerLM in eval mode, config)``.

    Raises ``FileNotFoundError`` / ``ValueError`` with a message that names the file and the fix.
    """
    from ..model import PerformerLM

    directory = Path(directory)
    config_path, model_path = directory / CONFIG_FILE, directory / MODEL_FILE
    for path in (config_path, model_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: point --checkpoint at a directory written by `protein-performer train`")
    config = PerformerConfig.load(config_path)  # ValueError naming the file
    model = PerformerLM(config)
    load_weights(model, directory)
    return model.eval(), config
