import subprocess
import sys

import pytest

CHECK = ("from protein_performer.memory import freed_memory_retained as r, retain_freed_memory as apply; "
         "before = r(); print(apply(), before, r())")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning is Linux-only")
def test_retain_freed_memory_applies_and_can_be_turned_off():
    # In a child process: mallopt changes the whole process.
    run = lambda env: subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env).stdout.strip()  # noqa: E731
    import os

    plain = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")}
    assert run(plain) == "True False True"
    assert run({**plain, "PROTEIN_PERFORMER_KEEP_MALLOC": "1"}) == "False False False"
    assert run({**plain, "PROTEIN_PERFORMER_KEEP_MALLOC": "1", "MALLOC_MMAP_MAX_": "0"}) == "False True True"
    assert run({**plain, "PROTEIN_PERFORMER_KEEP_MALLOC": "1", "GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"}) == "False True True"
