"""Checks of a config Hydra composed: known settings, registered options, their arguments, callbacks.

The run checks the config it is given (so user config dirs, ``-cn``, experiments and plugins
are all seen) before anything trains. The group schemas are closed (:func:`mammoth.registry.schema_node`),
so an unknown key reaches these checks only when added on purpose (``++model.buffer_size=200`` in a
sweep over methods whose arguments differ); they refuse it with the option's fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mammoth.errors import ConfigError, unknown_name_message


def is_set(cfg: DictConfig, key: str) -> bool:
    """Whether ``cfg`` has ``key`` set to something other than ``???`` or null."""
    return key in cfg and not OmegaConf.is_missing(cfg, key) and cfg[key] is not None


def check_settings(cfg: DictConfig) -> None:
    """Every top-level key is a run setting (``+seeed=3`` is refused with the closest one)."""
    from mammoth.config import RunConfig

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


def check_callbacks(hydra_cfg: Any) -> None:
    """Each ``hydra.callbacks`` entry names a Hydra ``Callback`` class, so Hydra instantiating it
    cannot call an arbitrary function (``_target_: torch.load``)."""
    from hydra.experimental.callback import Callback

    callbacks = hydra_cfg.get("callbacks") if hydra_cfg is not None else None
    for name, node in (callbacks or {}).items():
        target = node.get("_target_") if isinstance(node, DictConfig) else None
        if not _names_class_of(target, (Callback,)):
            raise ConfigError(
                f"hydra.callbacks.{name}: _target_ {target!r} is not a Hydra Callback class; "
                "allowed: a subclass of hydra.experimental.callback.Callback"
            )


#: What a logging config may name (Python's logging.config.dictConfig calls what it names).
_LOGGING_FACTORY_KEYS = {"class": "a logging.Handler", "()": "a logging Formatter, Filter or Handler"}


def check_logging(hydra_cfg: Any) -> None:
    """Every ``class`` / ``()`` in ``hydra.job_logging`` and ``hydra.hydra_logging`` names a logging
    Handler, Formatter or Filter class, so the logging config cannot call an arbitrary function."""
    import logging

    allowed = (logging.Handler, logging.Formatter, logging.Filter)
    for section in ("job_logging", "hydra_logging"):
        node = hydra_cfg.get(section) if hydra_cfg is not None else None
        if isinstance(node, DictConfig):
            container = OmegaConf.to_container(node, resolve=False)
            for path, target in _factories(container, f"hydra.{section}"):
                if not _names_class_of(target, allowed):
                    raise ConfigError(
                        f"{path}: {target!r} is not a logging Handler, Formatter or Filter class; "
                        "allowed: such a class (e.g. logging.StreamHandler)"
                    )


def _factories(node: Any, path: str) -> list[tuple[str, Any]]:
    """(path, value) of every ``class`` or ``()`` key in a nested logging config."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _LOGGING_FACTORY_KEYS:
                found.append((f"{path}.{key}", value))
            else:
                found.extend(_factories(value, f"{path}.{key}"))
    return found


def _names_class_of(target: Any, bases: tuple[type, ...]) -> bool:
    """Whether the dotted path ``target`` names a subclass of ``bases`` (found as Hydra finds a
    ``_target_``, without calling anything)."""
    from hydra._internal.utils import _locate

    try:
        found = _locate(target) if isinstance(target, str) else None
    except Exception:  # not importable
        return False
    return isinstance(found, type) and issubclass(found, bases)


def validate_run_config(cfg: DictConfig) -> None:
    """All checks of a composed mammoth config; raises a MammothError naming the first bad value."""
    check_settings(cfg)
    check_dataset(cfg)
    check_group_arguments(cfg)
