"""What a run makes of the Hydra job it runs in (its :class:`~mammoth.config.hydra_job.JobFacts`,
read once by ``mammoth.run`` and passed here): its overrides, its run directory and its title."""

from __future__ import annotations

from pathlib import Path

from mammoth.config.hydra_job import JobFacts
from mammoth.config.run_settings import override_key
from mammoth.files import path_inside, prepare_directory


def job_overrides(job: JobFacts) -> list[str]:
    """The command-line overrides of ``job``, without ``resume`` and ``stop_after_task`` (empty outside Hydra)."""
    return [text for text in job.overrides if override_key(text) not in ("resume", "stop_after_task")]


def output_directory(output_dir: str | None, job: JobFacts) -> Path:
    """``output_dir`` if set (a relative one inside ``job``'s run directory), else the job's run
    directory, else (outside Hydra) the working directory; created if needed. One that is a file or
    cannot be written raises a one-line ConfigError naming it."""
    hydra_directory = job.output_dir
    if output_dir:
        if hydra_directory is not None and not Path(output_dir).is_absolute():
            return prepare_directory(path_inside(hydra_directory, output_dir, "output_dir"), "output_dir")
        return prepare_directory(Path(output_dir), "output_dir")
    if hydra_directory is not None:
        return prepare_directory(hydra_directory, "hydra.run.dir")
    return prepare_directory(Path.cwd(), "the working directory")


def run_title(dataset: str, model: str, backbone: str, job: JobFacts) -> str:
    """``seq-digits · er · mnistmlp``; a sweep's job adds its overrides, so jobs are told apart."""
    title = f"{dataset} · {model} · {backbone}"
    overrides = job_overrides(job) if job.multirun else []
    return f"{title} [{' '.join(overrides)}]" if overrides else title
