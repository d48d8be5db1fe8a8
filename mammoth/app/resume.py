"""Resuming a run: whether it resumes, the command that resumes it, and the line an interrupted
run logs (by Ctrl-C, SIGTERM, or a rank of a distributed run that died or hung)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

from mammoth.app.job import job_overrides
from mammoth.config.hydra_job import JobFacts
from mammoth.files import CHECKPOINT_NAME

log = logging.getLogger("mammoth")


def resumes(resume: bool, run_dir: Path, job: JobFacts) -> bool:
    """``resume``, except for a sweep's job that never checkpointed: a resumed sweep starts it afresh."""
    if resume and job.multirun and not (run_dir / CHECKPOINT_NAME).exists():
        log.info("resume=true but %s has no checkpoint: this job of the sweep starts from the first task", run_dir)
        return False
    return bool(resume)


def interrupted_line(run_dir: Path, reason: str, job: JobFacts) -> str:
    """One line for an interrupted run: the command that resumes it from its checkpoint, or,
    before the first checkpoint, that there is nothing to resume."""
    if (run_dir / CHECKPOINT_NAME).is_file():
        return f"Interrupted ({reason}); the checkpoint of the last finished task is intact. Resume with: {resume_command(run_dir, job)}"
    return f"Interrupted ({reason}) before the first task finished: nothing to resume; start the run again"


def rank_failure_line(failure: str, task: Optional[str], run_dir: Path, job: JobFacts) -> str:
    """One line for a distributed run that a failed rank ended: the task it interrupted (``task
    2/5``; None before the first task began), what happened (``failure``: ``rank 1 of 2 (pid 4242
    on node7) died``), and the command that resumes it from its checkpoint, or, before the first
    checkpoint, that there is nothing to resume."""
    where = f"task {task} interrupted" if task is not None else "the run stopped before its first task"
    if (run_dir / CHECKPOINT_NAME).is_file():
        return (f"{where}: {failure}; the checkpoint of the last finished task is intact. "
                f"Resume with: {resume_command(run_dir, job)}")
    return f"{where}: {failure}; nothing to resume: start the run again"


def torchrun_options(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Under torchrun (``TORCHELASTIC_RUN_ID`` set, several processes), the options that start the
    same processes again: ``torchrun --nproc_per_node=2`` (on several machines ``--nnodes=N`` too:
    each node runs it with its rendezvous options); else None."""
    environ = os.environ if environ is None else environ
    world, local = environ.get("WORLD_SIZE", ""), environ.get("LOCAL_WORLD_SIZE", "")
    if "TORCHELASTIC_RUN_ID" not in environ or not world.isdigit() or int(world) < 2:
        return None
    per_node = int(local) if local.isdigit() and int(local) > 0 else int(world)
    nodes = max(int(world) // per_node, 1)
    return " ".join(["torchrun", *([f"--nnodes={nodes}"] if nodes > 1 else []), f"--nproc_per_node={per_node}"])


def program() -> str:
    """How this run was started: ``python -m mammoth``, the ``mammoth`` script, or ``python
    SCRIPT``; under torchrun, torchrun's command that starts as many processes the same way."""
    started = _single_program()
    launcher = torchrun_options()
    if launcher is None:
        return started
    if started == "mammoth":
        return f"{launcher} --no-python mammoth"
    return f"{launcher} {started.removeprefix('python ')}"


def _single_program() -> str:
    """How this process was started: ``python -m mammoth``, the ``mammoth`` script, or ``python SCRIPT``."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "mammoth":
        return "mammoth"
    launcher_worker = script is None or any(part in ("site-packages", "dist-packages") for part in script.parts)
    if launcher_worker or script.suffix != ".py" or script.parts[-2:] == ("mammoth", "__main__.py"):
        return "python -m mammoth"  # also a launcher's worker process (joblib, submitit, ray)
    return f"python {sys.argv[0]}"


def resume_command(run_dir: Path, job: JobFacts) -> str:
    """The command that continues this run (a sweep's ``job`` too) in ``run_dir``."""
    return " ".join([program(), *job_overrides(job), "resume=true", f"hydra.run.dir={run_dir}"])
