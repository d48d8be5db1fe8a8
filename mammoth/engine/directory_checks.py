"""Checks of the run or sweep directory a command will write, made before Hydra writes anything
there (``.hydra/``, the log, ``multirun.yaml``): no planted symlinks, no second sweep merged into
another, no two jobs sharing one directory, no resume under another run's overrides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mammoth.errors import ConfigError, MammothError
from mammoth.engine.rundir import link_error

#: What a second run with other settings must not write over in a directory: Hydra's records.
HYDRA_OUTPUT_SUBDIR = ".hydra"


def resolved_directory(cfg: DictConfig, key: str) -> Path | None:
    """The absolute path ``key`` (``hydra.run.dir``, ``hydra.sweep.dir``) resolves to; None when it
    does not resolve before the run or cannot be written back as a plain override value."""
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
    except Exception:  # noqa: BLE001  a resolver that needs the running job
        return None
    text = str(value) if value is not None else ""
    if not text or any(character in text for character in "$'\\\n\r"):
        return None
    return Path(os.path.abspath(text))


def check_no_links(directory: Path) -> None:
    """No symlink directly in ``directory`` or in its ``.hydra/``: Hydra and mammoth write there."""
    for folder in (directory, directory / HYDRA_OUTPUT_SUBDIR):
        if folder != directory and folder.is_symlink():
            raise link_error(folder)
        if not folder.is_dir() or folder.is_symlink():
            continue
        for entry in os.scandir(folder):
            if entry.is_symlink():
                raise link_error(Path(entry.path))


def check_run_directory(directory: Path, cfg: DictConfig) -> None:
    """A single run's directory: no links; a resume continues a run with the same overrides."""
    check_no_links(directory)
    if cfg.get("resume"):
        _check_same_overrides(directory, list(cfg.hydra.overrides.task), "hydra.run.dir")


def check_sweep_directory(directory: Path, cfg: DictConfig, jobs: Any) -> None:
    """A sweep's root: no links; an existing sweep there is continued only with ``resume=true``;
    every job writes its own directory inside the root, under its own overrides."""
    check_no_links(directory)
    if (directory / "multirun.yaml").exists() and not cfg.get("resume"):
        raise ConfigError(
            f"hydra.sweep.dir={directory} already holds a sweep (multirun.yaml); allowed: resume=true to "
            "continue that sweep, or another hydra.sweep.dir"
        )
    from mammoth.config.sweep_jobs import job_directory

    if not jobs.exact:
        _check_trials_numbered(jobs.configs[0])
        return

    seen: dict[str, int] = {}
    for number, job in enumerate(jobs.configs):
        text = job_directory(job)
        if text is None:
            continue
        path = os.path.normpath(os.path.abspath(text))
        if os.path.commonpath([path, str(directory)]) != str(directory) or path == str(directory):
            raise ConfigError(
                f"hydra.sweep.subdir of job {number} resolves to {path}, outside the sweep directory {directory}; "
                "allowed: a relative subdirectory without '..' (e.g. ${hydra.job.num})"
            )
        if path in seen:
            raise ConfigError(
                f"jobs {seen[path]} and {number} of the sweep would both write {path}; allowed: a "
                "hydra.sweep.subdir that differs between jobs (e.g. ${hydra.job.num} or ${hydra.job.override_dirname})"
            )
        seen[path] = number
        check_no_links(Path(path))
        if cfg.get("resume"):
            _check_same_overrides(Path(path), list(job.hydra.overrides.task), f"job {number}'s directory")


def _check_trials_numbered(job: DictConfig) -> None:
    """A sweeper that picks its trials while it runs (Optuna) numbers them: ``hydra.sweep.subdir``
    must differ between job numbers, or every trial would write one directory."""
    from mammoth.config.sweep_jobs import job_directory, number_job

    directories = {job_directory(number_job(job, number)) for number in (0, 1)}
    if len(directories) == 1 and None not in directories:
        raise ConfigError(
            f"hydra.sweep.subdir={OmegaConf.to_container(job.hydra.sweep, resolve=False)['subdir']!r} names one directory for every trial of "
            "the search; allowed: a subdirectory that includes ${hydra.job.num}"
        )


def _check_same_overrides(directory: Path, overrides: list[str], what: str) -> None:
    """A directory that holds a run continues only under the same overrides (run-control settings
    aside, and ``device`` compared as the device it resolves to), so Hydra never relabels one
    run's results with another's overrides."""
    from mammoth.reporting.summary import read_overrides

    recorded = read_overrides(directory) if (directory / HYDRA_OUTPUT_SUBDIR / "overrides.yaml").exists() else None
    if recorded is None:
        return
    if _comparable(recorded) != _comparable(overrides):
        before, now = _shown(recorded), _shown(overrides)
        raise ConfigError(
            f"{what} {directory} holds a run with other overrides ({' '.join(before) or 'none'}); "
            f"this one has {' '.join(now) or 'none'}; allowed: resume it with the same overrides, "
            "or start this run in another directory"
        )


def _shown(overrides: list[str]) -> list[str]:
    """The overrides a resume must repeat, as given (run-control settings left out), sorted."""
    from mammoth.config.run_settings import is_run_control_override

    return sorted({text for text in map(str, overrides) if not is_run_control_override(text)})


def _comparable(overrides: list[str]) -> tuple[set[str], str]:
    """What a resume must repeat: the overrides other than run-control settings and ``device``, and
    the device the run would use (``device=auto``, also when not given, is ``cpu`` without CUDA)."""
    from mammoth.config.run_settings import override_key

    kept = set(_shown(overrides))
    devices = [text for text in kept if override_key(text) == "device"]
    device = devices[-1].split("=", 1)[1] if devices else "auto"
    return kept.difference(devices), _resolved_device_name(device)


def _resolved_device_name(name: str) -> str:
    """The device ``name`` resolves to here (``name`` itself when it does not: the run will say why)."""
    from mammoth.engine.device import resolve_device

    try:
        return str(resolve_device(name))
    except MammothError:
        return name
