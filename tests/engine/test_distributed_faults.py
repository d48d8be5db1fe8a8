"""A rank of a 2-process torchrun run that dies (SIGKILL) or hangs (SIGSTOP) during task 2: the
surviving rank ends within the collective timeout (``MAMMOTH_DIST_TIMEOUT=5``) plus slack with one
line naming the failed rank, the task interrupted and the exact command that resumes the run
(which does); ``job.json`` says ``failed`` with that line; a next run takes over the lock a killed
rank 0 held, with a line saying so. Second suite (``python -m pytest -q -m distributed``).

Slack: the kill and the stop are sent as soon as rank 1 logs the first epoch of task 2; timings
are bounds on a loaded 2-core machine (the survivor's own report takes well under a second:
``/proc`` tells it the peer is gone or stopped), not measurements.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mammoth.engine.rank_faults import process_state

pytestmark = pytest.mark.distributed

TIMEOUT = 5  # MAMMOTH_DIST_TIMEOUT: how long a collective waits for a hung rank
SLACK = 25  # seconds more a survivor may take to end on this loaded machine (start-up of nothing: it is running)
RUN = ["model=er", "model.buffer_size=50", "dataset.n_epochs=6"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(run_dir: Path, *extra: str, injected: Path | None = None) -> subprocess.Popen:
    """torchrun's 2 processes of ``python -m mammoth RUN``; ``injected``: a directory put first on
    their PYTHONPATH (a sitecustomize.py there runs in each at start-up)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               "-m", "mammoth", *RUN, f"hydra.run.dir={run_dir}", *extra]
    env = {**os.environ, "MAMMOTH_DIST_TIMEOUT": str(TIMEOUT)}
    if injected is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(injected), env.get("PYTHONPATH")]))
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=run_dir.parent,
                            env=env)


def pids_once_task_2_trains(run_dir: Path, process: subprocess.Popen, logged: str = "task 2/5, epoch 1/6") -> dict[int, int]:
    """Each rank's pid, once rank 1 has logged ``logged`` (by default the first epoch of task 2:
    task 1's checkpoint is written)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        log = run_dir / "rank1.log"
        found = re.search(rf"\[rank 1 pid (\d+)\].*{re.escape(logged)}", log.read_text()) if log.exists() else None
        if found:
            rank0 = int((run_dir / ".mammoth.lock").read_text().split()[0])  # "PID HOST": rank 0 holds the lock
            return {0: rank0, 1: int(found.group(1))}
        time.sleep(0.1)
    raise AssertionError(f"task 2 never started: {process.communicate(timeout=60)[1][-3000:]}")


def ended(pid: int, since: float, limit: float) -> float:
    """Seconds from ``since`` until process ``pid`` is gone (torchrun reaps its workers), at most ``limit``."""
    while process_state(pid) != "gone" and time.monotonic() - since < limit:
        time.sleep(0.05)
    return time.monotonic() - since


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error: ")]


def expected_line(run_dir: Path, failed: int, pid: int, what: str) -> str:
    command = shlex.join(["torchrun", "--nproc_per_node=2", "-m", "mammoth", *RUN, "resume=true",
                          f"hydra.run.dir={run_dir}"])
    return (f"task 2/5 interrupted: rank {failed} of 2 (pid {pid} on {socket.gethostname()}) {what}; the checkpoint "
            f"of the last finished task is intact. Resume with: {command}")


def kill_once_task_2_trains(run_dir: Path, rank: int) -> tuple[subprocess.Popen, dict[int, int], str]:
    """torchrun's 2 processes on ``run_dir``; once task 2 trains, SIGKILL rank ``rank`` and check the
    other rank is gone within the collective timeout: (the finished torchrun, each rank's pid, its stderr)."""
    run_dir.mkdir()
    process = torchrun(run_dir)
    try:
        pids = pids_once_task_2_trains(run_dir, process)
        os.kill(pids[rank], signal.SIGKILL)
        killed = time.monotonic()
        assert ended(pids[1 - rank], killed, TIMEOUT + SLACK) < TIMEOUT + SLACK
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    return process, pids, stderr


def test_a_killed_rank_1_ends_rank_0_with_one_line_and_the_printed_command_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    process, pids, stderr = kill_once_task_2_trains(run_dir, 1)
    line = expected_line(run_dir, 1, pids[1], "died")
    assert process.returncode != 0
    assert error_lines(stderr) == [f"Error: {line}"], stderr[-3000:]
    assert re.search(r"Root Cause \(first observed failure\):.*?rank\s*: 1 \(local_rank: 1\).*?Signal 9 \(SIGKILL\)",
                     stderr, re.S), stderr[-3000:]  # torchrun's own summary names it too
    assert "[rank0]" not in stderr and "gloo" not in stderr  # no traceback of rank 0's: it went to the log file
    # rank 0 saw gloo's error in its collective, or first torchrun's SIGTERM (sent once rank 1 was gone): either way
    # the same line; what it saw, with the traceback, is in the log file
    assert re.search(r"\[mammoth.failure\]\[INFO\] the error this rank saw: (RuntimeError: .*gloo.*|KeyboardInterrupt: "
                     r"SIGTERM)\nTraceback", (run_dir / "mammoth.log").read_text())
    status = json.loads((run_dir / "job.json").read_text())
    assert status["status"] == "failed" and status["error"] == f"TrainingError: {line}" and status["pid"] == pids[0]
    assert (run_dir / ".mammoth.lock").read_text() == ""  # rank 0 left its lock in order
    assert not (run_dir / "results.json").exists()

    # the printed command, as printed (torchrun is `python -m torch.distributed.run`)
    command = shlex.split(line.split("Resume with: ", 1)[1])
    assert command[:2] == ["torchrun", "--nproc_per_node=2"]
    resumed = subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--master_port={free_port()}",
                              *command[1:]], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "results.json").read_text())["status"] == "complete"
    assert json.loads((run_dir / "job.json").read_text())["status"] == "complete"
    assert "taking over the lock" not in resumed.stderr


def test_a_killed_rank_0_ends_rank_1_which_marks_the_job_failed_and_the_next_run_takes_over_the_lock(
        tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    process, pids, stderr = kill_once_task_2_trains(run_dir, 0)
    line = expected_line(run_dir, 0, pids[0], "died")
    assert error_lines(stderr) == [f"Error: {line}"], stderr[-3000:]
    assert "[rank1]" not in stderr
    status = json.loads((run_dir / "job.json").read_text())
    assert status["status"] == "failed" and status["error"] == f"TrainingError: {line}" and status["pid"] == pids[0]
    assert (run_dir / ".mammoth.lock").read_text() == f"{pids[0]} {socket.gethostname()}"  # the dead holder's name

    # the next run (here one process, stopping after task 2) takes the lock over and says so
    resumed = subprocess.run([sys.executable, "-m", "mammoth", *RUN, f"hydra.run.dir={run_dir}", "resume=true",
                              "stop_after_task=2"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr.splitlines().count(
        f"taking over the lock of {run_dir}: its last holder was pid {pids[0]} on {socket.gethostname()}: gone, "
        "it ended without leaving the lock") == 1, resumed.stderr[-3000:]
    assert "Stopped after task 2 of 5" in resumed.stdout
    assert (run_dir / ".mammoth.lock").read_text() == ""


def test_a_stopped_rank_is_named_by_the_rank_that_waited_for_it_within_the_timeout(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    process = torchrun(run_dir)
    pids = {}
    try:
        pids = pids_once_task_2_trains(run_dir, process)
        os.kill(pids[1], signal.SIGSTOP)
        stopped = time.monotonic()
        waited = ended(pids[0], stopped, TIMEOUT + SLACK)
        assert TIMEOUT <= waited < TIMEOUT + SLACK  # the collective's timeout, then the report
        os.kill(pids[1], signal.SIGKILL)  # torchrun would wait 30 s for it to end on its SIGTERM
        _, stderr = process.communicate(timeout=120)
    finally:
        if pids:
            try:
                os.kill(pids[1], signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.kill()
    line = expected_line(run_dir, 1, pids[1], "was stopped (SIGSTOP)")
    assert error_lines(stderr) == [f"Error: {line}"], stderr[-3000:]
    assert "[rank0]" not in stderr
    # torchrun's summary: rank 0 ended first, so it is the "root cause"; its entry is the line naming rank 1
    assert re.search(r"Root Cause \(first observed failure\):.*?rank\s*: 0 \(local_rank: 0\).*?traceback : "
                     + re.escape(line), stderr, re.S), stderr[-3000:]
    status = json.loads((run_dir / "job.json").read_text())
    assert status["status"] == "failed" and status["error"] == f"TrainingError: {line}"


#: Rank 1 only: after the first epoch of task 2, busy in its own code (a sleep standing for a
#: deadlock or an endless loop) far past the collective timeout.
STUCK = """
import os, time
if os.environ.get("RANK") == "1":
    from mammoth.models.base import ContinualModel
    end_epoch = ContinualModel.end_epoch
    def stuck_end_epoch(self, epoch):
        end_epoch(self, epoch)
        if self.current_task == 1 and epoch == 0:
            time.sleep(120)
    ContinualModel.end_epoch = stuck_end_epoch
"""


def test_a_rank_stuck_in_its_own_code_is_named_as_the_one_that_did_not_come(tmp_path: Path) -> None:
    injected = tmp_path / "injected"
    injected.mkdir()
    (injected / "sitecustomize.py").write_text(STUCK)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    process = torchrun(run_dir, injected=injected)
    try:
        pids = pids_once_task_2_trains(run_dir, process, "task 1/5: Class-IL")  # it sticks after task 2's first epoch
        began = time.monotonic()
        assert ended(pids[0], began, TIMEOUT + SLACK) < TIMEOUT + SLACK
        _, stderr = process.communicate(timeout=120)  # torchrun's SIGTERM interrupts rank 1's sleep
    finally:
        process.kill()
    line = expected_line(run_dir, 1, pids[1], "did not come to the collective (alive, busy in its own code past the timeout)")
    assert error_lines(stderr) == [f"Error: {line}"], stderr[-3000:]
    status = json.loads((run_dir / "job.json").read_text())
    assert status["status"] == "failed" and status["error"] == f"TrainingError: {line}"


def test_an_interrupted_run_is_no_rank_failure(tmp_path: Path) -> None:
    """SIGTERM to torchrun (a cluster's time limit, Ctrl-C): it stops every rank with SIGTERM; each
    sees the others alive or leaving in order, so the run says it was interrupted, as one process does."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    process = torchrun(run_dir)
    try:
        pids_once_task_2_trains(run_dir, process)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert error_lines(stderr) == [] and "interrupted: rank" not in stdout + stderr, stderr[-3000:]
    command = shlex.join(["torchrun", "--nproc_per_node=2", "-m", "mammoth", *RUN, "resume=true",
                          f"hydra.run.dir={run_dir}"])
    line = f"Interrupted (SIGTERM); the checkpoint of the last finished task is intact. Resume with: {command}"
    assert stdout.splitlines().count(line) == 1, stdout[-3000:]  # rank 0's console
    assert (run_dir / "rank1.log").read_text().count(line) == 1
    status = json.loads((run_dir / "job.json").read_text())
    assert status["status"] == "stopped early" and status["interrupted"] == "SIGTERM"
