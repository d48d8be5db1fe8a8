"""mer: Meta-Experience Replay (Riemer et al., "Learning to Learn without Forgetting by Maximizing
Transfer and Minimizing Interference", ICLR 2019; Algorithm 6)."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.models.base import ReplayModel
from mammoth.models.registry import register_model
from mammoth.config.value_checks import check_non_negative, check_positive_int


def reptile(start: Tensor, current: Tensor, rate: float) -> Tensor:
    """Reptile's interpolation, in place in ``current``: ``start + rate * (current - start)``."""
    return current.sub_(start).mul_(rate).add_(start)


@register_model("mer")
class Mer(ReplayModel):
    """MER: Reptile meta-updates over steps that each mix one incoming example with a replay minibatch.

    MER works on one example at a time (the original forces ``batch_size=1``): each example of
    the incoming batch, in order, runs ``batch_num`` within-batch steps, each an SGD step on
    the example joined with a replay minibatch followed by ``theta = theta_0 + beta * (theta -
    theta_0)``; the example is then offered to the buffer and the across-batch update
    ``theta = theta_A + gamma * (theta - theta_A)`` applies. Returns the loss of the last step.
    Uses ``get_params(out=)`` / ``set_params`` with reused buffers.

    Each step's replay minibatch has ``minibatch_size`` examples (null: the incoming batch's
    size). The original Mammoth since December 2023 overwrites ``--minibatch_size`` with
    ``--batch_size`` before forcing ``batch_size=1``, so ``--batch_size B`` replays ``B`` examples
    per step (1 by default, whatever ``--minibatch_size`` says); ``dataset.batch_size=B`` with
    ``minibatch_size`` null is that run. An explicit ``minibatch_size`` replays that many, as the
    original did when its published tables were made.
    """

    accepts_regularizer = False  # several steps per example inside Reptile's updates: a regulariser's term has no one step
    supports_task_free = True  # an online method: no hook does work at task changes (docs/online.md)

    def __init__(
        self,
        net: MammothBackbone,
        dataset: Any,
        buffer_size: Optional[int] = None,
        memory_per_class: Optional[int] = None,
        *,
        beta: float,
        gamma: float,
        batch_num: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(net, dataset, buffer_size=buffer_size, memory_per_class=memory_per_class, **kwargs)
        self.beta = check_non_negative("model.beta", beta)
        self.gamma = check_non_negative("model.gamma", gamma)
        self.batch_num = check_positive_int("model.batch_num", batch_num)
        self._across: Optional[Tensor] = None
        self._within: Optional[Tensor] = None
        self._current: Optional[Tensor] = None

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """MER over the batch's examples one at a time; returns the last step's loss."""
        loss = 0.0
        for i in range(inputs.shape[0]):
            loss = self.observe_one(inputs[i : i + 1], labels[i : i + 1], not_aug_inputs[i : i + 1], inputs.shape[0])
        return loss

    def observe_one(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor, batch_size: int) -> float:
        """MER's ``batch_num`` within-batch steps and the across-batch update for one example."""
        self._across = self.net.get_params(out=self._across)
        loss = 0.0
        for _ in range(self.batch_num):
            self._within = self.net.get_params(out=self._within)
            batch_inputs, batch_labels = inputs, labels
            replay = self.replay_batch(batch_size, inputs.device)
            if replay is not None:
                batch_inputs = torch.cat([replay.examples, inputs])
                batch_labels = torch.cat([replay.labels, labels])
            loss = self.step(self.loss(self.net(batch_inputs), batch_labels))
            self._current = self.net.get_params(out=self._current)
            self.net.set_params(reptile(self._within, self._current, self.beta))
        self.buffer.add(not_aug_inputs, labels=labels)
        self._current = self.net.get_params(out=self._current)
        self.net.set_params(reptile(self._across, self._current, self.gamma))
        return loss
