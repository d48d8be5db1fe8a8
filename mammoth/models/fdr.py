"""fdr: Function Distance Regularization (Benjamin et al., "Measuring and regularizing networks in
function space", ICLR 2019), as the original Mammoth's ``fdr``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mammoth.models.base import ReplayModel
from mammoth.models.registry import register_model
from mammoth.models.utils import keep_first

if TYPE_CHECKING:
    from mammoth.datasets.source import DataSource


@register_model("fdr")
class Fdr(ReplayModel):
    """FDR: after a cross-entropy step on the batch, a second step pulls the network's softmax on
    a replay minibatch towards the softmax stored with it (the L2 distance, averaged over the rows).

    The memory is filled at the end of each task, as in the original: its examples are cut to the
    first ``buffer_size // t`` of each earlier task (``t`` the index of the task just trained,
    ``buffer_size`` after the first: the original's count), then the task's first ``buffer_size //
    t`` examples in a shuffled pass (non-augmented, with the logits of their augmented version and
    their task label) are offered to the reservoir. Replay minibatches are augmented. The original's
    ``--alpha`` is required there and never read; this method has none.
    """

    accepts_regularizer = False  # two steps per batch (cross-entropy, then the function distance)
    supports_memory_per_class = False  # buffer_size // tasks per task, as the original
    has_memory = False  # its memory stores logits, no labels: no class means to score

    #: Not checked against one process on several.
    supports_distributed = False

    def __init__(self, net: Any, dataset: Any, buffer_size: int, **kwargs: Any) -> None:
        """The memory's total size is required (the original's ``--buffer_size``; no memory per class)."""
        super().__init__(net, dataset, buffer_size=buffer_size, **kwargs)

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """A cross-entropy step on the batch, then (once the memory holds a task) a function-distance
        step on a replay minibatch; returns the last step's loss."""
        value = self.step(self.loss(self.net(inputs), labels))
        replay = self.replay_batch(inputs.shape[0], inputs.device)
        if replay is not None:
            outputs = self.net(replay.examples)
            distance = torch.norm(outputs.softmax(1) - replay.logits.softmax(1), 2, 1).mean()
            value = self.step(distance)
        return value

    @torch.no_grad()
    def end_task(self, task: int, data: "DataSource") -> None:
        """Cut the memory to ``buffer_size // task`` examples per earlier task and offer as many of this task's."""
        per_task = self.buffer_size // task if task > 0 else self.buffer_size
        if task > 0:
            keep_first(self.buffer, per_task, by="task_labels")
        counter = 0
        for batch in self.context.batches(data):
            if per_task - counter <= 0:
                break
            take = per_task - counter
            outputs = self.net(batch.inputs)
            not_aug = batch.not_aug_inputs[:take]
            self.buffer.add(not_aug, logits=outputs[:take],
                            task_labels=torch.full((len(not_aug),), task, dtype=torch.long, device=not_aug.device))
            counter += self.context.batch_size
