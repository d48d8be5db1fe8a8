"""Checks of the run or sweep directory a command will write, made before Hydra writes anything
there (``.hydra/``, the log, ``multirun.yaml``): no planted symlinks, no second sweep merged into
another, no two jobs sharing one directory, no resume under another run's overrides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mammoth.app.sweep_jobs import job_directory, number_job
from mammoth.config.run_settings import is_run_control_override, override_key
from mammoth.errors import ConfigError, MammothError
from mammoth.files import link_error
from mammoth.reporting.run_records import (
    MAX_SMALL_FILE_BYTES,
    find_job_dirs,
    is_job_dir,
    read_limited,
    read_overrides,
    safe_yaml,
)

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


def check_sweep_directory(directory: Path, cfg: DictConfig, jobs: Any) -> str | None:
    """A sweep's root: no links; an existing sweep there (a basic sweep or an Optuna study) is
    continued only with ``resume=true``; every job writes its own directory inside the root, under
    its own overrides. Returns the ``hydra.sweep.subdir`` a continued Optuna study's new trials
    must use (:func:`continued_study_subdir`), else None."""
    check_no_links(directory)
    held = sweep_evidence(directory)
    if held is not None and not cfg.get("resume"):
        raise ConfigError(
            f"hydra.sweep.dir={directory} already holds a sweep ({held}); allowed: resume=true to "
            "continue that sweep, or another hydra.sweep.dir"
        )

    if not jobs.exact:
        _check_trials_numbered(jobs.configs[0])
        return _check_study(directory, cfg, continued=held is not None)

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
    return None


def sweep_evidence(directory: Path) -> str | None:
    """What shows that ``directory`` holds a sweep: Hydra's ``multirun.yaml`` (the basic sweeper's),
    an Optuna study's ``optimization_results.yaml`` or, as the Optuna sweeper writes neither until
    it ends, a job directory in it; None when it holds none of them."""
    for name in ("multirun.yaml", "optimization_results.yaml"):
        if (directory / name).exists():
            return name
    job = next(iter(_job_directories(directory)), None)
    return None if job is None else f"job directory {job.relative_to(directory)}"


def _job_directories(directory: Path) -> list[Path]:
    """The job directories directly in ``directory`` and in its ``resume-N`` folders (a continued
    study's), in natural order."""
    if not directory.is_dir():
        return []
    found = []
    for child in sorted(directory.iterdir()):
        if child.is_dir() and not child.is_symlink() and not child.name.startswith("."):
            if is_job_dir(child):
                found.append(child)
            elif child.name.startswith(CONTINUED_STUDY_PREFIX):
                found.extend(path for path in find_job_dirs(child) if path != child)
    return found


#: Where the trials of a continued Optuna study go: ``hydra.sweep.dir/resume-N/<hydra.sweep.subdir>``.
CONTINUED_STUDY_PREFIX = "resume-"


def _check_study(directory: Path, cfg: DictConfig, continued: bool) -> str | None:
    """An Optuna study (a sweeper that picks its trials while it runs) keeps to one study per sweep
    directory: its storage must not hold the study already unless it continues (``resume=true``),
    and a continued one must be the directory's study (same ``storage`` and ``study_name``) in a
    storage that keeps it. Returns the ``hydra.sweep.subdir`` of a continued study's trials."""
    sweeper = cfg.hydra.sweeper
    if "optuna" not in str(sweeper.get("_target_", "")).lower():
        return None
    storage, name = sweeper.get("storage"), sweeper.get("study_name")
    if not continued:
        if storage is not None and name is not None and not cfg.get("resume") and _stored_trials(storage, name) is not None:
            raise ConfigError(
                f"hydra.sweeper.storage={storage!r} already holds the Optuna study {name!r}; a new sweep directory would "
                f"summarise only part of it; allowed: resume=true to continue that study (its trials so far stay in its "
                "own hydra.sweep.dir), or another hydra.sweeper.study_name"
            )
        return None
    _check_same_study(directory, storage, name)
    if storage is None:
        raise ConfigError(
            f"resume=true cannot continue the Optuna study in hydra.sweep.dir={directory}: hydra.sweeper.storage is "
            "null, so the study lived in memory and ended with its sweep; allowed: another hydra.sweep.dir (to keep a "
            "study to continue, start it with hydra.sweeper.storage=sqlite:///NAME.db hydra.sweeper.study_name=NAME)"
        )
    if name is None:
        raise ConfigError(
            f"resume=true cannot continue the Optuna study in hydra.sweep.dir={directory}: hydra.sweeper.study_name is "
            "null, so Optuna would start a new study under a new name; allowed: the study's hydra.sweeper.study_name"
        )
    if _stored_trials(storage, name) is None:
        raise ConfigError(
            f"resume=true cannot continue the Optuna study in hydra.sweep.dir={directory}: hydra.sweeper.storage="
            f"{storage!r} holds no study named {name!r}; allowed: the storage and study_name the study started with"
        )
    subdir = str(OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["subdir"])
    if any(character in subdir for character in "'\\\n\r"):
        raise ConfigError(
            f"hydra.sweep.subdir={subdir!r} cannot be moved under resume-N/ for the continued study's new trials; "
            "allowed: a subdirectory without quotes or backslashes (e.g. ${hydra.job.num})"
        )
    taken = [path.name[len(CONTINUED_STUDY_PREFIX):] for path in directory.iterdir() if path.name.startswith(CONTINUED_STUDY_PREFIX)]
    number = 1 + max((int(text) for text in taken if text.isdigit()), default=0)
    return f"{CONTINUED_STUDY_PREFIX}{number}/{subdir}"


def _check_same_study(directory: Path, storage: Any, name: Any) -> None:
    """The study the trials in ``directory`` recorded (their ``.hydra/hydra.yaml``) is the one
    ``storage`` and ``name`` give (nothing to compare when none recorded it)."""
    for job in _job_directories(directory):
        recorded = _recorded_sweeper(job)
        if recorded is None:
            continue
        before = (recorded.get("storage"), recorded.get("study_name"))
        if before == (storage, name):
            return
        if before[0] is None:
            raise ConfigError(
                f"resume=true cannot continue the Optuna study in hydra.sweep.dir={directory}: it was kept in memory "
                "(its hydra.sweeper.storage was null) and ended with its sweep; allowed: another hydra.sweep.dir"
            )
        raise ConfigError(
            f"hydra.sweep.dir={directory} holds the Optuna study {before[1]!r} of hydra.sweeper.storage={before[0]!r}; "
            f"this search names {name!r} of {storage!r}; allowed: resume=true with hydra.sweeper.storage={before[0]} "
            f"hydra.sweeper.study_name={before[1]}, or another hydra.sweep.dir"
        )


def _recorded_sweeper(job: Path) -> dict[str, Any] | None:
    """The sweeper config a job recorded in its ``.hydra/hydra.yaml`` (None when unreadable)."""
    try:
        data = read_limited(job / HYDRA_OUTPUT_SUBDIR / "hydra.yaml", MAX_SMALL_FILE_BYTES, "hydra.yaml")
        document = safe_yaml(data) if data is not None else None
        sweeper = document["hydra"]["sweeper"]
    except Exception:  # noqa: BLE001  unreadable: nothing recorded
        return None
    return sweeper if isinstance(sweeper, dict) else None


def _stored_trials(storage: str, name: str) -> int | None:
    """How many trials the Optuna study ``name`` holds in ``storage`` (None when it holds no such
    study). A SQLite file that does not exist is not created."""
    import optuna  # optional: optuna (hydra-optuna-sweeper)

    if storage.startswith("sqlite:///") and not os.path.exists(storage[len("sqlite:///"):]):
        return None
    try:
        opened = optuna.storages.get_storage(storage)
        return len(opened.get_all_trials(opened.get_study_id_from_name(name), deepcopy=False))
    except KeyError:
        return None


def _check_trials_numbered(job: DictConfig) -> None:
    """A sweeper that picks its trials while it runs (Optuna) numbers them: ``hydra.sweep.subdir``
    must differ between job numbers, or every trial would write one directory."""
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
    return sorted({text for text in map(str, overrides) if not is_run_control_override(text)})


def _comparable(overrides: list[str]) -> tuple[set[str], str]:
    """What a resume must repeat: the overrides other than run-control settings and ``device``, and
    the device the run would use (``device=auto``, also when not given, is ``cpu`` without CUDA)."""
    kept = set(_shown(overrides))
    devices = [text for text in kept if override_key(text) == "device"]
    device = devices[-1].split("=", 1)[1] if devices else "auto"
    return kept.difference(devices), _resolved_device_name(device)


def _resolved_device_name(name: str) -> str:
    """The device ``name`` resolves to here (``name`` itself when it does not: the run will say why)."""
    from mammoth.engine.device import resolve_device  # lazy: torch, kept off the compose path

    try:
        return str(resolve_device(name))
    except MammothError:
        return name
