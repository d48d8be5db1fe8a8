"""lwf_mc: Learning without Forgetting, multi-class (the original Mammoth's models/lwf_mc.py: LwF
with iCaRL's sigmoid distillation, as Rebuffi et al., CVPR 2017, compare it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.config.value_checks import check_non_negative
from mammoth.models.base import ContinualModel
from mammoth.models.registry import register_model
from mammoth.models.utils import Frozen, class_bounds, evaluation_mode, require_class_il, squared_norm

if TYPE_CHECKING:
    from mammoth.datasets.source import DataSource


@register_model("lwf_mc")
class LwFMC(ContinualModel):
    """LwF-MC: binary cross-entropy on the logits of the classes seen so far, with one-hot targets
    for the current task's classes and, for the past ones, the sigmoid of the logits of the network
    as it was at the end of the previous task (a frozen copy, on the same augmented inputs), plus
    ``wd_reg`` times the squared norm of the weights. No memory. Class-IL datasets only.
    """

    supports_distributed = True

    def __init__(self, net: MammothBackbone, dataset: Any, wd_reg: float = 0.0, **kwargs: Any) -> None:
        require_class_il("lwf_mc", dataset)
        super().__init__(net, dataset, **kwargs)
        self.wd_reg = check_non_negative("model.wd_reg", wd_reg)
        self.old_net: Optional[Frozen] = None

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """One step on the binary cross-entropy with distilled targets for the past classes."""
        past, seen = class_bounds(self.context, self.current_task)
        outputs = self.net(inputs)[:, :seen]
        targets = F.one_hot(labels, self.context.n_classes)[:, :seen].to(outputs.dtype)
        if past > 0 and self.old_net is not None:
            old = torch.sigmoid(self.old_net(inputs)[:, :past]).to(outputs.dtype)
            targets = torch.cat([old, targets[:, past:]], dim=1)
        loss = F.binary_cross_entropy_with_logits(outputs, targets)
        if self.wd_reg:
            loss = loss + self.wd_reg * squared_norm(self.net)
        return self.step(loss)

    def end_task(self, task: int, data: DataSource) -> None:
        """Freeze a copy of the network for the next task's distillation."""
        with evaluation_mode(self.net):
            self.old_net = Frozen(self.net)

    def extra_state(self) -> dict[str, Any]:
        """The frozen previous network."""
        return {"old_net": None if self.old_net is None else self.old_net.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the frozen previous network."""
        self.old_net = None if state["old_net"] is None else Frozen.restore(self.net, state["old_net"])
