"""Under torchrun every rank is its own process with its own pre-flight: each walks the safety
gate and resolves the config once, rank 1 too, though its command line joins rank 0's run
directory (``mammoth.app.launch.join_command_line`` pins it). Second suite: ``-m distributed``."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.distributed

COUNTING = textwrap.dedent("""
    import atexit, os, sys
    import mammoth.app.run_spec as run_spec
    import mammoth.app.runner
    import mammoth.app.safety as safety
    from mammoth.app.cli import main

    counts = {"gate": 0, "resolve": 0}

    def counting(module, name, label):
        original = getattr(module, name)
        def counted(*args, **kwargs):
            counts[label] += 1
            return original(*args, **kwargs)
        for other in [other for key, other in list(sys.modules.items()) if key.startswith("mammoth.")]:
            if getattr(other, name, None) is original:  # also where a module imported it by name
                setattr(other, name, counted)

    counting(safety, "check_config_safety", "gate")
    counting(run_spec, "resolve_run", "resolve")
    atexit.register(lambda: print(f"rank {os.environ['RANK']}: {counts['gate']} gate walks, {counts['resolve']} resolutions",
                                  file=sys.__stderr__))
    sys.argv = ["mammoth", *sys.argv[1:]]
    main()
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_each_rank_checks_its_config_once(tmp_path: Path) -> None:
    (tmp_path / "counting.py").write_text(COUNTING)
    # no hydra.run.dir: each rank composes its own time-stamped directory, rank 1 joins rank 0's
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               "counting.py", "model=er", "model.buffer_size=50", "dataset.n_epochs=1", "stop_after_task=1", "device=cpu"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(re.findall(r"rank \d: \d+ gate walks, \d+ resolutions", done.stderr)) == [
        "rank 0: 1 gate walks, 1 resolutions", "rank 1: 1 gate walks, 1 resolutions"]
