"""wa: Weight Aligning (Zhao et al., "Maintaining Discrimination and Fairness in Class Incremental
Learning", CVPR 2020), as PyCIL runs it (models/wa.py)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mammoth.backbones.base import MammothBackbone
from mammoth.config.value_checks import check_non_negative, check_positive
from mammoth.errors import ConfigError
from mammoth.models.base import ReplayModel, check_milestones
from mammoth.models.icarl import ICarl
from mammoth.models.registry import register_model
from mammoth.models.utils import Frozen, class_bounds, evaluation_mode, require_class_il

if TYPE_CHECKING:
    from mammoth.datasets.source import DataSource


def kd_loss(logits: Tensor, old_logits: Tensor, temperature: float) -> Tensor:
    """PyCIL's ``_KD_loss``: ``-sum(softmax(old / T) * log_softmax(new / T)) / batch`` (no ``T**2``)."""
    log_new = torch.log_softmax(logits / temperature, dim=1)
    old = torch.softmax(old_logits / temperature, dim=1)
    return -(old * log_new).sum() / logits.shape[0]


def align_weights(weight: Tensor, past: int, seen: int) -> Tensor:
    """Weight aligning: scale the rows ``past:seen`` of ``weight`` in place by ``gamma`` = the mean L2
    norm of the rows ``:past`` over the mean norm of the rows ``past:seen``; returns ``gamma``."""
    norms = weight[:seen].norm(p=2, dim=1)
    gamma = norms[:past].mean() / norms[past:].mean()
    weight[past:seen] *= gamma
    return gamma


def reset_rows(classifier: nn.Linear, rows: range, generator: torch.Generator) -> None:
    """PyCIL's fresh ``SimpleLinear`` rows for new classes: weights ``kaiming_uniform_(nonlinearity="linear")``
    (uniform in +-sqrt(3 / fan_in)), biases 0; drawn from ``generator``."""
    weight = classifier.weight
    bound = math.sqrt(3.0 / weight.shape[1])
    values = torch.rand(len(rows), weight.shape[1], generator=generator, dtype=torch.float32)
    with torch.no_grad():
        weight[rows.start : rows.stop] = (values * 2 * bound - bound).to(weight.device, weight.dtype)
        if classifier.bias is not None:
            classifier.bias[rows.start : rows.stop] = 0


@register_model("wa")
class WA(ReplayModel):
    """WA: cross-entropy plus distillation from the previous network, then the new classes'
    classifier weights rescaled to the old classes' mean norm after each task.

    The first task trains with cross-entropy over its classes at ``init_lr``, ``init_weight_decay``
    and ``init_milestones`` (PyCIL's ``init_*`` constants); a later task ``t`` trains on its data
    joined with the memory at ``lr``, ``weight_decay``, ``lr_milestones`` with
    ``(1 - past/seen) * CE(logits[:, :seen]) + past/seen * KD(logits[:, :past], old logits, T)``
    (PyCIL's ``_KD_loss``, a batch mean without ``T**2``), the old logits from a frozen copy of the
    network after the previous task. At every task the rows of its classes in the backbone's
    linear ``classifier`` start afresh as PyCIL's grown ``SimpleLinear`` (kaiming-uniform, bias 0,
    from the run's generator). After a later task the new classes' weight rows are multiplied by
    ``mean ||w_old|| / mean ||w_new||`` (weight aligning; biases unchanged). With
    ``clip_weights`` (the paper's weight clipping; PyCIL has none, so off by default) the
    classifier's weights are clipped to be non-negative after every step. The memory is
    iCaRL's (herding on the normalised features, ``buffer_size // seen`` (or ``memory_per_class``) per class); the
    evaluation scores the aligned classifier. Class-IL datasets only.
    """

    trains_on_memory = True  # each task trains on its data joined with the memory

    accepts_regularizer = False  # not checked with a regulariser

    supports_distributed = True

    def __init__(
        self,
        net: MammothBackbone,
        dataset: Any,
        buffer_size: Optional[int] = None,
        memory_per_class: Optional[int] = None,
        T: float = 2.0,
        init_lr: float = 0.1,
        init_weight_decay: float = 0.0005,
        init_milestones: tuple[int, ...] = (60, 120, 170),
        clip_weights: bool = False,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0002,
        lr_milestones: Optional[tuple[int, ...]] = (60, 100, 140),
        **kwargs: Any,
    ) -> None:
        require_class_il("wa", dataset)
        super().__init__(net, dataset, buffer_size=buffer_size, memory_per_class=memory_per_class, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         lr_milestones=lr_milestones, **kwargs)
        if not isinstance(getattr(net, "classifier", None), nn.Linear):
            raise ConfigError(
                f"model=wa needs a backbone whose classifier is a linear layer, not {type(getattr(net, 'classifier', None)).__name__}; "
                "allowed: backbones with an nn.Linear classifier (resnet, mnistmlp, vit, timm)"
            )
        self.T = check_positive("model.T", T)
        self.init_lr = check_positive("model.init_lr", init_lr)
        self.init_weight_decay = check_non_negative("model.init_weight_decay", init_weight_decay)
        self.init_milestones = check_milestones("model.init_milestones", init_milestones)
        self.clip_weights = bool(clip_weights)
        self.old_net: Optional[Frozen] = None
        self.gammas: list[float] = []

    # the first task's optimizer and schedule (PyCIL's init_lr, init_weight_decay, init_milestones)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The base optimizer, at ``init_lr`` and ``init_weight_decay`` in the first task."""
        optimizer = super().make_optimizer()
        if self.current_task == 0:
            for group in optimizer.param_groups:
                group["lr"] = self.init_lr
                group["weight_decay"] = self.init_weight_decay
        return optimizer

    def make_scheduler(self) -> Optional[torch.optim.lr_scheduler.LRScheduler]:
        """The base schedule; ``multisteplr`` at ``init_milestones`` in the first task."""
        if self.current_task == 0 and self.lr_scheduler == "multisteplr":
            if not self.init_milestones:
                return None
            return torch.optim.lr_scheduler.MultiStepLR(
                self.optimizer, milestones=list(self.init_milestones), gamma=self.sched_multistep_lr_gamma)
        return super().make_scheduler()

    def begin_task(self, task: int) -> None:
        """The optimizer of the task; the rows of its classes start afresh (PyCIL's ``update_fc``)."""
        super().begin_task(task)
        reset_rows(self.net.classifier, self.context.task_classes(task), self.context.generator)

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """One step on the cross-entropy over the seen classes (and the distillation from the second task)."""
        past, seen = class_bounds(self.context, self.current_task)
        logits = self.net(inputs)[:, :seen]
        loss = F.cross_entropy(logits, labels)
        if self.old_net is not None and past > 0:
            share = past / seen
            distillation = kd_loss(logits[:, :past], self.old_net(inputs)[:, :past], self.T)
            loss = (1 - share) * loss + share * distillation
        value = self.step(loss)
        if self.clip_weights:
            with torch.no_grad():
                self.net.classifier.weight.clamp_(min=0)
        return value

    def end_task(self, task: int, data: DataSource) -> None:
        """Align the new classes' weights (from the second task), freeze a copy of the network,
        rebuild the memory by herding (iCaRL's)."""
        past, seen = class_bounds(self.context, task)
        if past > 0:
            with torch.no_grad():
                self.gammas.append(float(align_weights(self.net.classifier.weight, past, seen)))
        with evaluation_mode(self.net), torch.no_grad():
            self.old_net = Frozen(self.net)
            self.fill_memory(task, data)

    # iCaRL's herding memory, shared (exemplars_per_class: buffer_size // seen, or memory_per_class)
    features = ICarl.features
    fill_memory = ICarl.fill_memory

    def extra_state(self) -> dict[str, Any]:
        """The exemplars, the frozen previous network and the alignment factors so far."""
        return {**super().extra_state(), "old_net": None if self.old_net is None else self.old_net.state_dict(),
                "gammas": list(self.gammas)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the exemplars, the frozen previous network and the alignment factors."""
        super().load_extra_state(state)
        self.old_net = None if state["old_net"] is None else Frozen.restore(self.net, state["old_net"])
        self.gammas = list(state["gammas"])
