"""register_backbone, build_backbone, list_backbones: the backbone registry and its errors."""

from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

from omegaconf import MISSING, DictConfig

from mammoth.backbones.base import MammothBackbone
from mammoth.errors import BackboneError
from mammoth.config.registry import Entry, Registry
from mammoth.config.schema import DATA_FILLED_ARGUMENTS, is_missing

T = TypeVar("T")

#: Arguments whose value the data determines; callers pass them to :func:`build_backbone`.
DATA_ARGUMENTS = DATA_FILLED_ARGUMENTS

BACKBONES = Registry(kind="backbone", group="backbone", error_type=BackboneError, schema_suffix="BackboneConfig")


def register_backbone(name: str) -> Callable[[T], T]:
    """Register a ``MammothBackbone`` subclass, or a function returning one, as ``name``.

    Its arguments are inferred from the signature (the annotation, else the type of the
    default, else ``str``; no default = required) and become the typed config
    ``backbone=name`` with fields ``backbone.<arg>``, closed to other keys. The config's dataclass
    is set on the module that defines the backbone, named after it: ``tiny-cnn`` in
    ``my_backbones`` gives ``my_backbones.TinyCnnBackboneConfig`` (``resnet`` gives
    ``mammoth.backbones.resnet.ResnetBackboneConfig``), for dataclasses that nest or extend it.
    Names are case-insensitive and ``_`` equals ``-``; a duplicate name raises.
    """
    return BACKBONES.register(name)


def list_backbones() -> list[str]:
    """The registered backbone names, sorted."""
    return BACKBONES.names()


def get_backbone_entry(name: str) -> Entry:
    """The registry entry of backbone ``name``; unknown names list the choices and the closest."""
    return BACKBONES.get(name)


def build_backbone(name_or_config: str | Mapping | DictConfig | Any, **values: Any) -> MammothBackbone:
    """Build a registered backbone from its name or from a composed ``backbone`` config node.

    ``values`` fill or override its arguments. The data-determined ones (``num_classes``,
    ``input_shape``) only fill what the config left unset (``???``): a value the user set
    wins, one that contradicts the data raises, and one the backbone does not declare is
    ignored. A config whose ``_target_`` is not a registered backbone is refused.
    """
    entry, configured = BACKBONES.resolve(name_or_config)
    return build_resolved_backbone(entry, configured, values)


def build_resolved_backbone(entry: Entry, configured: Mapping[str, Any], values: Mapping[str, Any],
                            checked: bool = False) -> MammothBackbone:
    """Build the backbone of a resolved registry ``entry`` from its ``configured`` values, with
    ``values`` as in :func:`build_backbone` (a mapping, so no backbone argument can clash with
    ``checked``). ``checked``: the configured names were checked already (a resolved run), so only
    the types are; otherwise unknown and missing ones fail too."""
    arguments = dict(configured)
    for key, value in values.items():
        if key in DATA_ARGUMENTS:
            if entry.argument(key) is not None:
                arguments[key] = _reconcile_data_value(key, arguments.get(key, MISSING), value)
        else:
            arguments[key] = value
    converted = BACKBONES.convert_values(entry, arguments) if checked else BACKBONES.check_values(entry, arguments)
    network = entry.target(**converted)
    if not isinstance(network, MammothBackbone):
        raise BackboneError(
            f"backbone {entry.name!r}: {entry.target_path} returned {type(network).__name__}, "
            "not a MammothBackbone"
        )
    return network


def _reconcile_data_value(key: str, configured: Any, data_value: Any) -> Any:
    if configured is None or is_missing(configured):
        return data_value
    if key == "num_classes" and configured < data_value:
        raise BackboneError(
            f"backbone.num_classes={configured} is fewer than the {data_value} classes of the data; "
            f"leave it unset or set at least {data_value}"
        )
    if key == "input_shape" and tuple(configured) != tuple(data_value):
        raise BackboneError(
            f"backbone.input_shape={list(configured)} does not match the data's input shape {list(data_value)}; "
            "leave it unset to take the data's"
        )
    return configured
