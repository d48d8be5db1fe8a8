"""ewc_on: online Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017; Schwarz et al.,
"Progress & Compress", ICML 2018)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.models.base import ContinualModel
from mammoth.models.registry import register_model
from mammoth.config.value_checks import check_non_negative

if TYPE_CHECKING:
    from mammoth.datasets.source import DataSource


@register_model("ewc_on")
class EwcOn(ContinualModel):
    """Online EWC: a quadratic pull towards the weights of the last task, weighted by a running
    diagonal Fisher information.

    After each task, ``fisher = gamma * fisher + F`` with ``F`` the mean over the task's
    (augmented) examples of ``p(y|x) * (d log p(y|x) / d theta)**2`` (one example at a time, in
    one pass of ``context.batches``; the mean divides by ``batches * batch_size`` as the
    original code does), and the anchor
    ``theta*`` becomes the current weights. Each step adds the penalty's gradient
    ``2 * e_lambda * fisher * (theta - theta*)`` to the cross-entropy's; the returned loss is
    the cross-entropy. Uses ``get_params`` / ``get_grads`` / ``set_grads`` (``out=`` buffers).
    """

    supports_distributed = True
    supports_fp16 = False  # calls backward and steps its optimizer itself (no gradient scaling)

    def __init__(self, net: MammothBackbone, dataset: Any, e_lambda: float, gamma: float, **kwargs: Any) -> None:
        super().__init__(net, dataset, **kwargs)
        self.e_lambda = check_non_negative("model.e_lambda", e_lambda)
        self.gamma = check_non_negative("model.gamma", gamma)
        self.fisher: Optional[Tensor] = None
        self.checkpoint: Optional[Tensor] = None
        self._params: Optional[Tensor] = None

    def penalty(self) -> Tensor:
        """``e_lambda * sum(fisher * (theta - theta*)**2)`` (0 before the first task ends)."""
        if self.checkpoint is None:
            return torch.zeros((), device=self.device)
        return self.e_lambda * (self.fisher * (self.net.get_params() - self.checkpoint) ** 2).sum()

    def penalty_grads(self) -> Tensor:
        """``2 * e_lambda * fisher * (theta - theta*)``, the gradient of :meth:`penalty`, in a reused buffer."""
        self._params = self.net.get_params(out=self._params if self._params is not None else None)
        return self._params.sub_(self.checkpoint).mul_(self.fisher).mul_(2 * self.e_lambda)

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """One step on the cross-entropy plus the penalty's gradient; returns the cross-entropy."""
        self.optimizer.zero_grad(set_to_none=True)
        outputs = self.net(inputs)
        if self.checkpoint is not None:
            self.net.set_grads(self.penalty_grads())
        loss = self.loss(outputs, labels)
        self.backward(loss)
        self.optimizer.step()
        return loss.item()

    def end_task(self, task: int, data: DataSource) -> None:
        """Fold this task's Fisher information into the running one; anchor at the current weights."""
        fisher = self.fisher_information(data)
        self.fisher = fisher if self.fisher is None else self.fisher.mul_(self.gamma).add_(fisher)
        self.checkpoint = self.net.get_params()

    def fisher_information(self, data: DataSource) -> Tensor:
        """The diagonal empirical Fisher of the task's augmented examples, one example at a time."""
        fisher = torch.zeros(self.net.num_params(), device=self.context.device)
        grads = torch.empty_like(fisher)
        n_batches = 0
        for batch in self.context.batches(data, shuffle=False):
            n_batches += 1
            for example, label in zip(batch.inputs, batch.labels):
                self.net.zero_grad(set_to_none=True)
                log_likelihood = -F.cross_entropy(self.net(example.unsqueeze(0)), label.unsqueeze(0))
                log_likelihood.backward()
                self.net.get_grads(out=grads)
                fisher.add_(grads.pow_(2).mul_(log_likelihood.detach().exp()))
        self.net.zero_grad(set_to_none=True)
        return fisher.div_(n_batches * self.context.batch_size)

    def extra_state(self) -> dict[str, Any]:
        """The running Fisher information and the anchor weights (None before the first task ends)."""
        return {"fisher": self.fisher, "checkpoint": self.checkpoint}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the Fisher information and the anchor on the backbone's device."""
        self.fisher = None if state["fisher"] is None else state["fisher"].to(self.device)
        self.checkpoint = None if state["checkpoint"] is None else state["checkpoint"].to(self.device)
