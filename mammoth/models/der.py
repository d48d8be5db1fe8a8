"""der: Dark Experience Replay (Buzzega et al., 2020)."""

from __future__ import annotations

from typing import Any, Optional

import torch.nn.functional as F
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.models.base import ReplayModel, check_non_negative
from mammoth.models.registry import register_model


@register_model("der")
class DER(ReplayModel):
    """Dark Experience Replay: replayed examples are pulled towards the logits they had when stored.

    loss = CE(net(inputs), labels) + alpha * MSE(net(replay examples), replay logits); the
    incoming examples are stored with the logits the network produced for them.
    """

    supports_distributed = True
    has_memory = False  # its memory stores logits, no labels (as the original's): no class means to score

    def __init__(
        self,
        net: MammothBackbone,
        dataset: Any,
        buffer_size: Optional[int] = None,
        memory_per_class: Optional[int] = None,
        alpha: float = 0.3,
        **kwargs: Any,
    ) -> None:
        super().__init__(net, dataset, buffer_size=buffer_size, memory_per_class=memory_per_class, **kwargs)
        self.alpha = check_non_negative("model.alpha", alpha)

    supports_task_free = True  # its hooks do nothing at task changes (docs/online.md)

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """One step on CE plus the logit-matching replay term; returns the loss value."""
        outputs = self.net(inputs)
        loss = self.loss(outputs, labels)
        replay = self.replay_batch(inputs.shape[0], inputs.device)
        if replay is not None:
            loss = loss + self.alpha * F.mse_loss(self.net(replay.examples), replay.logits)
        value = self.step(loss)
        self.buffer.add(not_aug_inputs, logits=outputs.detach())
        return value
