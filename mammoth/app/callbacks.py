"""Hydra callbacks shipped with mammoth (on by default in conf/config.yaml, ``hydra.callbacks``)."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mammoth.config.hydra_job import JobFacts
from mammoth.config.hydra_private import failed_job_error
from mammoth.errors import ConfigError
from mammoth.files import open_nofollow, write_atomic
from mammoth.reporting.results import RESULTS_NAME
from mammoth.reporting.run_records import COMPLETE, FAILED, RUNNING, STATUS_NAME, STOPPED
from mammoth.reporting.summary_files import MARKDOWN_NAME, update_summary

log = logging.getLogger("mammoth")


class SweepSummaryCallback(Callback):
    """Keeps a summary of a multirun at its sweep root: ``summary.csv``, ``summary.md`` and
    ``summary.png`` (see :mod:`mammoth.reporting.summary_files`), regenerated as each job ends, so a sweep that
    is killed still leaves a summary of what finished, and once more when the sweep ends.

    Every job, in a single run too, records its status in ``job.json`` in its run directory
    (``running`` when it starts; then ``complete``, ``stopped early`` or ``failed`` with the
    error's first line, and its wall time), which ``python -m mammoth.summary`` also reads.
    Job hooks run in the job's process (joblib, submitit workers); updates of the summary take
    turns under a file lock in the sweep root. Nothing here stops a sweep: a write that fails
    is logged as a warning. Turn it off with ``~hydra.callbacks.sweep_summary``.
    """

    def __init__(self) -> None:
        self._started: float | None = None

    def on_job_start(self, config: DictConfig, *, task_function: Any = None, **kwargs: Any) -> None:
        """Record the start time; mark the job ``running`` in its job.json (rank 0 of a distributed run)."""
        from mammoth.engine.distributed import is_main_process  # lazy: torch, kept off building the callbacks (Hydra builds them for every job)

        self._started = time.time()
        if is_main_process():
            self._write_status(config, {"status": "running"})

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """Record the job's status in job.json; in a multirun, update the sweep's summary."""
        from mammoth.engine.distributed import is_main_process  # lazy: torch, kept off building the callbacks

        if not is_main_process():  # a distributed run's other ranks: rank 0 writes the job's files
            return
        if job_return.status == JobStatus.FAILED:
            document: dict[str, Any] = {"status": FAILED, "error": error_line(failed_job_error(job_return))}
        else:
            finished = _results_status(config, RESULTS_NAME) == COMPLETE
            document = {"status": COMPLETE if finished else STOPPED}
        if self._started is not None:
            document["wall_seconds"] = time.time() - self._started
        self._write_status(config, document)
        if JobFacts(config.hydra).multirun:
            _update_summary(config, sweep_root)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Update the sweep's summary once more, in the process that launched the sweep."""
        _update_summary(config, lambda cfg: Path(str(cfg.hydra.sweep.dir)).absolute(), report=True)

    def _write_status(self, config: DictConfig, document: dict[str, Any]) -> None:
        """Write ``document`` plus the job's overrides, times, host and pid to its job.json;
        log (never raise) a failure."""
        try:
            document = {
                **document,
                "overrides": [str(item) for item in config.hydra.overrides.task],
                "started": _timestamp(self._started),
                "updated": _timestamp(time.time()),
                "host": socket.gethostname(),
                "pid": os.getpid(),
            }
            directory = results_directory(config)
            directory.mkdir(parents=True, exist_ok=True)  # a relative output_dir, before the run makes it
            write_atomic(directory / STATUS_NAME, (json.dumps(document, indent=2) + "\n").encode(), "job status")
        except Exception as error:  # noqa: BLE001  a status file must never fail the job
            log.warning("could not write the job status %s: %s", STATUS_NAME, error)


#: The most bytes of a job.json :func:`record_interruption` reads (what the callback writes is < 4 KB).
MAX_STATUS_BYTES = 1 << 20


def record_interruption(run_dir: Path, reason: str) -> None:
    """Mark the job in ``run_dir`` ``stopped early`` in its job.json after Ctrl-C or SIGTERM
    (``reason``): Hydra calls no ``on_job_end`` for a KeyboardInterrupt, so the runner calls this.

    Only a job.json that this process marked ``running`` is changed (none exists when the
    callback is off); it is opened without following a symbolic link. A failure is logged,
    never raised: the interruption goes on.
    """
    _end_running_status(run_dir, os.getpid(), {"status": STOPPED, "interrupted": reason}, "the interruption")


def record_rank_failure(run_dir: Path, error: BaseException, writer_pid: int, writer_host: str) -> None:
    """Mark the job in ``run_dir`` ``failed`` with ``error``'s line (:func:`error_line`, as Hydra's
    ``on_job_end`` records a failed job) from another rank of a distributed run, when the rank
    that writes the job's files (rank 0, process ``writer_pid`` on ``writer_host``) failed: only
    a job.json that process marked ``running`` is changed. A failure is logged, never raised."""
    _end_running_status(run_dir, writer_pid, {"status": FAILED, "error": error_line(error)}, "the failed rank",
                        host=writer_host)


def _end_running_status(run_dir: Path, pid: int, changes: dict[str, Any], what: str, host: str | None = None) -> None:
    """Apply ``changes`` to the job.json in ``run_dir`` that process ``pid`` (on ``host``, when
    given) marked ``running`` (nothing to any other), with the time of the update and the wall
    time since it started."""
    path = run_dir / STATUS_NAME
    try:
        document = _read_own_status(path)
        if document is None or document.get("status") != RUNNING or document.get("pid") != pid:
            return
        if host is not None and document.get("host") != host:
            return
        now = time.time()
        document = {**document, **changes, "updated": _timestamp(now)}
        started = document.get("started")
        if isinstance(started, str):
            document["wall_seconds"] = now - datetime.fromisoformat(started).timestamp()
        write_atomic(path, (json.dumps(document, indent=2) + "\n").encode(), "job status")
    except Exception as error:  # noqa: BLE001  a status file must never hide the interruption
        log.warning("could not record %s in %s: %s", what, path, error)


def _read_own_status(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, read without following a symbolic link; None when there is no
    regular file of at most MAX_STATUS_BYTES or it does not hold an object."""
    try:
        file = open_nofollow(path, "rb")
    except (OSError, ConfigError):  # none, a symbolic link, not a regular file
        return None
    with file:
        if os.fstat(file.fileno()).st_size > MAX_STATUS_BYTES:
            return None
        document = json.loads(file.read(MAX_STATUS_BYTES))
    return document if isinstance(document, dict) else None


def error_line(error: Any) -> str:
    """``ConfigError: model.lr=-1 is not positive; ...``: the type and the first line of the message."""
    if not isinstance(error, BaseException):
        return str(error)
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def results_directory(config: DictConfig) -> Path:
    """Where mammoth writes the job's results: ``output_dir`` if set (a relative one inside the
    job's Hydra directory, as :func:`mammoth.app.job.output_directory` puts it), else the job's Hydra directory."""
    hydra_directory = Path(str(config.hydra.runtime.output_dir))
    if config.get("output_dir"):
        return hydra_directory / str(config.output_dir)  # an absolute output_dir replaces the Hydra directory
    return hydra_directory


def sweep_root(config: DictConfig) -> Path:
    """The sweep directory of a job: its Hydra output directory without ``hydra.sweep.subdir``
    (so workers in other processes and working directories agree), else ``hydra.sweep.dir``."""
    job_dir = Path(str(config.hydra.runtime.output_dir))
    subdir = Path(str(config.hydra.sweep.subdir))
    if not subdir.is_absolute() and job_dir.parts[-len(subdir.parts):] == subdir.parts:
        return job_dir.parents[len(subdir.parts) - 1]
    return Path(str(config.hydra.sweep.dir)).absolute()


def _results_status(config: DictConfig, name: str) -> str | None:
    """The ``status`` field of the job's results file; None when there is none."""
    try:
        return json.loads((results_directory(config) / name).read_text()).get("status")
    except Exception:  # noqa: BLE001  missing, unreadable, not an object: no results
        return None


def _timestamp(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def _update_summary(config: DictConfig, find_root: Callable[[DictConfig], Path], report: bool = False) -> None:
    """Regenerate the summary at ``find_root(config)``; log (never raise) a failure."""
    try:
        root = find_root(config)
        rows = update_summary(root, ended=True if report else None)  # report: the sweep has ended; else judged from the jobs
    except Exception as error:  # noqa: BLE001  a summary must never stop a sweep
        log.warning("could not write the sweep summary: %s", error)
        return
    if report:
        log.info("Sweep summary of %d jobs: %s", len(rows), root / MARKDOWN_NAME)
