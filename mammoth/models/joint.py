"""joint and joint-cumulative: training on the data of every task, the upper bound of continual learning.

``joint`` follows the original Mammoth's schedule: no training during tasks 1..T-1 (it only keeps
their data; the evaluation after each of them sees the untrained network), then, at the last
task, one training of ``n_epochs`` over the data of all tasks. ``joint-cumulative`` trains after
every task on all the data seen so far (T trainings in all).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.models.registry import register_model
from mammoth.models.sgd import SGD


@register_model("joint")
class Joint(SGD):
    """Joint training as the original: keeps every task's training data, trains once on all of it at the last task.

    The kept data is part of :meth:`extra_state`, so a resumed run still sees the earlier tasks.
    """

    def __init__(self, net: MammothBackbone, dataset: Any, **kwargs: Any) -> None:
        super().__init__(net, dataset, **kwargs)
        self.seen_data: dict[int, tuple[Tensor, Tensor]] = {}

    def trains_after(self, task: int) -> bool:
        """Whether the harness trains at ``task``: only at the last task of the run."""
        return task == self.dataset.n_tasks - 1

    def training_data(self, task: int, train_x: Tensor, train_y: Tensor) -> tuple[Tensor, Tensor]:
        """Keep ``task``'s data; return every task's data seen so far (in task order) when
        :meth:`trains_after` ``task``, else no data (the harness then trains nothing)."""
        self.seen_data[task] = (train_x, train_y)
        if not self.trains_after(task):
            return train_x[:0], train_y[:0]
        tasks = sorted(self.seen_data)
        return (
            torch.cat([self.seen_data[t][0] for t in tasks]),
            torch.cat([self.seen_data[t][1] for t in tasks]),
        )

    def extra_state(self) -> dict[str, Any]:
        """The kept data of every task seen so far."""
        return {"seen_data": {task: {"x": x, "y": y} for task, (x, y) in self.seen_data.items()}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the kept data."""
        self.seen_data = {int(task): (data["x"], data["y"]) for task, data in state["seen_data"].items()}


@register_model("joint-cumulative")
class JointCumulative(Joint):
    """Cumulative joint training: after every task, ``n_epochs`` over the data of all tasks seen so far."""

    def trains_after(self, task: int) -> bool:
        """Always: every task trains on all the data seen so far."""
        return True
