import subprocess
import sys

import pytest

CHECK = "from protein_performer.memory import retain_freed_memory; print(retain_freed_memory())"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning is Linux-only")
def test_retain_freed_memory_applies_and_can_be_turned_off():
    # In a child process: mallopt changes the whole process.
    run = lambda env: subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env).stdout.strip()  # noqa: E731
    import os

    assert run(dict(os.environ)) == "True"
    assert run({**os.environ, "PROTEIN_PERFORMER_KEEP_MALLOC": "1"}) == "False"
