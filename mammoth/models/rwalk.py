"""rwalk: Riemannian Walk (Chaudhry et al., "Riemannian Walk for Incremental Learning:
Understanding Forgetting and Intransigence", ECCV 2018), as Avalanche's ``RWalkPlugin``
(avalanche/training/plugins/rwalk.py) computes it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.config.value_checks import check_fraction, check_non_negative, check_positive_int
from mammoth.models.base import ContinualModel
from mammoth.models.registry import register_model
from mammoth.models.utils import evaluation_mode, weighted_distance

if TYPE_CHECKING:
    from mammoth.datasets.source import DataSource

#: The state a checkpoint keeps (the per-task score windows restart at every task).
STATE = ("iterations", "fisher", "task_scores", "anchor", "penalties")


@register_model("rwalk")
class RWalk(ContinualModel):
    """Riemannian Walk: EWC++'s running Fisher plus a path-integral score of each weight, both
    normalised to [0, 1], weight a quadratic pull towards the last task's weights.

    Each step (Avalanche's ``before_training_iteration``): the cross-entropy gradient ``g`` of the
    batch with the network in eval mode, and the running Fisher ``fisher = ewc_alpha * g**2 +
    (1 - ewc_alpha) * fisher`` (``g**2`` at the first step of the run); then the step on
    ``CE + ewc_lambda * sum(penalties * (theta - theta*)**2)`` (the penalty from the second task),
    whose value it returns; then the loss change of the window ``-= g * (theta_after -
    theta_before)``. Every ``delta_t`` steps of the run (counted over all tasks), the window's
    score ``loss_change / (0.5 * fisher * (theta - theta_window)**2 + eps)`` is added to the
    task's score, and a new window starts at the current weights (each task starts one too).
    After a task: ``task_scores`` is this task's score (then the mean of the old and this one),
    the anchor ``theta*`` the current weights, and ``penalties = fisher / max(fisher) +
    relu(task_scores) / max(task_scores)``. Defaults are Avalanche's (``RWalkPlugin``:
    ``ewc_lambda=0.1``, ``ewc_alpha=0.9``, ``delta_t=10``).
    """

    supports_distributed = False  # the per-step gradient pass is its own backward, outside the averaged step
    supports_fp16 = False  # that pass back-propagates the loss unscaled

    def __init__(self, net: MammothBackbone, dataset: Any, ewc_lambda: float = 0.1, ewc_alpha: float = 0.9,
                 delta_t: int = 10, **kwargs: Any) -> None:
        super().__init__(net, dataset, **kwargs)
        self.ewc_lambda = check_non_negative("model.ewc_lambda", ewc_lambda)
        self.ewc_alpha = check_fraction("model.ewc_alpha", ewc_alpha)
        self.delta_t = check_positive_int("model.delta_t", delta_t)
        self.iterations = 0  # steps of the run (Avalanche's clock.train_iterations)
        self.fisher: Optional[Tensor] = None  # EWC++'s running Fisher (iter_importance)
        self.task_scores: Optional[Tensor] = None  # exp_scores
        self.anchor: Optional[Tensor] = None  # exp_params
        self.penalties: Optional[Tensor] = None  # exp_penalties
        self.window_loss: Optional[Tensor] = None  # checkpoint_loss
        self.window_scores: Optional[Tensor] = None  # checkpoint_scores
        self.window_start: Optional[Tensor] = None  # checkpoint_params
        self._grads: Optional[Tensor] = None
        self._before: Optional[Tensor] = None

    def begin_task(self, task: int) -> None:
        """Start the task's score and loss-change windows at the current weights (``before_training``)."""
        super().begin_task(task)
        self.window_start = self.net.get_params()
        self.window_loss = torch.zeros_like(self.window_start)
        self.window_scores = torch.zeros_like(self.window_start)
        self._grads, self._before = torch.empty_like(self.window_start), torch.empty_like(self.window_start)

    def penalty(self) -> Tensor:
        """``sum(penalties * (theta - theta*)**2)`` (0 before the first task ends; not scaled by ``ewc_lambda``)."""
        if self.penalties is None:
            return torch.zeros((), device=self.device)
        return weighted_distance(self.net, self.penalties, self.anchor)

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """The batch's gradient and the running Fisher, one penalised step, the window's loss change."""
        grads = self.criterion_gradient(inputs, labels)
        importance = grads.pow(2)
        self.fisher = importance if self.fisher is None else (
            self.ewc_alpha * importance + (1 - self.ewc_alpha) * self.fisher)
        before = self.net.get_params(out=self._before)
        loss = self.loss(self.net(inputs), labels)
        if self.penalties is not None:
            loss = loss + self.ewc_lambda * self.penalty()
        value = self.step(loss)
        after = self.net.get_params()
        self.window_loss -= grads * (after - before)
        if (self.iterations + 1) % self.delta_t == 0:
            eps = torch.finfo(self.window_loss.dtype).eps
            self.window_scores += self.window_loss / (0.5 * self.fisher * (after - self.window_start).pow(2) + eps)
            self.window_loss.zero_()
            self.window_start = after
        self.iterations += 1
        return value

    def criterion_gradient(self, inputs: Tensor, labels: Tensor) -> Tensor:
        """The gradient of the batch's cross-entropy (no penalty) with the network in eval mode, flat."""
        with evaluation_mode(self.net):
            self.net.zero_grad(set_to_none=True)
            self.loss(self.net(inputs), labels).backward()
            grads = self.net.get_grads(out=self._grads)
        self.net.zero_grad(set_to_none=True)
        return grads

    def end_task(self, task: int, data: DataSource) -> None:
        """Fold the task's score into the running one; anchor; normalise Fisher and scores into the penalties."""
        self.anchor = self.net.get_params()
        scores = self.window_scores
        self.task_scores = scores if self.task_scores is None else 0.5 * (self.task_scores + scores)
        self.penalties = _normalised(self.fisher) + _normalised(F.relu(self.task_scores))
        self.window_scores = torch.zeros_like(scores)

    def extra_state(self) -> dict[str, Any]:
        """The step count, the running Fisher, the task scores, the anchor and the penalties."""
        return {name: getattr(self, name) for name in STATE}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state` (tensors on the backbone's device)."""
        self.iterations = int(state["iterations"])
        for name in STATE[1:]:
            value = state[name]
            setattr(self, name, None if value is None else value.to(self.device))


def _normalised(values: Tensor) -> Tensor:
    """``values / max(values)`` (Avalanche's normalisation into [0, 1]); zeros where the maximum is 0."""
    largest = values.max()
    return values / largest if largest > 0 else torch.zeros_like(values)
