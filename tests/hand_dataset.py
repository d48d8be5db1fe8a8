"""A dataset stand-in with just what evaluate_tasks reads, for evaluation tests."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from mammoth.engine.context import TrainingContext, build_context


class HandDataset:
    """``n_tasks`` tasks of ``per_task`` classes (a list: each task's, tasks of unequal size);
    images are their index as one pixel, no transform."""

    config = SimpleNamespace(batch_size=512, n_epochs=1)

    def __init__(self, setting: str, n_tasks: int, per_task: int | list[int]) -> None:
        self.setting, self.n_tasks = setting, n_tasks
        self.sizes = list(per_task) if isinstance(per_task, list) else [per_task] * n_tasks
        self.per_task = self.sizes[0]
        self.n_classes = sum(self.sizes) if setting == "class-il" else self.per_task

    def context(self) -> TrainingContext:
        """A CPU context of this dataset (what evaluate_tasks reads)."""
        return build_context(self, "cpu", torch.Generator().manual_seed(0))

    def task_classes(self, task: int) -> range:
        if self.setting == "class-il":
            return range(sum(self.sizes[:task]), sum(self.sizes[: task + 1]))
        return range(self.per_task)

    @staticmethod
    def test_transform(x: torch.Tensor) -> torch.Tensor:
        return x

    @staticmethod
    def train_transform(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x
