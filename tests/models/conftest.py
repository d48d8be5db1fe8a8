"""Fixtures of the CL-method tests: a fake 2-task dataset, a tiny MLP, model and batch factories."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from torch import Tensor

from mammoth.backbones.mlp import MNISTMLP
from mammoth.datasets.source import DataSource, InMemorySource
from mammoth.engine.context import build_context
from mammoth.engine.loop import train_task
from mammoth.models import build_model

_REPLAY_METHODS = ("er", "der", "derpp", "agem", "gem", "icarl", "er_ace", "gdumb", "bic", "mer", "xder", "wa", "podnet")


class FakeConfig:
    """The dataset config fields the methods read."""

    batch_size = 8
    n_epochs = 1


class FakeDataset:
    """The parts of a dataset the methods use: 4 classes in 2 class-IL tasks, a random train
    augmentation (horizontal flips) that tests can tell from none."""

    name = "fake"
    n_classes = 4
    n_tasks = 2
    setting = "class-il"
    config = FakeConfig()

    def task_classes(self, task: int) -> range:
        """Classes ``2*task`` and ``2*task + 1``."""
        return range(2 * task, 2 * task + 2)

    def train_transform(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Flip each image horizontally with probability 1/2 (drawn from ``generator``, else torch's
        global generator), then normalise [0, 1] to [-1, 1]: random augmentation + normalisation."""
        flip = torch.rand(len(x), generator=generator) < 0.5
        return self.test_transform(torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x))

    def test_transform(self, x: Tensor) -> Tensor:
        """Normalisation only: [0, 1] to [-1, 1]."""
        return (x - 0.5) / 0.5

    def task_source(self, task: int) -> DataSource:
        """The training data of ``task``: 16 float examples, those of ``make_batch(task, size=16)``."""
        return InMemorySource(*task_examples(self, task, 16, seed=0))


def task_examples(dataset: Any, task: int, size: int, seed: int) -> tuple[Tensor, Tensor]:
    """``size`` random images in [0, 1] (N, 1, 4, 4) and labels of ``task``'s classes, seeded by task and seed."""
    generator = torch.Generator().manual_seed(1000 * seed + task)
    not_aug = torch.rand(size, 1, 4, 4, generator=generator)
    labels = dataset.task_classes(task).start + torch.randint(0, 2, (size,), generator=generator)
    return not_aug, labels


@pytest.fixture
def dataset() -> FakeDataset:
    """A fresh fake dataset."""
    return FakeDataset()


def _net(seed: int) -> MNISTMLP:
    torch.manual_seed(seed)
    return MNISTMLP(num_classes=4, input_shape=(1, 4, 4), hidden_sizes=(16,))


@pytest.fixture
def make_net() -> Callable[..., MNISTMLP]:
    """``make_net(seed=0)``: a tiny MNISTMLP with seeded initial weights."""
    return lambda seed=0: _net(seed)


@pytest.fixture
def make_model(dataset: FakeDataset) -> Callable[..., Any]:
    """``make_model(name, seed=0, **values)``: a registered method built with ``build_model`` and
    attached to a CPU context whose generator is seeded with ``seed`` (replay methods get
    ``buffer_size=32`` unless given, or ``memory_per_class``)."""

    def make(name: str, seed: int = 0, **values: Any) -> Any:
        if name in _REPLAY_METHODS and "memory_per_class" not in values:
            values.setdefault("buffer_size", 32)
        model = build_model(name, net=_net(seed), dataset=dataset, **values)
        model.attach(build_context(dataset, "cpu", torch.Generator().manual_seed(seed)))
        return model

    return make


@pytest.fixture
def make_begun_model(make_model: Callable[..., Any]) -> Callable[..., Any]:
    """``make_begun_model(name, **values)``: ``make_model``'s model after ``begin_task(0)``, as the
    harness has it when the first batch of task 0 arrives."""

    def make(name: str, **values: Any) -> Any:
        model = make_model(name, **values)
        model.begin_task(0)
        return model

    return make


@pytest.fixture
def make_batch(dataset: FakeDataset) -> Callable[..., tuple[Tensor, Tensor, Tensor]]:
    """``make_batch(task, size=8, seed=0)``: ``(inputs, labels, not_aug_inputs)`` of the task's classes."""

    def make(task: int, size: int = 8, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        not_aug, labels = task_examples(dataset, task, size, seed)
        return dataset.train_transform(not_aug), labels, not_aug

    return make


def _run_task(model: Any, task: int) -> float:
    return train_task(model, model.context, task, model.context.task_data(task))


@pytest.fixture
def run_task() -> Callable[..., float]:
    """``run_task(model, task)``: one task of ``model.context``'s data through the harness's
    ``train_task`` (begin_task, training_data, fit with observe and end_epoch, end_task)."""
    return _run_task
