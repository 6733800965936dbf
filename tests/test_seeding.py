"""Seeds derived from names: fixed forever (they decide what every step of a run trains on)."""

import subprocess
import sys

import torch

from protein_performer.seeding import derived_seed, seeded_generator, stable_hash


def test_values_are_pinned():
    # Changing the hash would change every crop, mask and redraw of every run: these values are a contract.
    assert stable_hash(0, "redraw", 1000) == 10579953466364201000
    assert derived_seed(0, "redraw", 1000) == stable_hash(0, "redraw", 1000) >> 1 < 2**63
    assert stable_hash(0, "redraw", 1000) != stable_hash(0, "redraw", 1001)


def test_same_in_another_process_and_generator_is_seeded():
    code = "from protein_performer.seeding import stable_hash; print(stable_hash(7, 'crop', 3))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
    assert int(other.stdout) == stable_hash(7, "crop", 3)
    assert torch.equal(torch.rand(3, generator=seeded_generator(1, "x")), torch.rand(3, generator=seeded_generator(1, "x")))
