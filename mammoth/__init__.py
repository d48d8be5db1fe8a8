"""mammoth: Hydra-native continual learning for PyTorch.

Registered backbones become typed Hydra configs (``backbone=name backbone.arg=value``);
``python -m mammoth`` trains and evaluates a continual-learning run.
"""

from mammoth.backbones import MammothBackbone, build_backbone, list_backbones, register_backbone
from mammoth.datasets import ContinualDataset, build_dataset, list_datasets, register_dataset
from mammoth.models import ContinualModel, ReplayModel, build_model, list_models, register_model
from mammoth.errors import BackboneError, ConfigError, DatasetError, MammothError, TrainingError
from mammoth.engine.runner import run

__version__ = "0.1.0"

__all__ = [
    "BackboneError",
    "ConfigError",
    "ContinualDataset",
    "ContinualModel",
    "DatasetError",
    "MammothBackbone",
    "MammothError",
    "ReplayModel",
    "TrainingError",
    "build_backbone",
    "build_dataset",
    "build_model",
    "list_backbones",
    "list_datasets",
    "list_models",
    "register_backbone",
    "register_dataset",
    "register_model",
    "run",
]

from mammoth.plugins import load_plugins as _load_plugins

# Installed ``mammoth.plugins`` entry points register their backbones, models and datasets now,
# so build_backbone("their-net") works in plain Python and ``backbone=their-net`` in a Hydra app
# that opted in (pkg://mammoth.conf); a broken one is a warning here and an error under
# ``python -m mammoth``.
_load_plugins(strict=False)
