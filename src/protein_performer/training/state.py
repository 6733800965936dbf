"""The trainer's state beside the model in a checkpoint: optimizer moments, generator states, the data
position (the step). Optimizer state dicts hold tensors and plain values mixed; safetensors takes only
tensors, so they are split into the two and joined again on resume (never pickled). Where the files
go is :class:`~protein_performer.rundir.RunDir`'s business."""

from __future__ import annotations

import torch


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


def by_name(optimizer: dict, names: list[str]) -> dict:
    """An optimizer state dict with numbered parameters → keyed by parameter name (for FSDP)."""
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in optimizer["param_groups"]]
    return {"state": {names[int(i)]: v for i, v in optimizer["state"].items()}, "param_groups": groups}

