"""Training arms compared at equal wall-clock cost: a plan that turns a budget of minutes into each
arm's number of optimizer steps (from timed steps, saved so that a rerun keeps it), training that
resumes, and validation curves against training time and tokens read back from a run's metrics.

An arm is a ``(PerformerConfig, TrainConfig)`` pair; ``TrainConfig.max_steps`` is set by the plan.
The budget is spent on training steps: validation and checkpoints are not counted.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path


def seconds_per_step(model_config, train_config, corpus, *, timed: int = 5) -> float:
    """Median wall-clock seconds of ``timed`` optimizer steps after one warmup step (nothing written).
    The machine must be quiet: the plan lives with the runs, so a disturbed timing gives that arm the
    wrong budget for good (delete its entry in the plan and its run: only that arm is timed again)."""
    from protein_performer.training import Trainer

    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(run, model_config, train_config, corpus=corpus)
        times = []
        for _ in range(timed + 1):
            start = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def plan(path: Path, arms: dict[str, tuple], corpus, minutes: float, identity: dict) -> dict:
    """``{key: {"seconds_per_step", "steps"}}`` for ``minutes`` of training each, saved at ``path``
    with ``identity`` (what the plan was made for); a saved plan with the same identity is reused, and
    only arms it lacks are timed."""
    known: dict[str, dict] = {}
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("identity") == identity and saved.get("minutes") == minutes:
            known = saved["arms"]
    steps = {key: known[key] for key in arms if key in known}
    if len(steps) == len(arms):
        return steps
    for key, (model_config, train_config) in arms.items():
        if key in steps:
            continue
        seconds = seconds_per_step(model_config, train_config, corpus)
        steps[key] = {"seconds_per_step": seconds, "steps": max(1, int(minutes * 60 / seconds))}
        print(f"{key}: {seconds:.2f} s per step -> {steps[key]['steps']} steps in {minutes} min", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"identity": identity, "minutes": minutes, "arms": known | steps}, indent=1) + "\n")
    return steps


def with_steps(train_config, steps: int, *, evaluations: int = 8):
    """``train_config`` run for ``steps``: warmup 5%, a validation and a checkpoint every
    ``1/evaluations`` of the run."""
    every = max(1, steps // evaluations)
    return dataclasses.replace(train_config, max_steps=steps, warmup_steps=max(1, steps // 20), save_every=every, eval_every=every)


def train(run: Path, model_config, train_config, corpus, *, validation=None) -> None:
    """Train ``run`` to ``train_config.max_steps``: nothing when finished, else from its last checkpoint."""
    from protein_performer.rundir import RunDir
    from protein_performer.training import Trainer

    latest = RunDir(run).latest_checkpoint()
    if latest is None or latest.path.name != f"step-{train_config.max_steps:07d}":
        Trainer(run, model_config, train_config, corpus=corpus, checkpoint=latest, validation=validation).fit()


def curve(run: Path) -> list[dict]:
    """Validation points against training seconds and tokens, from the run's metrics. A logged row
    holds its step's tokens and the rate over the window of steps since the row before it, so a
    window counts its steps times the step's tokens, over that rate."""
    seconds = tokens = 0.0
    points = []
    previous = 0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "train/tokens" in entry:
            window = entry["train/tokens"] * (entry["step"] - previous)
            tokens += window
            seconds += window / entry["train/tokens_per_s"]
            previous = entry["step"]
        if "valid/accuracy" in entry:
            points.append({"step": entry["step"], "seconds": seconds, "tokens": tokens,
                           "accuracy": entry["valid/accuracy"], "perplexity": entry["valid/perplexity"]})
    return points
