"""Resuming a run: whether it resumes, the command that resumes it, and the line an interrupted run logs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

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


def program() -> str:
    """How this run was started: ``python -m mammoth``, the ``mammoth`` script, or ``python SCRIPT``."""
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
