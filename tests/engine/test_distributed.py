"""mammoth.engine.distributed: launches read from torchrun's environment, and (second suite,
``-m distributed``) the collectives on two real processes started by torchrun with gloo."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from mammoth.engine.distributed import (
    DEFAULT_TIMEOUT_SECONDS, Launch, backend_for, detect_launch, is_main_process, launch_rank, process_device,
    process_group_timeout, rank, waiting_line,
)
from mammoth.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

TORCHRUN = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def test_torchrun_variables_give_the_launch() -> None:
    assert detect_launch(TORCHRUN) == Launch(rank=1, world_size=2, local_rank=1, launcher="torchrun")


LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SUBMITIT_EXECUTOR", "SLURM_NTASKS", "SLURM_PROCID",
                    "SUBMITIT_LOCAL_NTASKS", "SUBMITIT_LOCAL_GLOBALID")


@pytest.mark.parametrize("environ, process_rank", [
    (TORCHRUN, 1), ({**TORCHRUN, "RANK": "0"}, 0), ({}, 0),
    ({"SUBMITIT_EXECUTOR": "slurm", "SLURM_NTASKS": "4", "SLURM_PROCID": "3"}, 3),
    ({"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_GLOBALID": "1"}, 1),
    ({"SLURM_NTASKS": "2", "SLURM_PROCID": "1"}, 0),  # srun without torchrun or submitit: each process its own run
    ({"SUBMITIT_EXECUTOR": "slurm", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, 0),
])
def test_before_its_process_group_a_process_is_the_rank_its_launcher_gave_it(monkeypatch, environ, process_rank) -> None:
    """One answer to "is this the main process", also where Hydra's job callbacks ask it (before
    the run's process group starts, after it ends): the launch's rank, as detect_launch reads it."""
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert launch_rank(environ) == rank() == process_rank
    assert is_main_process() is (process_rank == 0)


def test_a_rank_that_is_no_number_is_a_one_line_error() -> None:
    with pytest.raises(ConfigError, match=r"^environment variable SLURM_PROCID='x' is not a non-negative integer; "
                                          r"submitit sets it"):
        launch_rank({"SUBMITIT_EXECUTOR": "slurm", "SLURM_NTASKS": "2", "SLURM_PROCID": "x"})


def test_one_process_is_no_launch() -> None:
    assert detect_launch({}) is None
    assert detect_launch({**TORCHRUN, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}) is None
    assert detect_launch({"SUBMITIT_EXECUTOR": "local", "SLURM_NTASKS": "1"}) is None


def test_incomplete_or_inconsistent_variables_are_one_line_errors() -> None:
    partial = {key: value for key, value in TORCHRUN.items() if key != "MASTER_PORT"}
    with pytest.raises(ConfigError, match=r"^RANK and WORLD_SIZE are set but MASTER_PORT not; allowed: start every process with torchrun"):
        detect_launch(partial)
    with pytest.raises(ConfigError, match=r"^rank 2 of world size 2; allowed: 0..1"):
        detect_launch({**TORCHRUN, "RANK": "2"})
    with pytest.raises(ConfigError, match=r"^environment variable LOCAL_RANK='x' is not a non-negative integer"):
        detect_launch({**TORCHRUN, "LOCAL_RANK": "x"})


def test_backend_and_device_per_rank() -> None:
    assert backend_for(torch.device("cpu")) == "gloo" and backend_for(torch.device("cuda", 0)) == "nccl"
    assert process_device(detect_launch(TORCHRUN), torch.device("cpu")) == torch.device("cpu")
    if torch.cuda.device_count() < 2:
        with pytest.raises(ConfigError, match=r"^local rank 1 has no CUDA device of its own"):
            process_device(detect_launch(TORCHRUN), torch.device("cuda"))


def test_the_join_timeout_comes_from_mammoth_dist_timeout() -> None:
    assert process_group_timeout({}) == DEFAULT_TIMEOUT_SECONDS == 300
    assert process_group_timeout({"MAMMOTH_DIST_TIMEOUT": "2.5"}) == 2.5
    for text in ("abc", "0", "-1", "inf", "nan", ""):
        with pytest.raises(ConfigError, match=rf"^environment variable MAMMOTH_DIST_TIMEOUT={text!r} is not a number of "
                                              r"seconds > 0; allowed: a timeout such as 60 \(default 300\)$"):
            process_group_timeout({"MAMMOTH_DIST_TIMEOUT": text})


@pytest.mark.slow
def test_a_rank_whose_others_never_come_says_what_it_waits_for_then_fails_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    environment = {**os.environ, "PYTHONPATH": str(REPO), "MAMMOTH_DIST_TIMEOUT": "4", "RANK": "0", "WORLD_SIZE": "2",
                   "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    result = subprocess.run([sys.executable, "-m", "mammoth", "model=sgd", "dataset=seq-digits"], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path, env=environment)
    address = f"127.0.0.1:{port}"
    waiting, error = result.stderr.splitlines()  # these two lines and nothing else: no traceback
    assert waiting == waiting_line(Launch(0, 2, 0, "torchrun"), address, 4.0)
    assert waiting == (f"rank 0 of 2 waiting for the other ranks at {address} (MASTER_ADDR:MASTER_PORT; timeout 4 s, "
                       "MAMMOTH_DIST_TIMEOUT sets it)")
    assert re.fullmatch(rf"Error: rank 0 of 2: the other ranks did not join at {address} within 4 s \(Timed out after "
                        r"\d+ seconds waiting for clients\. 1/2 clients joined\.\); allowed: start all 2 processes with "
                        r"the same MASTER_ADDR and MASTER_PORT \(torchrun --nproc_per_node=2 -m mammoth \.\.\.\), or one "
                        r"process without RANK and WORLD_SIZE", error), error
    assert result.returncode == 2 and result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # nothing written: no run directory claims a run


# ---- two real processes (second suite: python -m pytest -q -m distributed) ----

WORKER = textwrap.dedent("""
    import json, sys, torch
    from mammoth.engine.distributed import (broadcast_text, detect_launch, gather_rows, gather_texts, is_main_process,
                                            start_process_group, stop_process_group, sum_over_ranks)

    launch = detect_launch()
    start_process_group(launch, torch.device("cpu"), timeout_seconds=float(sys.argv[2]))
    if sys.argv[3] == "die" and launch.rank == 1:
        sys.exit(3)  # this rank fails before the collective; rank 0 must not wait forever
    text = broadcast_text("runs/2026-12-04/ü" if is_main_process() else None)
    rows = gather_rows(torch.full((launch.rank + 1, 2), float(launch.rank)))
    total = sum_over_ranks(torch.tensor([launch.rank + 1]))
    texts = gather_texts("" if launch.rank == 0 else "rang 1: ü")
    with open(f"{sys.argv[1]}/rank{launch.rank}.json", "w") as file:
        json.dump({"text": text, "rows": rows.tolist(), "total": total.tolist(), "launcher": launch.launcher,
                   "texts": texts}, file)
    stop_process_group()
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(tmp_path: Path, mode: str, timeout_seconds: float = 60) -> subprocess.CompletedProcess:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               str(script), str(tmp_path), str(timeout_seconds), mode]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)


@pytest.mark.distributed
def test_collectives_on_two_processes(tmp_path: Path) -> None:
    result = torchrun(tmp_path, "run")
    assert result.returncode == 0, result.stderr[-2000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    for report in reports:
        assert report["text"] == "runs/2026-12-04/ü"  # rank 0's choice, on every rank
        assert report["rows"] == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]  # 1 row of rank 0, then 2 of rank 1
        assert report["total"] == [3] and report["launcher"] == "torchrun"
        assert report["texts"] == ["", "rang 1: ü"]  # every rank's text in rank order, an empty one kept


@pytest.mark.distributed
def test_a_failed_rank_stops_the_run_in_bounded_time(tmp_path: Path) -> None:
    started = time.monotonic()
    result = torchrun(tmp_path, "die", timeout_seconds=20)
    assert result.returncode != 0
    assert time.monotonic() - started < 200  # the 300 s subprocess limit was never needed
    assert re.search(r"Root Cause \(first observed failure\):.*?rank\s*: 1 \(local_rank: 1\)\s+exitcode\s*: 3",
                     result.stderr, re.S)  # torchrun names the failed rank; it stopped rank 0
    assert not (tmp_path / "rank0.json").exists()
