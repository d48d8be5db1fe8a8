"""derpp: DER++, Dark Experience Replay with an extra label-replay term (Buzzega et al., 2020)."""

from __future__ import annotations

from typing import Any, Optional

import torch.nn.functional as F
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.models.base import ReplayModel, check_non_negative
from mammoth.models.registry import register_model


@register_model("derpp")
class DERPP(ReplayModel):
    """DER++: DER's logit matching plus cross-entropy on the labels of a second, independent replay sample.

    loss = CE(net(inputs), labels) + alpha * MSE(net(x1), logits1) + beta * CE(net(x2), labels2);
    the incoming examples are stored with their labels and the logits the network produced.
    """

    supports_distributed = True

    def __init__(
        self,
        net: MammothBackbone,
        dataset: Any,
        buffer_size: Optional[int] = None,
        memory_per_class: Optional[int] = None,
        alpha: float = 0.1,
        beta: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(net, dataset, buffer_size=buffer_size, memory_per_class=memory_per_class, **kwargs)
        self.alpha = check_non_negative("model.alpha", alpha)
        self.beta = check_non_negative("model.beta", beta)

    supports_task_free = True  # its hooks do nothing at task changes (docs/online.md)

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """One step on CE plus the logit and label replay terms; returns the loss value."""
        outputs = self.net(inputs)
        loss = self.loss(outputs, labels)
        logit_replay = self.replay_batch(inputs.shape[0], inputs.device)
        if logit_replay is not None:
            loss = loss + self.alpha * F.mse_loss(self.net(logit_replay.examples), logit_replay.logits)
            label_replay = self.replay_batch(inputs.shape[0], inputs.device)
            loss = loss + self.beta * self.loss(self.net(label_replay.examples), label_replay.labels)
        value = self.step(loss)
        self.buffer.add(not_aug_inputs, labels=labels, logits=outputs.detach())
        return value
