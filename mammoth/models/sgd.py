"""sgd: plain fine-tuning on each task in turn, the lower bound of continual learning."""

from __future__ import annotations

from torch import Tensor

from mammoth.models.base import ContinualModel
from mammoth.models.registry import register_model


@register_model("sgd")
class SGD(ContinualModel):
    """Fine-tuning: one cross-entropy step per batch of the current task, nothing against forgetting."""

    supports_distributed = True

    supports_task_free = True  # its hooks do nothing at task changes (docs/online.md)

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """One cross-entropy step on ``inputs``; returns the loss value."""
        return self.step(self.loss(self.net(inputs), labels))
