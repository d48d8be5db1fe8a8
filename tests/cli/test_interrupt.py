"""Ctrl-C and SIGTERM: one line with the exact command that resumes the run, the last finished
task's checkpoint intact, and a run resumed from the command line (stopped once more with
stop_after_task, then resumed again) bit-for-bit equal to an uninterrupted one."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from conftest import run_python
from mammoth.engine.checkpoint import read_checkpoint

#: Imported at start-up by the interrupted run only (a sitecustomize on its PYTHONPATH): sends
#: SIGTERM to the process after the first of two epochs of task 2 of ``python -m mammoth``.
INTERRUPT = '''
import os, signal
print("pid", os.getpid(), flush=True)
from mammoth.models.base import ContinualModel
end_epoch = ContinualModel.end_epoch
def interrupting_end_epoch(self, epoch):
    end_epoch(self, epoch)
    if self.current_task == 1 and epoch == 0:
        os.kill(os.getpid(), signal.SIGTERM)
ContinualModel.end_epoch = interrupting_end_epoch
'''
OVERRIDES = ["model=derpp", "model.buffer_size=50", "dataset.n_epochs=2", "device=cpu", "seed=3"]


@pytest.mark.slow
def test_sigterm_prints_the_resume_command_and_resuming_is_bit_exact(workdir: Path):
    whole = run_python(["-m", "mammoth", *OVERRIDES, "hydra.run.dir=whole"], workdir)
    assert whole.returncode == 0, whole.stderr
    injected = workdir / "injected"
    injected.mkdir()
    (injected / "sitecustomize.py").write_text(INTERRUPT)
    part = workdir / "part"
    interrupted = run_python(["-m", "mammoth", *OVERRIDES, f"hydra.run.dir={part}"], injected)
    assert interrupted.returncode == 143, interrupted.stderr  # 128 + SIGTERM
    output = interrupted.stdout + interrupted.stderr
    lines = [line for line in output.splitlines() if "Interrupted" in line]
    assert len(lines) == 1 and "Traceback" not in output
    assert lines[0].startswith("Interrupted (SIGTERM); the checkpoint of the last finished task is intact. Resume with: ")
    command = shlex.split(lines[0].split("Resume with: ", 1)[1])
    assert command == ["python", "-m", "mammoth", *OVERRIDES, "resume=true", f"hydra.run.dir={part}"]
    assert read_checkpoint(part / "checkpoint.pt")["state"]["next_task"] == 1  # task 1's, intact
    assert not (part / "results.json").exists() and not list(part.glob("*.tmp"))
    status = json.loads((part / "job.json").read_text())
    assert status["status"] == "stopped early" and status["interrupted"] == "SIGTERM", status
    assert status["pid"] == interrupted_pid(interrupted) and status["wall_seconds"] > 0

    # resumed from the command line and stopped again: the line that says how to continue
    stopped = run_python([*command[1:], "stop_after_task=3"], workdir, python=sys.executable)
    assert stopped.returncode == 0, stopped.stderr
    assert (f"Stopped after task 3 of 5; continue with: {shlex.join(command)}" in stopped.stdout)
    assert read_checkpoint(part / "checkpoint.pt")["state"]["next_task"] == 3 and not (part / "results.json").exists()
    resumed = run_python(command[1:], workdir, python=sys.executable)
    assert resumed.returncode == 0, resumed.stderr
    expected = json.loads((workdir / "whole" / "results.json").read_text())
    actual = json.loads((part / "results.json").read_text())
    assert actual["status"] == "complete"
    for kind in ("class_il", "task_il"):
        assert actual[kind]["matrix"] == expected[kind]["matrix"]
    assert json.loads((part / "job.json").read_text())["status"] == "complete"


def interrupted_pid(process) -> int:
    """The pid the injected interrupter printed (the run's own process)."""
    return int(next(line for line in process.stdout.splitlines() if line.startswith("pid ")).split()[1])


@pytest.mark.slow
def test_ctrl_c_before_the_first_checkpoint_leaves_job_json_stopped_early(workdir: Path):
    injected = workdir / "injected"
    injected.mkdir()
    # Ctrl-C as in a terminal: a process started in the background has SIGINT ignored, so restore Python's handler
    interrupt = INTERRUPT.replace("SIGTERM", "SIGINT").replace("current_task == 1", "current_task == 0")
    interrupt += "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    (injected / "sitecustomize.py").write_text(interrupt)
    run_dir = workdir / "run"
    interrupted = run_python(["-m", "mammoth", *OVERRIDES, f"hydra.run.dir={run_dir}"], injected)
    assert interrupted.returncode == 130, interrupted.stderr  # 128 + SIGINT
    status = json.loads((run_dir / "job.json").read_text())
    assert status["status"] == "stopped early" and status["interrupted"] == "SIGINT", status
    assert status["overrides"] == OVERRIDES
    assert not (run_dir / "checkpoint.pt").exists() and not (run_dir / "results.json").exists()
