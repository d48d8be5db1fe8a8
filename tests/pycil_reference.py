"""What the wa and podnet fidelity tests share with scripts/reference_pycil_methods.py: the
benchmark, the tiny network as a mammoth backbone, the batches in PyCIL's order and PyCIL's numbers."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

import pytest
import torch
from torch import Tensor, nn

from mammoth.backbones.base import MammothBackbone
from mammoth.datasets.source import DataSource, InMemorySource
from reference_tasks import PairTasks, reference_script

REPO = Path(__file__).resolve().parents[1]
REFERENCE_FILE = Path(__file__).resolve().parent / "models" / "data" / "pycil_reference.json"


@lru_cache(maxsize=1)
def script() -> ModuleType:
    """scripts/reference_pycil_methods.py as a module (its top level needs only torch)."""
    return reference_script('reference_pycil_methods')


@lru_cache(maxsize=1)
def reference() -> dict[str, Any]:
    """PyCIL's numbers (written by the script)."""
    return json.loads(REFERENCE_FILE.read_text())


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one CPU thread for the test (these tiny convolutions only wait on a second one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Config:
    """The dataset config fields the methods read."""

    batch_size = 4
    n_epochs = 2


class ImageDataset(PairTasks):
    """The script's benchmark: 2 class-IL tasks of 2 classes, 8x8 RGB images, no transforms."""

    name = "pycil-reference-images"
    n_classes = 4
    n_tasks = 2
    input_shape = (3, 8, 8)
    config = Config()

    def task_source(self, task: int) -> DataSource:
        """The task's images of :func:`task_images` in the script."""
        return InMemorySource(*script().task_images(task))


class TinyNet(MammothBackbone):
    """The script's tiny network (its weights by the recipe) with a linear classifier over 4 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = script().build_stages()
        script().apply_recipe(self.stages, "stages.")
        self.num_features, self.num_classes = script().WIDTHS[-1], 4
        self.classifier = nn.Linear(self.num_features, 4)


def tensor(values: Any) -> Tensor:
    """Nested lists of the reference file as a float tensor."""
    return torch.tensor(values, dtype=torch.float32)


def train_like_the_script(model: Any, source: DataSource, epochs: int, first_call: int,
                          observe: Callable[[Tensor, Tensor], float]) -> list[float]:
    """``epochs`` epochs of ``observe`` over ``source`` in the order the script's training loaders
    yield it (loader calls ``first_call``, ``first_call + 1``, ...), ``end_epoch`` after each; the losses."""
    losses = []
    for epoch in range(epochs):
        order = script().training_order(len(source), first_call + epoch)
        for start in range(0, len(order), script().BATCH):
            rows = order[start : start + script().BATCH]
            inputs = source.read(rows, "cpu")
            losses.append(observe(inputs, source.labels[rows]))
        model.end_epoch(epoch)
    return losses


def memory_rows(examples: Tensor, labels: Tensor) -> list[list[int]]:
    """The memory as ``[task, row]`` of the script's task images, as the script records PyCIL's."""
    return script().memory_rows(examples.cpu(), labels.cpu())
