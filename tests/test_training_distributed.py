"""Data-parallel training under torchrun (gloo, 2 CPU processes): the same weights as one process with
the same global batch, identical projections on every rank, resume on another number of processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import corpus_head
from safetensors.torch import load_file

from protein_performer.training.distributed import Distributed
from protein_performer.training.trainer import rank_slice

# Micro-batches of 2 inside each rank's half of the batch of 4; a redraw every 2 steps; no dropout and
# float32, so the runs must agree to float tolerance (the sum over ranks is the only change of order).
ARGS = ["--preset", "tiny", "--seq-len", "64", "--batch-size", "4", "--micro-batch-size", "2", "--redraw-interval", "2",
        "--num-features", "16", "--eval-every", "3", "--save-every", "3", "--dropout", "0", "--precision", "fp32", "--quiet"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.slow  # end to end: subprocesses (make test-fast skips them)


@pytest.fixture(scope="module")
def fasta(tmp_path_factory) -> Path:
    return corpus_head(tmp_path_factory.mktemp("data") / "small.fasta", 300)


def train(out: Path, fasta: Path, *extra: str, procs: int = 1, check: bool = True, **popen) -> subprocess.CompletedProcess:
    launcher = TORCHRUN if procs == 2 else [sys.executable]
    result = subprocess.run([*launcher, "-m", "protein_performer", "train", "--data", str(fasta), "--out", str(out), *ARGS, *extra],
                            capture_output=True, text=True, timeout=300, env=ENV)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr[-3000:])
    return result


@pytest.fixture(scope="module")
def single(fasta, tmp_path_factory) -> Path:
    """The reference: one process, 6 steps."""
    out = tmp_path_factory.mktemp("single") / "run"
    train(out, fasta, "--max-steps", "6")
    return out


def assert_close_weights(a: Path, b: Path, atol: float = 1e-6) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=atol, msg=key)


def assert_same_metrics(a: Path, b: Path) -> None:
    """Logged metrics are reduced over ranks: global token counts, loss, gradient norm (which, unlike
    Adam's update, would show a gradient scaled by the number of ranks) and validation."""
    rows, ref = ([json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (a, b))
    assert [r["step"] for r in rows] == [r["step"] for r in ref]
    for row, expected in zip(rows, ref):
        assert row["train/tokens"] == expected["train/tokens"]
        for key in ("train/loss", "train/grad_norm", "valid/loss"):
            assert row.get(key) == pytest.approx(expected.get(key), rel=1e-5), (row["step"], key)


def test_rank_slices_cover_the_global_batch_once():
    for world in (1, 2, 4, 8):
        parts = [rank_slice(32, r, world) for r in range(world)]
        assert [i for lo, hi in parts for i in range(lo, hi)] == list(range(32))
    with pytest.raises(ValueError, match="multiple of 4"):
        rank_slice(30, 0, 4)


def test_two_processes_end_with_the_single_process_weights(fasta, single, tmp_path):
    out = tmp_path / "ddp"
    result = train(out, fasta, "--max-steps", "6", procs=2)
    assert "on 2 processes" in result.stderr
    assert_close_weights(out, single)
    # The projections (buffers, redrawn at steps 2 and 4) are those of the single-process run, bit for bit.
    wa, wb = load_file(str(out / "model.safetensors")), load_file(str(single / "model.safetensors"))
    for key in (k for k in wa if k.endswith("projection")):
        assert torch.equal(wa[key], wb[key]), key
    # Metrics are reduced over ranks: the logged loss and token counts are the global ones.
    assert_same_metrics(out, single)


def test_fsdp_matches_and_writes_a_loadable_checkpoint(fasta, single, tmp_path):
    import protein_performer

    out = tmp_path / "fsdp"
    train(out, fasta, "--max-steps", "3", "--fsdp", procs=2)
    train(out, fasta, "--max-steps", "6", "--fsdp", "--resume", procs=2)  # resume from the consolidated checkpoint
    assert_close_weights(out, single)
    assert_same_metrics(out, single)
    plm = protein_performer.load(out)
    assert torch.isfinite(plm.residue_log_probs("MKTAYIAKQR")).all()


def test_sharded_checkpoint_of_two_ranks_resumes_on_one_process(fasta, single, tmp_path):
    out = tmp_path / "sharded"
    train(out, fasta, "--max-steps", "3", "--fsdp", procs=2)
    checkpoint = out / "checkpoints" / "step-0000003"
    shards = sorted(p.name for p in (checkpoint / "sharded").iterdir())
    assert ".metadata" in shards and len([p for p in shards if p.endswith(".distcp")]) == 2  # one file per rank
    assert json.loads((checkpoint / "trainer_state.json").read_text())["optimizer"] == {"sharded": True}
    train(out, fasta, "--max-steps", "6", "--resume")  # one process, no FSDP: DCP reshards on load
    assert_close_weights(out, single)
    assert_same_metrics(out, single)


def test_two_nodes_through_a_c10d_rendezvous_equal_one_process(fasta, single, tmp_path):
    """Two torchrun launchers, one process each, joined on localhost as two "nodes" would be."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "nodes"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "two-nodes", "-m", "protein_performer", "train",
                "--data", str(fasta), "--out", str(out), *ARGS, "--max-steps", "6"]
    nodes = [subprocess.Popen(launcher, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(2)]
    results = [node.communicate(timeout=300) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), [err[-2000:] for _, err in results]
    assert any("on 2 processes" in err for _, err in results)
    assert_close_weights(out, single)
    assert_same_metrics(out, single)


def alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_kill_9_of_two_processes_then_resume_on_one(fasta, tmp_path):
    out, reference = tmp_path / "killed", tmp_path / "reference"
    train(reference, fasta, "--max-steps", "30")
    cmd = [*TORCHRUN, "-m", "protein_performer", "train", "--data", str(fasta), "--out", str(out), *ARGS, "--max-steps", "30"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "latest").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the 2-process run ended before its first checkpoint"
        time.sleep(0.02)
    # torchrun starts each worker in a session of its own: kill the workers and torchrun (a crashed node).
    workers = [int(pid) for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    for pid in [*workers, proc.pid]:
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    while any(alive(pid) for pid in workers):
        time.sleep(0.01)
    killed_at = int((out / "checkpoints" / "latest").read_text().strip().split("-")[1])
    assert killed_at < 30
    result = train(out, fasta, "--max-steps", "30", "--resume")
    assert f"resuming {out} at step {killed_at}" in result.stderr
    assert_close_weights(out, reference)


def test_bad_launches_fail_with_one_line(fasta, tmp_path):
    result = train(tmp_path / "a", fasta, "--max-steps", "1", "--batch-size", "5", procs=2, check=False)
    assert result.returncode != 0
    assert "--batch-size 5 does not split evenly over 2 processes" in result.stderr
    assert result.stderr.count("protein-performer: error:") == 1
    result = train(tmp_path / "b", fasta, "--max-steps", "1", "--fsdp", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["protein-performer: error: --fsdp shards the model over processes: "
                                                  "launch with torchrun (see docs/distributed.md)"]
    result = train(tmp_path / "c", fasta, "--max-steps", "1", "--collective-timeout", "0", check=False)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "protein-performer: error: --collective-timeout must be positive (minutes), got 0.0"]


def test_fsdp_in_bf16_keeps_fp32_weights(fasta, tmp_path):
    out = tmp_path / "bf16"
    train(out, fasta, "--max-steps", "2", "--fsdp", "--precision", "bf16", "--save-every", "2", procs=2)
    weights = load_file(str(out / "model.safetensors"))
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values())
    losses = [json.loads(line).get("train/loss") for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(loss is not None and 2.0 < loss < 4.0 for loss in losses)


def _check_worker(rank: int, store_path: str, same: bool, failures) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2)
    context = Distributed(rank, 2)
    tensor = torch.arange(12.0).view(3, 4) + (0.0 if same or rank == 0 else 1e-7)
    try:
        context.check_identical([tensor], "random projections")
    except RuntimeError as err:
        failures.put(str(err))
    dist.destroy_process_group()


@pytest.mark.parametrize("same", [True, False])
def test_check_identical_catches_any_difference_across_ranks(tmp_path, same):
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_check_worker, args=(str(tmp_path / "store"), same, queue), nprocs=2)
    messages = []
    while not queue.empty():
        messages.append(queue.get())
    assert len(messages) == (0 if same else 2)
    assert all(m.startswith("random projections differ across ranks") for m in messages)
