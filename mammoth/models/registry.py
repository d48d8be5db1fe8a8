"""register_model, build_model, list_models: the registry of continual-learning methods."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from omegaconf import DictConfig

from mammoth.errors import ConfigError
from mammoth.config.registry import Registry
from mammoth.config.schema import Argument, signature_arguments

T = TypeVar("T")

#: Arguments the harness passes at build time; they are not config fields.
RUNTIME_ARGUMENTS = ("net", "dataset")



def model_arguments(target: Callable) -> list[Argument]:
    """A method's config fields: its signature's arguments but ``net`` and ``dataset``, and but the
    ``regularizer`` a rehearsal method that refuses one (``accepts_regularizer = False``) inherits."""
    skip = RUNTIME_ARGUMENTS if getattr(target, "accepts_regularizer", True) else (*RUNTIME_ARGUMENTS, "regularizer")
    return signature_arguments(target, skip=skip)


MODELS = Registry(
    kind="model", group="model", error_type=ConfigError, schema_suffix="ModelConfig", runtime_arguments=RUNTIME_ARGUMENTS,
    arguments_of=model_arguments,
)


def register_model(name: str) -> Callable[[T], T]:
    """Register a ``ContinualModel`` subclass as ``model=name``; its ``__init__`` arguments
    (besides ``net`` and ``dataset``) become typed ``model.<arg>`` config fields, closed to other
    keys, in a dataclass set on the method's module (``er`` gives ``mammoth.models.er.ErModelConfig``)."""
    return MODELS.register(name)


def list_models() -> list[str]:
    """The registered model (CL method) names, sorted."""
    return MODELS.names()


def build_model(name_or_config: str | DictConfig, net: Any, dataset: Any, **values: Any) -> Any:
    """Build a registered CL method around ``net`` for ``dataset`` from its name or config."""
    entry, configured = MODELS.resolve(name_or_config)
    checked = MODELS.check_values(entry, {**configured, **values})
    return entry.target(net=net, dataset=dataset, **checked)
