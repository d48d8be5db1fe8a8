"""joint: trains every task on the data of all tasks seen so far, the upper bound of continual learning."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.models.registry import register_model
from mammoth.models.sgd import SGD


@register_model("joint")
class Joint(SGD):
    """Joint training: keeps the training data of every task and, for each task, trains on all of it.

    The kept data is part of :meth:`extra_state`, so a resumed run still sees the earlier tasks.
    """

    def __init__(self, net: MammothBackbone, dataset: Any, **kwargs: Any) -> None:
        super().__init__(net, dataset, **kwargs)
        self.seen_data: dict[int, tuple[Tensor, Tensor]] = {}

    def training_data(self, task: int, train_x: Tensor, train_y: Tensor) -> tuple[Tensor, Tensor]:
        """Keep ``task``'s data and return the concatenation of every task's data seen so far, in task order."""
        self.seen_data[task] = (train_x, train_y)
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
