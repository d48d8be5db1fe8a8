"""The command line ``python -m mammoth`` (:mod:`mammoth.__main__` calls :func:`main`): the
pre-flight, then Hydra's ``hydra.main`` runs each job; the work is in :mod:`mammoth.app.runner`.

The pre-flight (:mod:`mammoth.app.preflight`) checks the command line and every config that will
run, once; each job Hydra composes runs with what the pre-flight resolved when it is the config
the pre-flight checked (:mod:`mammoth.app.checked`), else checks itself as :func:`mammoth.run`.

Inside the task function a mammoth error is raised, so Hydra records a failed job and a sweep
goes on with its other jobs (and a sweeper's ``max_failure_rate`` applies). Only this entry
point turns it into the one line ``Error: ...`` and exit status 1, without a traceback.
Whatever the checks before the run find, in mammoth's words or in Hydra's (an override Hydra
cannot parse or compose), is a bad command line: exit status 2.

What this module changes in the process, because ``hydra.main`` has no public way to do it
otherwise (each in one place, with its reason where it happens): ``sys.argv`` (the checked
arguments, :func:`main`), ``HYDRA_FULL_ERROR`` (:func:`hydra_errors_raised`) and ``sys.stderr``
(:func:`single_run_failure_line_dropped`), each restored afterwards but ``sys.argv``.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

import mammoth
import mammoth.app.conf  # noqa: F401  the run schema, stored before Hydra copies the ConfigStore (--info)
from mammoth.app.checked import CheckedConfigs
from mammoth.app.import_name import import_name_problem
from mammoth.app.preflight import CONFIG_NAME, CONFIG_PATH, exit_with, prepare_arguments
from mammoth.app.run_spec import resolve_run, with_registries
from mammoth.config.hydra_job import JobFacts, read_job_facts
from mammoth.errors import ConfigError, MammothError
from mammoth.files import prepare_directory, RunLock
from mammoth.plugins import load_plugins

#: The job log's logger for a single run's error (its console line comes from :func:`main`).
FAILURE_LOGGER = "mammoth.failure"


@hydra.main(config_path=CONFIG_PATH, config_name=CONFIG_NAME, version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    """Run one experiment from the composed config (checked here: no pre-flight handed anything);
    returns the value of ``optimized_metric``. The task function whose module Hydra's search path
    follows (the pre-flight's too)."""
    return run_job(cfg, CheckedConfigs())


def checked_main(checked: CheckedConfigs) -> Callable[[], Any]:
    """``hydra.main`` over the task that runs each job with what the pre-flight ``checked``."""
    @hydra.main(config_path=CONFIG_PATH, config_name=CONFIG_NAME, version_base="1.3")
    def mammoth_job(cfg: DictConfig) -> float | None:
        return run_job(cfg, checked)

    return mammoth_job


def run_job(cfg: DictConfig, checked: CheckedConfigs) -> float | None:
    """Run the job of ``cfg``: with the pre-flight's resolution when ``checked`` holds this very
    config (a sweep's job resolves its own), else checked here (:func:`mammoth.run`); returns the
    value of ``optimized_metric``. A mammoth error is logged to the job's log, then raised."""
    from mammoth.app.runner import check_config, run_resolved  # lazy: torch, kept off --help, completion and composing

    job = read_job_facts()  # the job's one read of Hydra's job facts; passed down
    try:
        found = checked.find(cfg, job.hydra)
        if found is None:
            return run_resolved(check_config(cfg, job), job)
        spec = with_registries(found.spec) if found.spec is not None else None
        return run_resolved(spec if spec is not None else resolve_run(cfg, hydra=job.hydra), job)
    except MammothError as error:
        log_failure(error, job)
        raise


def log_failure(error: MammothError, job: JobFacts) -> None:
    """Write the error to ``job``'s ``mammoth.log`` (and, in a multirun, to the console)."""
    logging.getLogger("mammoth" if job.multirun else FAILURE_LOGGER).error("Error: %s", error)


@contextmanager
def hydra_errors_raised() -> Iterator[bool]:
    """Let Hydra raise errors to the caller instead of printing them and exiting (its
    ``HYDRA_FULL_ERROR`` switch). Yields False when the user had set it: then nothing is caught.

    Kept: ``hydra.main`` catches every error of a run (``run_and_report``), prints a trimmed
    traceback and exits 1, unless ``HYDRA_FULL_ERROR=1``; no public argument turns that off, and
    mammoth's errors must end as one ``Error: ...`` line."""
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield previous != "1"
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


#: What Hydra writes to stderr before it raises a failed job's error; a single run's own line says it all.
HYDRA_FAILED_JOB_LINE = "Error executing job with overrides:"


class _LineFilter:
    """A text stream that drops what starts with ``prefix`` and passes the rest to ``stream``."""

    def __init__(self, stream: TextIO, prefix: str) -> None:
        self.stream, self.prefix = stream, prefix

    def write(self, text: str) -> int:
        """Write ``text`` unless it is the dropped line."""
        return len(text) if text.startswith(self.prefix) else self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextmanager
def single_run_failure_line_dropped(active: bool) -> Iterator[None]:
    """In a single run, drop Hydra's ``Error executing job with overrides: [...]`` line, so a failed
    run prints only its one ``Error: ...`` line (a multirun keeps it: it names the failed job).

    Kept: Hydra writes that line to ``sys.stderr`` in ``JobReturn.return_value`` before it raises a
    failed job's error; no public setting turns it off, and the job must still fail (the
    callbacks record it), so the task function cannot catch its error."""
    if not active:
        yield
        return
    original = sys.stderr
    sys.stderr = _LineFilter(original, HYDRA_FAILED_JOB_LINE)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stderr = original


def report_hydra_error(error: Exception) -> None:
    """Print a Hydra composition error the way Hydra does (its message, then its cause's)."""
    print(str(error), file=sys.stderr)
    if error.__cause__ is not None:
        print(str(error.__cause__), file=sys.stderr)


def unwritable_error(error: OSError) -> ConfigError:
    """A file-system error outside mammoth's own checks, as one line naming the path."""
    reason = (error.strerror or str(error)).lower()
    where = error.filename or "the run directory"
    return ConfigError(f"cannot write {where}: {reason}; allowed: a hydra.run.dir (or output_dir) mammoth can write to")


@contextmanager
def directory_locked(directory: Path | None, key: str) -> Iterator[None]:
    """Hold the run (or sweep) directory's lock while Hydra runs, so a run refused by it finds
    the directory as it was: no ``.hydra/``, log line or ``job.json`` of its own."""
    if directory is None:
        yield
        return
    with RunLock(prepare_directory(directory, key)):
        yield


def check_import_name() -> None:
    """Exit with one line when ``mammoth`` is not mammoth-cl's package (:mod:`mammoth.app.import_name`)."""
    problem = import_name_problem()
    if problem is not None:
        exit_with(MammothError(problem), status=1)


def main() -> None:
    """Entry point: check the command line against what Hydra composes, then run it with Hydra."""
    check_import_name()
    try:
        load_plugins()
        command_line = prepare_arguments(sys.argv[1:], hydra_main)
        if "WORLD_SIZE" in os.environ:  # torchrun: every rank in rank 0's run directory (torch imported only then)
            from mammoth.app.launch import join_command_line  # lazy: torch (the process group), only under torchrun

            command_line = join_command_line(command_line)
    except MammothError as error:
        exit_with(error, status=2)
    except (HydraException, OmegaConfBaseException) as error:  # Hydra cannot parse or compose the command line
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        report_hydra_error(error)
        raise SystemExit(2) from None
    # Kept: the function hydra.main returns parses sys.argv itself (argparse's parse_args() with no
    # arguments); its one parameter, cfg_passthrough, skips Hydra's composition, run directory and
    # launcher. No public API takes the arguments, so the checked ones go to sys.argv, here only.
    sys.argv[1:] = command_line.hydra_arguments()
    run_jobs = checked_main(command_line.checked)
    with hydra_errors_raised() as catch, single_run_failure_line_dropped(not command_line.multirun):
        try:
            with directory_locked(command_line.directory, 'hydra.sweep.dir' if command_line.multirun else 'hydra.run.dir'):
                run_jobs()
        except KeyboardInterrupt as interruption:  # Ctrl-C or SIGTERM: run() logged how to resume
            raise SystemExit(143 if str(interruption) == "SIGTERM" else 130) from None
        except MammothError as error:
            if not catch:
                raise
            exit_with(error, status=1)
        except (HydraException, OmegaConfBaseException) as error:
            if not catch:
                raise
            report_hydra_error(error)
            raise SystemExit(1) from None
        except (OSError, ValueError) as error:  # Hydra creating hydra.run.dir, its log file or .hydra/
            cause = error if isinstance(error, OSError) else error.__cause__
            if not catch or not isinstance(cause, OSError):
                raise
            exit_with(unwritable_error(cause), status=1)
    # Everything left is torch's and Hydra's modules: exclude them from the collection at exit,
    # which otherwise walks every object once more (about a second).
    gc.freeze()

