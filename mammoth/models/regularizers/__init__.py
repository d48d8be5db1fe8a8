"""Regularisers (``+model/regularizer=NAME``): terms that compose with any rehearsal method.

The original Mammoth ships one class per combination (``derpp_lider``, ``er_ace_lider``,
``icarl_lider``, ...); here a regulariser is registered once and added to any rehearsal method
(:class:`~mammoth.models.base.ReplayModel` whose ``accepts_regularizer`` is True) by configuration::

    python -m mammoth model=derpp +model/regularizer=lider model.regularizer.alpha_lip_lambda=0.3

Its config is the ``model.regularizer`` node: a typed, closed schema from the regulariser's
signature, like a model's (:mod:`mammoth.config.options` serves the ``model/regularizer`` group).
The method builds it from that node (:func:`build_regularizer`) and calls its hooks
(:class:`Regularizer`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

from mammoth.config.registry import import_modules, Registry
from mammoth.errors import ConfigError
from mammoth.models.regularizers.base import Regularizer

T = TypeVar("T")

#: The registered regularisers: Hydra options of the ``model/regularizer`` group, set under ``model.regularizer``.
REGULARIZERS = Registry(kind="regularizer", group="model/regularizer", error_type=ConfigError,
                        schema_suffix="RegularizerConfig", key="model.regularizer")


def register_regularizer(name: str) -> Callable[[T], T]:
    """Register a :class:`Regularizer` subclass as ``+model/regularizer=name``; its ``__init__``
    arguments become typed ``model.regularizer.<arg>`` fields, closed to other keys."""
    return REGULARIZERS.register(name)


def list_regularizers() -> list[str]:
    """The registered regulariser names, sorted."""
    return REGULARIZERS.names()


def build_regularizer(config: str | Mapping[str, Any]) -> Regularizer:
    """The regulariser of a registered name or of a ``model.regularizer`` config (its ``_target_``
    must be a registered one), its values checked (a bad one: one line naming it)."""
    entry, configured = REGULARIZERS.resolve(config)
    return entry.target(**REGULARIZERS.check_values(entry, configured))


__all__ = ["REGULARIZERS", "Regularizer", "build_regularizer", "list_regularizers", "register_regularizer"]

# Every module of this package (one regulariser a file) registers its regulariser on import.
import_modules(__name__, __path__)
