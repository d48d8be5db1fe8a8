"""si: Synaptic Intelligence (Zenke, Poole and Ganguli, "Continual Learning Through Synaptic
Intelligence", ICML 2017)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import Tensor, nn

from mammoth.backbones.base import MammothBackbone
from mammoth.models.base import ContinualModel
from mammoth.models.registry import register_model
from mammoth.config.value_checks import check_non_negative, check_positive

if TYPE_CHECKING:
    from mammoth.datasets.source import DataSource


@register_model("si")
class SI(ContinualModel):
    """Synaptic Intelligence: a quadratic pull towards the last task's weights, weighted by each
    weight's contribution to the loss decrease along the training path.

    Each step accumulates ``small_omega += -g * delta`` (``g`` the cross-entropy gradient before
    the step, ``delta`` the change of the weights the step made); the step itself follows the
    cross-entropy gradient plus ``2 * c * big_omega * (theta - theta*)``, with every gradient
    value clipped to [-1, 1]. At the end of a task, ``big_omega += small_omega / ((theta -
    theta*)**2 + xi)``, ``theta*`` becomes the current weights and ``small_omega`` restarts at 0.
    Uses ``get_params`` / ``get_grads`` / ``set_grads`` every step, into reused ``out=`` buffers.
    """

    supports_distributed = True
    supports_fp16 = False  # calls backward and steps its optimizer itself (no gradient scaling)

    def __init__(self, net: MammothBackbone, dataset: Any, c: float, xi: float, **kwargs: Any) -> None:
        super().__init__(net, dataset, **kwargs)
        self.c = check_non_negative("model.c", c)
        self.xi = check_positive("model.xi", xi)
        self.checkpoint: Optional[Tensor] = None  # theta*: the weights at the start of the task
        self.big_omega: Optional[Tensor] = None
        self.small_omega: Optional[Tensor] = None
        self._before: Optional[Tensor] = None
        self._grads: Optional[Tensor] = None
        self._penalty: Optional[Tensor] = None

    def begin_task(self, task: int) -> None:
        """The first task anchors at the initial weights; allocate the per-step buffers."""
        super().begin_task(task)
        self._allocate()

    def _allocate(self) -> None:
        if self.checkpoint is None:
            self.checkpoint = self.net.get_params()
        if self.small_omega is None:
            self.small_omega = torch.zeros_like(self.checkpoint)
        if self._before is None:
            self._before, self._grads = torch.empty_like(self.checkpoint), torch.empty_like(self.checkpoint)
            self._penalty = torch.empty_like(self.checkpoint)

    def penalty(self) -> Tensor:
        """``sum(big_omega * (theta - theta*)**2)`` (0 before the first task ends; not scaled by ``c``)."""
        if self.big_omega is None:
            return torch.zeros((), device=self.device)
        return (self.big_omega * (self.net.get_params() - self.checkpoint) ** 2).sum()

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """One clipped step on the cross-entropy plus the penalty's gradient; accumulates ``-g * delta``."""
        if self._before is None:
            self._allocate()
        before = self.net.get_params(out=self._before)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.net(inputs), labels)
        self.backward(loss)
        grads = self.net.get_grads(out=self._grads)
        if self.big_omega is not None:
            penalty = self.net.get_params(out=self._penalty).sub_(self.checkpoint).mul_(self.big_omega)
            self.net.set_grads(penalty.mul_(2 * self.c).add_(grads))
        nn.utils.clip_grad_value_(self.net.parameters(), 1)
        self.optimizer.step()
        # small_omega += g * (before - after) = -g * delta; ``before`` becomes ``before - after``.
        after = self.net.get_params(out=self._penalty)
        self.small_omega.addcmul_(grads, before.sub_(after))
        return loss.item()

    def end_task(self, task: int, data: DataSource) -> None:
        """Fold the path integral into ``big_omega``; anchor at the current weights; reset ``small_omega``."""
        params = self.net.get_params()
        importance = self.small_omega / ((params - self.checkpoint) ** 2 + self.xi)
        self.big_omega = importance if self.big_omega is None else self.big_omega.add_(importance)
        self.checkpoint = params
        self.small_omega.zero_()

    def extra_state(self) -> dict[str, Any]:
        """The anchor, ``big_omega`` and ``small_omega``."""
        return {"checkpoint": self.checkpoint, "big_omega": self.big_omega, "small_omega": self.small_omega}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the anchor and the importances on the backbone's device."""
        for name in ("checkpoint", "big_omega", "small_omega"):
            value = state[name]
            setattr(self, name, None if value is None else value.to(self.device))
