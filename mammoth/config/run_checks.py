"""Checks of a config Hydra composed: known settings, registered options, their arguments, callbacks.

The run checks the config it is given (so user config dirs, ``-cn``, experiments and plugins
are all seen) before anything trains. The group schemas are closed (:func:`mammoth.config.registry.schema_node`),
so an unknown key reaches these checks only when added on purpose (``++model.buffer_size=200`` in a
sweep over methods whose arguments differ); they refuse it with the option's fields.
"""

from __future__ import annotations

import dataclasses

from omegaconf import DictConfig, OmegaConf

from mammoth.errors import ConfigError, unknown_name_message


def is_set(cfg: DictConfig, key: str) -> bool:
    """Whether ``cfg`` has ``key`` set to something other than ``???`` or null."""
    return key in cfg and not OmegaConf.is_missing(cfg, key) and cfg[key] is not None


def check_settings(cfg: DictConfig) -> None:
    """Every top-level key is a run setting (``+seeed=3`` is refused with the closest one)."""
    from mammoth.config.run_settings import RunConfig

    allowed = [field.name for field in dataclasses.fields(RunConfig)]
    for key in cfg:
        if key != "hydra" and key not in allowed:
            raise ConfigError(unknown_setting_message(key, allowed))


def unknown_setting_message(key: str, allowed: list[str]) -> str:
    """``unknown setting 'seeed'; allowed: ... (did you mean 'seed'?)`` and where arguments go."""
    return (f"{unknown_name_message('setting', key, allowed)}; "
            "a backbone, model or dataset argument goes under backbone., model. or dataset.")


def check_group_arguments(cfg: DictConfig) -> None:
    """The ``backbone`` and ``model`` configs name registered options, only their arguments, and
    a value for every required one (all missing ones named at once; the data fills a backbone's
    ``num_classes`` and ``input_shape``)."""
    from mammoth.backbones import BACKBONES
    from mammoth.models import MODELS

    from mammoth.backbones.registry import DATA_ARGUMENTS

    for registry, filled in ((BACKBONES, DATA_ARGUMENTS), (MODELS, ())):
        if is_set(cfg, registry.group):
            node = cfg[registry.group]
            entry, values = registry.resolve(node)
            registry.check_known_arguments(entry, values)
            registry.check_required(entry, values, skip=filled)


def check_dataset(cfg: DictConfig) -> None:
    """The ``dataset`` config names a registered benchmark (by its ``_target_``, or by ``name``
    in a config without one) and has only dataset settings."""
    from mammoth.datasets import DATASETS, DatasetConfig, get_dataset_class

    if not is_set(cfg, "dataset"):
        raise ConfigError("no dataset selected; choose one with dataset=NAME")
    if "_target_" in cfg.dataset:
        entry, values = DATASETS.resolve(cfg.dataset)
        DATASETS.check_known_arguments(entry, values)
        DATASETS.check_required(entry, values)
        return
    if not is_set(cfg.dataset, "name"):
        raise ConfigError("dataset.name is missing; a dataset config needs the name of a registered benchmark")
    get_dataset_class(cfg.dataset.name)
    allowed = [field.name for field in dataclasses.fields(DatasetConfig)]
    for key in cfg.dataset:
        if key not in allowed:
            raise ConfigError(
                f"unknown dataset setting {key!r} (dataset.{key}); allowed: {', '.join(allowed)}"
            )


def validate_run_config(cfg: DictConfig) -> None:
    """All checks of a composed mammoth config; raises a MammothError naming the first bad value."""
    check_settings(cfg)
    check_dataset(cfg)
    check_group_arguments(cfg)
