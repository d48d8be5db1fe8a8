"""mammoth: Hydra-native continual learning for PyTorch.

Registered backbones become typed Hydra configs (``backbone=name backbone.arg=value``);
``python -m mammoth`` trains and evaluates a continual-learning run.
"""

from mammoth.backbones import MammothBackbone, build_backbone, list_backbones, register_backbone
from mammoth.errors import BackboneError, ConfigError, DatasetError, MammothError, TrainingError
from mammoth import config as _config  # noqa: F401  stores the run and dataset schemas
from mammoth import models as _models  # noqa: F401  registers the CL methods
from mammoth.runner import run

__version__ = "0.1.0"

__all__ = [
    "BackboneError",
    "ConfigError",
    "DatasetError",
    "MammothBackbone",
    "MammothError",
    "TrainingError",
    "build_backbone",
    "list_backbones",
    "register_backbone",
    "run",
]
