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

# Built-in families register themselves on import.
from mammoth.backbones import mlp, resnet, vit, zoo  # noqa: E402,F401  isort: skip

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
