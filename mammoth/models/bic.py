"""bic: Bias Correction (Wu et al., "Large Scale Incremental Learning", CVPR 2019)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.datasets.source import Batch
from mammoth.models.utils import evaluation_mode
from mammoth.models.base import ReplayModel
from mammoth.models.registry import register_model
from mammoth.datasets.source import InMemorySource, concat_sources
from mammoth.models.utils import Frozen, class_bounds, keep_first, require_class_il, squared_norm
from mammoth.config.value_checks import check_non_negative, check_positive

if TYPE_CHECKING:
    from mammoth.datasets.source import DataSource


def correct_logits(logits: Tensor, factors: Tensor, classes: range) -> Tensor:
    """BiC's correction: ``factors[1] * logit + factors[0]`` on the columns ``classes``; the other
    columns unchanged. Returns a new tensor (differentiable in ``factors``)."""
    scale = torch.ones(logits.shape[1], dtype=logits.dtype, device=logits.device)
    shift = torch.zeros_like(scale)
    chosen = torch.zeros_like(scale, dtype=torch.bool)
    chosen[classes.start : classes.stop] = True
    scale = torch.where(chosen, factors[1].to(logits.dtype), scale)
    shift = torch.where(chosen, factors[0].to(logits.dtype), shift)
    return logits * scale + shift


@register_model("bic")
class BiC(ReplayModel):
    """BiC: distillation from the previous network, then a two-parameter linear correction of the
    newest classes' logits fitted on a held-out part of the memory and of the task's data.

    For a task ``t > 0``: ``valset_split`` of the memory (and as many of the task's examples)
    are held out; the rest trains with ``(1 - 1/(t+1)) * CE(logits[:, :seen]) + 1/(t+1) * temp**2
    * KL-style distillation`` from the frozen previous network (its own correction applied when
    ``distill_after_bic``). After the task, ``(b, a)`` starting at ``(0, 1)`` are fitted by Adam
    (lr 0.001, ``bic_epochs`` epochs) so that ``a * logit + b`` on the new classes minimises the
    held-out cross-entropy (through ``context.fit``); :meth:`forward` applies them, so the
    evaluation scores the corrected logits. The memory keeps ``buffer_size // (t + 1)`` examples
    (with ``memory_per_class``: ``memory_per_class`` random examples of each class of the task, kept)
    of every task (as read from the task's source, with task labels). The held-out split and the
    memory's choices draw from ``context.generator``. ``wd_reg`` adds ``wd_reg * sum(theta**2)``.
    Class-IL datasets only.
    """

    supports_distributed = True
    supports_fp16 = False  # calls backward and steps its optimizer itself (no gradient scaling)

    def __init__(
        self,
        net: MammothBackbone,
        dataset: Any,
        buffer_size: Optional[int] = None,
        memory_per_class: Optional[int] = None,
        bic_epochs: int = 250,
        temp: float = 2.0,
        valset_split: float = 0.1,
        wd_reg: Optional[float] = None,
        distill_after_bic: bool = True,
        **kwargs: Any,
    ) -> None:
        require_class_il("bic", dataset)
        super().__init__(net, dataset, buffer_size=buffer_size, memory_per_class=memory_per_class, **kwargs)
        self.bic_epochs = int(check_non_negative("model.bic_epochs", bic_epochs))
        self.temp = check_positive("model.temp", temp)
        self.valset_split = check_non_negative("model.valset_split", valset_split)
        self.wd_reg = None if wd_reg is None else check_non_negative("model.wd_reg", wd_reg)
        self.distill_after_bic = bool(distill_after_bic)
        self.corr_factors: Optional[Tensor] = None
        self.old_corr: Optional[Tensor] = None
        self.old_net: Optional[Frozen] = None
        self.lamda = 0.0
        self._validation: Optional[DataSource] = None

    def begin_task(self, task: int) -> None:
        """From the second task: freeze the network and its correction; the distillation weight is 1/(t+1)."""
        super().begin_task(task)
        if task > 0:
            self.old_net = Frozen(self.net)
            self.old_corr = self.corr_factors
            self.lamda = 1 / (task + 1)
        self.corr_factors = None

    def training_data(self, task: int, data: DataSource) -> DataSource:
        """From the second task: the task's data and the memory, minus a held-out validation part
        (``valset_split`` of the memory, and as many of the task's examples)."""
        self._validation = None
        if task == 0 or self.buffer.is_empty():
            return data
        generator = self.context.generator
        memory = InMemorySource(self.buffer.examples.cpu(), self.buffer.labels.cpu())
        memory_held_out = torch.rand(len(memory), generator=generator) < self.valset_split
        task_held_out = torch.zeros(len(data), dtype=torch.bool)
        task_held_out[torch.randperm(len(data), generator=generator)[: int(memory_held_out.sum())]] = True
        self._validation = concat_sources([data.subset(task_held_out), memory.subset(memory_held_out)])
        return concat_sources([data.subset(~task_held_out), memory.subset(~memory_held_out)])

    def replay_rows(self, batch_size: int) -> int:
        """0: no replay minibatch is split over the ranks (the memory is trained on as part of the task's data)."""
        return 0

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """One step on the weighted cross-entropy and distillation losses."""
        past, seen = class_bounds(self.context, self.current_task)
        outputs = self.net(inputs)
        distillation = outputs.new_zeros(())
        if self.old_net is not None and self.current_task > 0:
            old_outputs = self.old_net(inputs)
            if self.distill_after_bic and self.old_corr is not None:
                old_outputs = correct_logits(old_outputs, self.old_corr, self.context.task_classes(self.current_task - 1))
            log_new = F.log_softmax(outputs[:, :past] / self.temp, dim=1)
            old = F.softmax(old_outputs[:, :past] / self.temp, dim=1)
            distillation = -(log_new * old).sum(dim=1).mean()
        loss = (1 - self.lamda) * self.loss(outputs[:, :seen], labels) + self.lamda * distillation * self.temp**2
        if self.wd_reg:
            loss = loss + self.wd_reg * squared_norm(self.net)
        return self.step(loss)

    def end_task(self, task: int, data: DataSource) -> None:
        """From the second task: fit the correction on the held-out data; then update the memory."""
        if task > 0:
            self.corr_factors = self.fit_correction(task)
        self.old_net = None
        self._validation = None
        self.build_buffer(task, data)

    def fit_correction(self, task: int) -> Tensor:
        """``(b, a)``, fitted by Adam on the held-out data's cross-entropy over the seen classes
        (``bic_epochs`` epochs of ``context.fit``, the network in eval mode)."""
        factors = torch.tensor([0.0, 1.0], device=self.context.device, requires_grad=True)
        if self._validation is None or len(self._validation) == 0:
            return factors.detach()
        optimizer = torch.optim.Adam([factors], lr=0.001)
        new_classes, seen = self.context.task_classes(task), class_bounds(self.context, task)[1]

        def step(batch: Batch) -> float:
            optimizer.zero_grad()
            with torch.no_grad():
                logits = self.net(batch.inputs)
            loss = self.loss(correct_logits(logits, factors, new_classes)[:, :seen], batch.labels)
            loss.backward()
            optimizer.step()
            return loss.item()

        if self.bic_epochs:
            with evaluation_mode(self.net):
                self.context.fit(step, self._validation, self.bic_epochs,
                                 f"bic correction, task {task + 1}/{self.context.n_tasks}")
        return factors.detach()

    def build_buffer(self, task: int, data: DataSource) -> None:
        """Keep the first ``buffer_size // (task + 1)`` items of every earlier task; add as many random
        examples of this task (with labels and task labels)."""
        if self.memory_per_class is not None:
            index = self.per_class_choice(data)
        else:
            per_task = self.buffer_size // (task + 1)
            keep_first(self.buffer, per_task, by="task_labels")
            index = torch.randperm(len(data), generator=self.context.generator)[:per_task]
        device = self.context.device
        self.buffer.add(
            data.read(index, device),
            labels=data.labels[index].to(device),
            task_labels=torch.full((len(index),), task, dtype=torch.long, device=device),
        )

    def per_class_choice(self, data: DataSource) -> Tensor:
        """``memory_per_class`` random indices of each class of ``data`` (classes in increasing order,
        each class's drawn from ``context.generator``): the task's share of a memory per class."""
        labels = data.labels
        chosen = []
        for label in labels.unique():
            members = (labels == label).nonzero().flatten()
            chosen.append(members[torch.randperm(len(members), generator=self.context.generator)[: self.memory_per_class]])
        return torch.cat(chosen)

    def forward(self, x: Tensor) -> Tensor:
        """The logits, with the newest task's classes corrected once a correction has been fitted."""
        logits = self.net(x)
        if self.corr_factors is None:
            return logits
        return correct_logits(logits, self.corr_factors, self.context.task_classes(self.current_task))

    def extra_state(self) -> dict[str, Any]:
        """The memory and the current correction factors."""
        return {**super().extra_state(), "corr_factors": self.corr_factors}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the memory and the correction factors."""
        super().load_extra_state(state)
        factors = state["corr_factors"]
        self.corr_factors = None if factors is None else factors.to(self.device)
