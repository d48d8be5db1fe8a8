"""Continual-learning benchmarks: a registry of :class:`ContinualDataset` subclasses, keyed by name.

Importing this package registers every benchmark but reads no data and imports neither
torchvision, scikit-learn nor PIL; those are imported when a benchmark first loads its files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from mammoth.datasets.base import ContinualDataset, DatasetConfig, TaskData, coerce_config, random_crop_flip
from mammoth.errors import DatasetError, unknown_name_message

__all__ = [
    "ContinualDataset",
    "DatasetConfig",
    "TaskData",
    "build_dataset",
    "get_dataset_class",
    "list_datasets",
    "random_crop_flip",
    "register_dataset",
]

_REGISTRY: dict[str, type[ContinualDataset]] = {}

DatasetClass = TypeVar("DatasetClass", bound=type[ContinualDataset])


def _qualified_name(cls: type) -> str:
    """``module.QualName`` of ``cls``, for error messages."""
    return f"{cls.__module__}.{cls.__qualname__}"


def register_dataset(cls: DatasetClass) -> DatasetClass:
    """Class decorator: register a :class:`ContinualDataset` subclass under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise DatasetError(f"dataset class {_qualified_name(cls)} has name={name!r}; expected a non-empty string")
    if cls.setting not in ("class-il", "domain-il"):
        raise DatasetError(f"dataset {name!r} has setting={cls.setting!r}; allowed: class-il, domain-il")
    for attribute in ("default_n_tasks", "n_classes_per_task"):
        value = getattr(cls, attribute, None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DatasetError(f"dataset {name!r} has {attribute}={value!r}; allowed: an integer >= 1")
    if cls.augmentation not in (None, "crop-flip"):
        raise DatasetError(f"dataset {name!r} has augmentation={cls.augmentation!r}; allowed: None, crop-flip")
    if name in _REGISTRY:
        raise DatasetError(
            f"dataset name {name!r} is already registered by {_qualified_name(_REGISTRY[name])}; "
            f"cannot register {_qualified_name(cls)} under the same name"
        )
    _REGISTRY[name] = cls
    store_default_backbone(name)
    return cls


#: Config group of the backbone each dataset uses when nothing else chose one; conf/config.yaml
#: selects ``backbone: dataset-default/${dataset}`` (a Hydra defaults-list interpolation).
DEFAULT_BACKBONE_GROUP = "backbone/dataset-default"


def store_default_backbone(name: str) -> bool:
    """Store the config of dataset ``name``'s default backbone as ``backbone/dataset-default/NAME``.

    Returns False (and stores nothing) while that backbone is not registered yet; the run then
    builds it from the dataset's ``default_backbone`` (see :func:`store_default_backbones`).
    """
    from hydra.core.config_store import ConfigStore

    from mammoth.backbones import BACKBONES
    from mammoth.registry import canonical_name, open_config_node

    backbone = canonical_name(_REGISTRY[name].default_backbone)
    if backbone not in BACKBONES.names():
        return False
    node = open_config_node(BACKBONES.get(backbone).schema)
    ConfigStore.instance().store(group=DEFAULT_BACKBONE_GROUP, name=name, node=node, provider="mammoth")
    return True


def store_default_backbones() -> None:
    """Store the default-backbone config of every registered dataset (after plugins registered more)."""
    for name in list_datasets():
        store_default_backbone(name)


def list_datasets() -> list[str]:
    """Names of the registered benchmarks, sorted."""
    return sorted(_REGISTRY)


def get_dataset_class(name: str) -> type[ContinualDataset]:
    """The benchmark class registered as ``name``."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise DatasetError(unknown_name_message("dataset", name, list_datasets()))
    return _REGISTRY[name]


def build_dataset(config: DatasetConfig | Mapping[str, Any], seed: int = 0) -> ContinualDataset:
    """Build the benchmark named by ``config.name`` (absent batch_size / n_epochs take its defaults)."""
    name = coerce_config(config).get("name")
    if name is None:
        raise DatasetError(f"dataset.name is missing; allowed: {', '.join(list_datasets())}")
    return get_dataset_class(name)(config, seed=seed)


# Importing the family modules registers their benchmarks.
from mammoth.datasets import cifar, digits, mnist, tinyimagenet  # noqa: E402,F401
