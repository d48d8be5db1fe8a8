"""mas: Memory Aware Synapses (Aljundi et al., "Memory Aware Synapses: Learning what (not) to
forget", ECCV 2018), as Avalanche's ``MASPlugin`` (avalanche/training/plugins/mas.py) computes it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.config.value_checks import check_fraction, check_non_negative
from mammoth.models.base import ContinualModel
from mammoth.models.registry import register_model
from mammoth.models.utils import flat_gradient, training_mode, weighted_distance

if TYPE_CHECKING:
    from mammoth.datasets.source import DataSource


@register_model("mas")
class MAS(ContinualModel):
    """Memory Aware Synapses: a quadratic pull towards the last task's weights, weighted by how much
    each weight moves the squared norm of the network's output.

    After each task (Avalanche's ``after_training_exp``), with the network in train mode, one pass
    over the task's (augmented) data in order, in batches of ``batch_size``: each batch's loss is
    the mean over its rows of ``||logits||_2**2`` and the importance of this task is the mean over
    the batches of ``|d loss / d theta|``. The running importance is this task's after the first
    task, then ``alpha * importance + (1 - alpha) * this task's``; the anchor ``theta*`` is the
    weights at the end of the task. Each step of a later task trains on
    ``CE + lambda_reg * sum(importance * (theta - theta*)**2)`` and returns it. Defaults are
    Avalanche's (``MASPlugin`` and the ``MAS`` strategy: ``lambda_reg=1.0``, ``alpha=0.5``).
    """

    supports_distributed = True  # the penalty is the same on every rank; importances are computed whole on each
    # fp16: the step goes through self.step (scaled); the importance pass runs after training, outside autocast

    def __init__(self, net: MammothBackbone, dataset: Any, lambda_reg: float = 1.0, alpha: float = 0.5,
                 **kwargs: Any) -> None:
        super().__init__(net, dataset, **kwargs)
        self.lambda_reg = check_non_negative("model.lambda_reg", lambda_reg)
        self.alpha = check_fraction("model.alpha", alpha)
        self.importance: Optional[Tensor] = None
        self.anchor: Optional[Tensor] = None

    def penalty(self) -> Tensor:
        """``sum(importance * (theta - theta*)**2)`` (0 before the first task ends; not scaled by ``lambda_reg``)."""
        if self.importance is None:
            return torch.zeros((), device=self.device)
        return weighted_distance(self.net, self.importance, self.anchor)

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """One step on the cross-entropy plus ``lambda_reg`` times the penalty; returns their sum."""
        loss = self.loss(self.net(inputs), labels)
        if self.importance is not None:
            loss = loss + self.lambda_reg * self.penalty()
        return self.step(loss)

    def end_task(self, task: int, data: DataSource) -> None:
        """Anchor at the current weights; fold this task's importance into the running one."""
        self.anchor = self.net.get_params()
        importance = self.output_sensitivity(data)
        if self.importance is None:
            self.importance = importance
        else:
            self.importance = self.alpha * self.importance + (1 - self.alpha) * importance

    def output_sensitivity(self, data: DataSource) -> Tensor:
        """The mean over the task's batches (in order, augmented, network in train mode) of
        ``|grad of mean_rows ||logits||**2|``, as a flat vector in ``parameters()`` order."""
        importance = torch.zeros(self.net.num_params(), device=self.device)
        n_batches = 0
        with training_mode(self.net, True):
            for batch in self.context.batches(data, shuffle=False):
                n_batches += 1
                loss = torch.norm(self.net(batch.inputs), p="fro", dim=1).pow(2).mean()
                importance.add_(flat_gradient(self.net, loss).abs_())
        return importance.div_(float(max(n_batches, 1)))

    def extra_state(self) -> dict[str, Any]:
        """The running importance and the anchor weights (None before the first task ends)."""
        return {"importance": self.importance, "anchor": self.anchor}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the importance and the anchor on the backbone's device."""
        for name in ("importance", "anchor"):
            value = state[name]
            setattr(self, name, None if value is None else value.to(self.device))
