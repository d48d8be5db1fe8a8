"""lwf: Learning without Forgetting (Li and Hoiem, ECCV 2016; TPAMI 2017)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.datasets.source import Batch
from mammoth.models.utils import evaluation_mode
from mammoth.models.base import ContinualModel
from mammoth.models.registry import register_model
from mammoth.models.utils import Frozen, class_bounds, require_class_il
from mammoth.config.value_checks import check_non_negative, check_positive

if TYPE_CHECKING:
    from mammoth.datasets.source import DataSource


def smooth(probabilities: Tensor, temperature: float) -> Tensor:
    """``p ** (1 / T)`` renormalised over each row (the temperature of the original LwF code)."""
    powered = probabilities ** (1 / temperature)
    return powered / powered.sum(dim=1, keepdim=True)


def distillation_loss(old_logits: Tensor, new_logits: Tensor, temperature: float) -> Tensor:
    """``-mean_i sum_c smooth(softmax(old))_ic * log smooth(softmax(new))_ic``: the cross-entropy
    of the temperature-smoothed new distribution against the old one."""
    old = smooth(torch.softmax(old_logits, dim=1), temperature)
    new = smooth(torch.softmax(new_logits, dim=1), temperature)
    return -(old * torch.log(new)).sum(dim=1).mean()


@register_model("lwf")
class LwF(ContinualModel):
    """Learning without Forgetting: distils the outputs of the network as it was before each task.

    At the beginning of a task ``t > 0`` the new classes' classifier is warmed up on the task's
    data (``n_epochs`` of SGD at ``lr`` on the frozen features, through ``context.fit``), then a
    frozen copy of the network is taken. Each step:
    ``CE(logits[:, :seen], labels) + alpha * distillation_loss(copy(x)[:, :past], logits[:, :past],
    softmax_temp)``, where the copy sees the non-augmented inputs (the logits the original code
    precomputes on them). Uses the logits of a frozen copy (``net(x)``, ``net.classifier``).
    Class-IL datasets only.
    """

    supports_distributed = True
    supports_fp16 = False  # calls backward and steps its optimizer itself (no gradient scaling)

    def __init__(
        self, net: MammothBackbone, dataset: Any, alpha: float = 0.5, softmax_temp: float = 2.0, **kwargs: Any
    ) -> None:
        require_class_il("lwf", dataset)
        super().__init__(net, dataset, **kwargs)
        self.alpha = check_non_negative("model.alpha", alpha)
        self.softmax_temp = check_positive("model.softmax_temp", softmax_temp)
        self.old_net: Optional[Frozen] = None

    def begin_task(self, task: int) -> None:
        """For ``task > 0``: warm up the new classes' classifier on the task's data, then freeze a copy."""
        super().begin_task(task)
        if task > 0:
            self.warm_up_classifier(task)
            self.old_net = Frozen(self.net)

    def warm_up_classifier(self, task: int) -> float:
        """``n_epochs`` of SGD on the classifier only, over the new classes' logits (features frozen,
        network in eval mode), through ``context.fit``; returns the last epoch's mean loss."""
        past, seen = class_bounds(self.context, task)
        optimizer = torch.optim.SGD(self.net.classifier.parameters(), lr=self.lr)

        def step(batch: Batch) -> float:
            optimizer.zero_grad()
            with torch.no_grad():
                features = self.net(batch.inputs, returnt="features")
            loss = self.loss(self.net.classifier(features)[:, past:seen], batch.labels - past)
            loss.backward()
            optimizer.step()
            return loss.item()

        with evaluation_mode(self.net):
            return self.context.fit(step, self.context.task_data(task), self.context.n_epochs,
                                    f"lwf warm-up, task {task + 1}/{self.context.n_tasks}")

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """Cross-entropy on the seen classes plus the distillation term on the past ones."""
        past, seen = class_bounds(self.context, self.current_task)
        outputs = self.net(inputs)
        loss = self.loss(outputs[:, :seen], labels)
        if self.old_net is not None and past > 0:
            old_logits = self.old_net(self.context.test_transform(not_aug_inputs))
            loss = loss + self.alpha * distillation_loss(old_logits[:, :past], outputs[:, :past], self.softmax_temp)
        return self.step(loss)

    def end_task(self, task: int, data: DataSource) -> None:
        """Drop the frozen copy (the next task takes a new one), so checkpoints need no extra state."""
        self.old_net = None
