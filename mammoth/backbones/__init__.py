"""Backbones: the networks (``self.net`` of a model), registered by name as Hydra configs."""

from mammoth.backbones.base import RETURNT_VALUES, MammothBackbone
from mammoth.backbones.registry import (
    BACKBONES,
    DATA_ARGUMENTS,
    build_backbone,
    get_backbone_entry,
    list_backbones,
    register_backbone,
)
from mammoth.config.registry import import_modules

__all__ = [
    "BACKBONES",
    "DATA_ARGUMENTS",
    "RETURNT_VALUES",
    "MammothBackbone",
    "build_backbone",
    "get_backbone_entry",
    "list_backbones",
    "register_backbone",
]

# Every module of this package registers its built-in backbones on import.
import_modules(__name__, __path__)
