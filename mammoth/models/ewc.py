"""ewc: offline Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017) as PyCIL computes it
(G-U-N/PyCIL models/ewc.py); the original Mammoth's online variant is ``ewc_on``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.config.value_checks import check_non_negative, check_positive
from mammoth.models.base import ContinualModel
from mammoth.models.registry import register_model
from mammoth.models.utils import class_bounds, flat_gradient, require_class_il, training_mode, weighted_distance

if TYPE_CHECKING:
    from mammoth.datasets.source import Batch, DataSource


@register_model("ewc")
class EWC(ContinualModel):
    """PyCIL's EWC: a quadratic pull towards the last task's weights, weighted by a diagonal
    Fisher information merged over the tasks in proportion to their classes.

    Each step trains on the cross-entropy of the current task's classes only (``logits[:,
    past:seen]`` against ``labels - past``) plus ``lamda * sum(fisher * (theta - theta*)**2) / 2``
    from the second task on, and returns that sum. After each task: one pass over the task's
    (shuffled, augmented) batches, network in train mode, of the squared gradient of each batch's
    cross-entropy over the classes seen so far, averaged over the batches and clipped to
    ``fishermax`` (this is not ``ewc_on``'s Fisher, which goes one example at a time and weights by
    the likelihood); merged as ``alpha * fisher + (1 - alpha) * this task's`` with ``alpha = past /
    seen``, except in the classifier rows of the task's new classes, which take this task's alone
    (PyCIL's head grows there); the anchor ``theta*`` becomes the current weights. Defaults are
    PyCIL's: ``lamda=1000``, ``fishermax=1e-4``, SGD with ``lr=0.1``, ``momentum=0.9``,
    ``weight_decay=2e-4`` (``init_weight_decay=5e-4`` for the first task). Class-IL only.
    """

    supports_distributed = True  # the penalty is the same on every rank; the Fisher pass runs whole on each
    # fp16: the step goes through self.step (scaled); the Fisher pass runs after training, outside autocast

    def __init__(self, net: MammothBackbone, dataset: Any, lamda: float = 1000.0, fishermax: float = 0.0001,
                 init_weight_decay: float = 0.0005, momentum: float = 0.9, weight_decay: float = 0.0002,
                 **kwargs: Any) -> None:
        require_class_il("ewc", dataset)
        super().__init__(net, dataset, momentum=momentum, weight_decay=weight_decay, **kwargs)
        self.lamda = check_non_negative("model.lamda", lamda)
        self.fishermax = check_positive("model.fishermax", fishermax)
        self.init_weight_decay = check_non_negative("model.init_weight_decay", init_weight_decay)
        self.fisher: Optional[Tensor] = None
        self.anchor: Optional[Tensor] = None

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The base optimizer, with ``init_weight_decay`` for the first task (PyCIL's ``init_weight_decay``)."""
        optimizer = super().make_optimizer()
        if self.current_task == 0:
            for group in optimizer.param_groups:
                group["weight_decay"] = self.init_weight_decay
        return optimizer

    def penalty(self) -> Tensor:
        """``sum(fisher * (theta - theta*)**2) / 2`` (0 before the first task ends; not scaled by ``lamda``)."""
        if self.fisher is None:
            return torch.zeros((), device=self.device)
        return weighted_distance(self.net, self.fisher, self.anchor) / 2

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """One step on the current task's cross-entropy plus ``lamda`` times the penalty; returns their sum."""
        past, seen = class_bounds(self.context, self.current_task)
        loss = self.loss(self.net(inputs)[:, past:seen], labels - past)
        if self.fisher is not None:
            loss = loss + self.lamda * self.penalty()
        return self.step(loss)

    def end_task(self, task: int, data: DataSource) -> None:
        """Merge this task's Fisher into the running one; anchor at the current weights."""
        past, seen = class_bounds(self.context, task)
        fisher = self.fisher_diagonal(self.context.batches(data), seen)
        if self.fisher is not None:
            alpha = past / seen
            merged = alpha * self.fisher + (1 - alpha) * fisher
            new_rows = self.classifier_rows(past, seen)
            merged[new_rows] = fisher[new_rows]
            fisher = merged
        self.fisher = fisher
        self.anchor = self.net.get_params()

    def fisher_diagonal(self, batches: Iterable[Batch], seen: int) -> Tensor:
        """The mean over ``batches`` of the squared gradient of each batch's cross-entropy over the
        first ``seen`` classes (network in train mode), clipped to ``fishermax``; flat."""
        fisher = torch.zeros(self.net.num_params(), device=self.device)
        n_batches = 0
        with training_mode(self.net, True):
            for batch in batches:
                n_batches += 1
                loss = F.cross_entropy(self.net(batch.inputs)[:, :seen], batch.labels)
                fisher.add_(flat_gradient(self.net, loss).pow_(2))
        return fisher.div_(max(n_batches, 1)).clamp_(max=self.fishermax)

    def classifier_rows(self, start: int, stop: int) -> Tensor:
        """The flat positions of the classifier's rows ``start:stop`` (its parameters whose first
        dimension is the number of classes: a linear head's weight and bias)."""
        classifier = {id(parameter) for parameter in self.net.classifier.parameters()}
        positions, offset = [], 0
        for parameter in self.net.parameters():
            if id(parameter) in classifier and parameter.ndim >= 1 and parameter.shape[0] == self.net.num_classes:
                row = parameter[0].numel()
                positions.append(torch.arange(offset + start * row, offset + stop * row))
            offset += parameter.numel()
        return torch.cat(positions).to(self.device) if positions else torch.zeros(0, dtype=torch.long, device=self.device)

    def extra_state(self) -> dict[str, Any]:
        """The Fisher information and the anchor weights (None before the first task ends)."""
        return {"fisher": self.fisher, "anchor": self.anchor}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the Fisher information and the anchor on the backbone's device."""
        for name in ("fisher", "anchor"):
            value = state[name]
            setattr(self, name, None if value is None else value.to(self.device))
