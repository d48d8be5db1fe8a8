"""The examples of one task as whole tensors, read through a dataset's public sources
(``task_source`` / ``test_source``) as the harness reads them batch by batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TaskTensors:
    """``x``: float32 examples on CPU (uint8 images read as ``x / 255``), ``y``: int64 labels."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def task_tensors(dataset, task: int) -> TaskTensors:
    """The training and evaluation examples of ``task`` (its test data, or its validation split
    with ``dataset.validation``), every example read once, in the sources' order."""
    train, evaluation = dataset.task_source(task), dataset.test_source(task)
    return TaskTensors(train.read(torch.arange(len(train)), "cpu"), train.labels,
                       evaluation.read(torch.arange(len(evaluation)), "cpu"), evaluation.labels)


def as_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 images as a source reads them: float32 in [0, 1]."""
    return pixels.float().div(255)
