"""What the slca and ranpac fidelity tests share with scripts/reference_feature_methods.py: the
benchmark, the tiny ViT's weights and the original's recorded numbers."""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from mammoth.backbones.timm import TimmBackbone
from mammoth.datasets.source import DataSource, InMemorySource

REPO = Path(__file__).resolve().parents[1]
REFERENCE_FILE = Path(__file__).resolve().parent / "models" / "data" / "feature_methods_reference.json"


@lru_cache(maxsize=1)
def script() -> ModuleType:
    """scripts/reference_feature_methods.py as a module (its top level needs only torch)."""
    spec = importlib.util.spec_from_file_location("reference_feature_methods", REPO / "scripts" / "reference_feature_methods.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@lru_cache(maxsize=1)
def reference() -> dict[str, Any]:
    """The original's numbers (written by the script)."""
    return json.loads(REFERENCE_FILE.read_text())


class Config:
    """The dataset config fields the methods read."""

    batch_size = 4
    n_epochs = 1


class ImageDataset:
    """The script's benchmark: 2 class-IL tasks of 2 classes, 32x32 RGB images, no transforms."""

    name = "reference-images"
    n_classes = 4
    n_tasks = 2
    setting = "class-il"
    input_shape = (3, 32, 32)
    config = Config()

    def task_classes(self, task: int) -> range:
        """Classes ``2*task`` and ``2*task + 1``."""
        return range(2 * task, 2 * task + 2)

    def train_transform(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """No augmentation (the script feeds raw images)."""
        return x

    def test_transform(self, x: Tensor) -> Tensor:
        """No normalisation."""
        return x

    def task_source(self, task: int) -> DataSource:
        """The task's images of :func:`task_images` in the script."""
        return InMemorySource(*script().task_images(task))


def tiny_vit(kind: str) -> TimmBackbone:
    """``backbone=timm`` with the script's tiny ViT for ``kind`` (``slca`` or ``ranpac``), weights by its recipe."""
    name, arguments = script().SLCA_VIT if kind == "slca" else script().RANPAC_VIT
    net = TimmBackbone(num_classes=4, input_shape=(3, 32, 32), name=name, model_args=dict(arguments))
    script().apply_recipe(net.trunk)
    return net


def tensor(values: Any) -> Tensor:
    """Nested lists of the reference file as a float tensor."""
    return torch.tensor(values, dtype=torch.float32)
