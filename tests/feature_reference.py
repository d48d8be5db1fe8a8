"""What the slca and ranpac fidelity tests share with scripts/reference_feature_methods.py: the
benchmark, the tiny ViT's weights and the original's recorded numbers."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from mammoth.backbones.timm import TimmBackbone
from mammoth.datasets.source import DataSource, InMemorySource
from reference_tasks import PairTasks, reference_script

REPO = Path(__file__).resolve().parents[1]
REFERENCE_FILE = Path(__file__).resolve().parent / "models" / "data" / "feature_methods_reference.json"


@lru_cache(maxsize=1)
def script() -> ModuleType:
    """scripts/reference_feature_methods.py as a module (its top level needs only torch)."""
    return reference_script('reference_feature_methods')


@lru_cache(maxsize=1)
def reference() -> dict[str, Any]:
    """The original's numbers (written by the script)."""
    return json.loads(REFERENCE_FILE.read_text())


class Config:
    """The dataset config fields the methods read."""

    batch_size = 4
    n_epochs = 1


class ImageDataset(PairTasks):
    """The script's benchmark: 2 class-IL tasks of 2 classes, 32x32 RGB images, no transforms."""

    name = "reference-images"
    n_classes = 4
    n_tasks = 2
    input_shape = (3, 32, 32)
    config = Config()

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
