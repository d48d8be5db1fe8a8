"""Continual-learning benchmarks: :class:`ContinualDataset` subclasses registered by name as typed configs.

Importing this package registers every benchmark but reads no data and imports neither
torchvision, scikit-learn nor PIL; those are imported when a benchmark first loads its files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from mammoth.datasets.base import AUGMENTATIONS, ContinualDataset, DatasetConfig, random_crop_flip
from mammoth.errors import DatasetError, unknown_name_message
from mammoth.config.options import DEFAULT_BACKBONE_GROUP, default_backbone_option  # noqa: F401  (public here too)
from mammoth.config.registry import Registry, canonical_name, import_modules
from mammoth.config.schema import Argument, is_missing, signature_arguments

__all__ = [
    "DATASETS",
    "ContinualDataset",
    "DatasetConfig",
    "build_dataset",
    "get_dataset_class",
    "list_datasets",
    "random_crop_flip",
    "register_dataset",
]

DatasetClass = TypeVar("DatasetClass", bound=type[ContinualDataset])


def dataset_arguments(cls: type[ContinualDataset]) -> list[Argument]:
    """The config fields of a benchmark: those of :class:`DatasetConfig`, with the benchmark's
    own name, batch size and number of epochs as defaults."""
    defaults = {"name": cls.name, "batch_size": cls.default_batch_size, "n_epochs": cls.default_n_epochs}
    return [dataclasses.replace(argument, default=defaults.get(argument.name, argument.default))
            for argument in signature_arguments(DatasetConfig)]


#: The registered benchmarks: ``dataset=NAME`` selects one, ``dataset.FIELD=...`` sets its typed fields.
DATASETS = Registry(
    kind="dataset", group="dataset", error_type=DatasetError, schema_suffix="DatasetConfig", arguments_of=dataset_arguments
)


def _qualified_name(cls: type) -> str:
    """``module.QualName`` of ``cls``, for error messages."""
    return f"{cls.__module__}.{cls.__qualname__}"


def register_dataset(name_or_class: str | DatasetClass) -> Any:
    """Register a :class:`ContinualDataset` subclass as ``dataset=NAME``: ``@register_dataset("name")``,
    or ``@register_dataset`` for a class whose ``name`` attribute says it.

    Like backbones and models, it becomes a typed config (``dataset.root``, ``dataset.batch_size``,
    ``dataset.n_epochs``, ... with the benchmark's defaults), closed to other keys, whose dataclass is set on the benchmark's module (``seq-digits`` gives
    ``mammoth.datasets.digits.SeqDigitsDatasetConfig``); names are case-insensitive, ``_`` equals
    ``-``, and a duplicate raises.
    """
    if isinstance(name_or_class, str):
        return lambda cls: _register(cls, name_or_class)
    return _register(name_or_class, getattr(name_or_class, "name", None))


def _register(cls: DatasetClass, name: Any) -> DatasetClass:
    if not isinstance(name, str) or not name:
        raise DatasetError(f"dataset class {_qualified_name(cls)} has name={name!r}; expected a non-empty string")
    if not (isinstance(cls, type) and issubclass(cls, ContinualDataset)):
        raise DatasetError(f"cannot register {cls!r} as dataset {name!r}: not a ContinualDataset subclass")
    if cls.setting not in ("class-il", "domain-il"):
        raise DatasetError(f"dataset {name!r} has setting={cls.setting!r}; allowed: class-il, domain-il")
    for attribute in ("default_n_tasks", "n_classes_per_task"):
        value = getattr(cls, attribute, None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DatasetError(f"dataset {name!r} has {attribute}={value!r}; allowed: an integer >= 1")
    if cls.augmentation not in AUGMENTATIONS:
        raise DatasetError(f"dataset {name!r} has augmentation={cls.augmentation!r}; "
                           f"allowed: {', '.join(map(str, AUGMENTATIONS))}")
    cls.name = canonical_name(name)
    DATASETS.register(cls.name)(cls)
    return cls


def list_datasets() -> list[str]:
    """Names of the registered benchmarks, sorted."""
    return DATASETS.names()


def get_dataset_class(name: str) -> type[ContinualDataset]:
    """The benchmark class registered as ``name``; unknown names list the choices and the closest."""
    if not isinstance(name, str):
        raise DatasetError(unknown_name_message("dataset", name, list_datasets()))
    return DATASETS.get(name).target


def build_dataset(config: str | DatasetConfig | Mapping[str, Any], seed: int = 0) -> ContinualDataset:
    """Build a registered benchmark from its name, its composed config (``_target_`` a registered
    benchmark; one that names anything else is refused) or a mapping or :class:`DatasetConfig`
    with its ``name``. Fields left out (or ``???``) take the benchmark's defaults; the others are
    checked against its typed fields, as in a composed config."""
    values = DATASETS.configured_values({"name": config} if isinstance(config, str) else config)
    if "_target_" in values:
        entry, values = DATASETS.resolve(values)
    elif values.get("name") is None:
        raise DatasetError(f"dataset.name is missing; allowed: {', '.join(list_datasets())}")
    else:
        entry = DATASETS.get(values["name"])
        values["name"] = entry.name  # names are case-insensitive, ``_`` equals ``-``
    present = {key: value for key, value in values.items() if not is_missing(value)}
    return entry.target(DATASETS.check_values(entry, present), seed=seed)


# Every module of this package registers its benchmarks on import.
import_modules(__name__, __path__)
