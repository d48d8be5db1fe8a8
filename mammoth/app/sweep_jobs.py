"""The config of every job a sweep will run, composed before the sweep starts, so that each one
passes the safety gate (:mod:`mammoth.app.safety`) before Hydra writes or instantiates anything.

Hydra's basic sweeper runs the cartesian product of its sweeps: every job is composed here as
Hydra's launchers compose it (``ConfigLoader.load_sweep_config``), with its job number. Other
sweepers (Optuna) choose their trials while they run: every value a discrete search dimension can
take is composed once (the others at their first value), and a search over Hydra's own settings is
refused, since a trial's Hydra settings are applied before any check could run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict

from mammoth.config.hydra_private import basic_sweep_jobs, BASIC_SWEEPER_TARGET
from mammoth.errors import ConfigError


@dataclass(frozen=True)
class SweepJobs:
    """The job configs of a sweep; ``exact``: they are the jobs that will run, numbered as they
    will be (the basic sweeper), rather than one config per searched value."""

    configs: list[DictConfig]
    exact: bool


def sweep_job_configs(hydra: Any, sweep_config: DictConfig) -> SweepJobs:
    """Every job config of the sweep that ``sweep_config`` (composed in multirun mode) starts."""
    params = sweep_config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(sweep_config.hydra.overrides.task)
    parsed = OverridesParser.create(config_loader=hydra.config_loader).parse_overrides(arguments)
    if sweep_config.hydra.sweeper.get("_target_") == BASIC_SWEEPER_TARGET:
        jobs = _basic_sweep_jobs(parsed)
        return SweepJobs([_job_config(hydra, sweep_config, job, number) for number, job in enumerate(jobs)], exact=True)
    for key in params:
        if str(key).lstrip("+~") == "hydra" or str(key).lstrip("+~").startswith(("hydra.", "hydra/")):
            raise ConfigError(
                f"hydra.sweeper.params.{key}: a search may not change Hydra's own settings per trial; "
                "allowed: backbone., model., dataset. and run settings"
            )
    return SweepJobs([_job_config(hydra, sweep_config, job, 0) for job in _alternatives(parsed)], exact=False)


def _basic_sweep_jobs(parsed: list[Any]) -> list[list[str]]:
    """The overrides of each job Hydra's basic sweeper runs; a sweep it cannot run (``interval()``,
    also inside ``tag()``) is refused with Hydra's own words, naming the override."""
    try:
        return basic_sweep_jobs(parsed)
    except HydraException as error:
        override = next((item for item in parsed if item.is_sweep_override() and not item.is_discrete_sweep()), None)
        if override is None:
            raise
        raise ConfigError(
            f"{override.input_line}: {error}; allowed: a list, range(), choice() or glob() with the basic "
            "sweeper, or interval() in a search by another sweeper (hydra/sweeper=optuna)"
        ) from None


def _alternatives(parsed: list[Any]) -> list[list[str]]:
    """One job per value of each discrete sweep, the other sweeps at their first value; sweeps over
    intervals (numbers) keep the config's value."""
    fixed: list[str] = []
    choices: list[tuple[int, list[str]]] = []
    for override in parsed:
        key = override.get_key_element()
        if not override.is_sweep_override():
            fixed.append(f"{key}={override.get_value_element_as_str()}")
        elif override.is_discrete_sweep():
            values = [f"{key}={value}" for value in override.sweep_string_iterator()]
            choices.append((len(fixed), values))
            fixed.append(values[0])
    jobs = [fixed]
    for index, values in choices:
        for value in values[1:]:
            jobs.append([*fixed[:index], value, *fixed[index + 1:]])
    return jobs


def _job_config(hydra: Any, sweep_config: DictConfig, overrides: list[str], number: int) -> DictConfig:
    """The job's config as Hydra's launchers compose it, with its job number."""
    return number_job(hydra.config_loader.load_sweep_config(sweep_config, list(overrides)), number)


def number_job(job: DictConfig, number: int) -> DictConfig:
    """``job`` with the number and id Hydra's launchers give the job at ``number``."""
    with open_dict(job):
        job.hydra.job.num = number
        job.hydra.job.id = f"job_id_for_{number}"
    return job


def job_directory(job: DictConfig) -> str | None:
    """``hydra.sweep.dir/hydra.sweep.subdir`` of a job config, resolved; None when it does not resolve."""
    try:
        return f"{OmegaConf.select(job, 'hydra.sweep.dir', throw_on_missing=True)}/" \
               f"{OmegaConf.select(job, 'hydra.sweep.subdir', throw_on_missing=True)}"
    except Exception:  # noqa: BLE001  a custom resolver that needs the running job
        return None
