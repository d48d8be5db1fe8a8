"""er: Experience Replay (Chaudhry et al., 2019; Riemer et al., 2019)."""

from __future__ import annotations

import torch
from torch import Tensor

from mammoth.models.base import ReplayModel
from mammoth.models.registry import register_model


@register_model("er")
class ER(ReplayModel):
    """Experience Replay: each batch is joined by a replay minibatch from a reservoir buffer.

    One cross-entropy loss on the concatenation; then the incoming (non-augmented) examples and
    their labels are offered to the buffer.
    """

    supports_distributed = True

    supports_task_free = True  # its hooks do nothing at task changes (docs/online.md)

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """One step on the batch plus a replay minibatch; returns the loss value."""
        all_inputs, all_labels = inputs, labels
        replay = self.replay_batch(inputs.shape[0], inputs.device)
        if replay is not None:
            all_inputs = torch.cat([inputs, replay.examples])
            all_labels = torch.cat([labels, replay.labels])
        value = self.step(self.loss(self.net(all_inputs), all_labels))
        self.buffer.add(not_aug_inputs, labels=labels)
        return value
