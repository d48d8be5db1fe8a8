"""hal: Hindsight Anchor Learning (Chaudhry et al., "Using Hindsight to Anchor Past Knowledge in
Continual Learning", AAAI 2021), as the original Mammoth's ``hal``."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.config.value_checks import check_non_negative, check_positive_int
from mammoth.errors import ConfigError
from mammoth.models.base import ReplayModel
from mammoth.models.registry import register_model

if TYPE_CHECKING:
    from mammoth.datasets.source import DataSource


class RingMemory:
    """The original's ring buffer: ``capacity // n_tasks`` slots per task, written in a ring (the
    newest examples of each task kept). Replay samples distinct rows among the first ``filled``
    slots (the original's ``np.random.choice(filled)``, the same as the filled ones while each
    task's portion fills up before the next begins). Draws come from :attr:`generator`."""

    def __init__(self, capacity: int, n_tasks: int, device: Optional[str] = None) -> None:
        self.capacity = capacity
        self.portion = capacity // n_tasks
        if self.portion < 1:
            raise ConfigError(f"model.buffer_size={capacity} gives no slot to each of {n_tasks} tasks; "
                              f"allowed: buffer_size >= {n_tasks} (hal's ring keeps buffer_size // n_tasks per task)")
        self.device = device
        self.generator = torch.Generator().manual_seed(0)
        self.gather: Optional[Callable[[Tensor], Tensor]] = None  # ReplayModel.attach sets it; one process only
        self.task_number = 0
        self.num_seen = 0  # in the current task
        self.examples: Optional[Tensor] = None
        self.labels: Optional[Tensor] = None
        self.filled = torch.zeros(capacity, dtype=torch.bool)

    def __len__(self) -> int:
        return int(self.filled.sum())

    def is_empty(self) -> bool:
        """The original's test: nothing offered and no task finished."""
        return self.num_seen == 0 and self.task_number == 0

    def add(self, examples: Tensor, labels: Tensor) -> None:
        """Write each example at ``num_seen % portion`` of the current task's portion (the last ``portion`` win)."""
        if self.examples is None:
            device = examples.device if self.device is None else self.device
            self.examples = torch.zeros((self.capacity, *examples.shape[1:]), dtype=examples.dtype, device=device)
            self.labels = torch.zeros(self.capacity, dtype=torch.long, device=device)
        count = examples.shape[0]
        kept = min(count, self.portion)
        positions = self.num_seen + torch.arange(count - kept, count)
        slots = positions % self.portion + self.task_number * self.portion
        self.examples[slots.to(self.examples.device)] = examples[count - kept :].detach().to(self.examples.device)
        self.labels[slots.to(self.labels.device)] = labels[count - kept :].to(self.labels.device)
        self.filled[slots] = True
        self.num_seen += count

    def sample(self, size: int) -> tuple[Tensor, Tensor]:
        """``min(size, filled)`` distinct rows among the first ``filled`` slots."""
        filled = len(self)
        rows = torch.randperm(filled, generator=self.generator)[: min(size, filled)].to(self.examples.device)
        return self.examples[rows], self.labels[rows]

    def next_task(self) -> None:
        """The next task writes its own portion."""
        self.task_number += 1
        self.num_seen = 0

    def state_dict(self) -> dict[str, Any]:
        """Slots, filled mask, counters, generator."""
        fields = {} if self.examples is None else {"examples": self.examples.clone(), "labels": self.labels.clone()}
        return {"capacity": self.capacity, "task_number": self.task_number, "num_seen": self.num_seen,
                "filled": self.filled.clone(), "generator": self.generator.get_state(), "fields": fields}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a memory of the same capacity."""
        if state["capacity"] != self.capacity:
            raise ConfigError(f"hal memory capacity={state['capacity']} in the state does not match; "
                              f"allowed: capacity={self.capacity}")
        self.task_number, self.num_seen = int(state["task_number"]), int(state["num_seen"])
        self.filled = state["filled"].clone()
        self.generator.set_state(state["generator"].cpu())
        fields = state["fields"]
        self.examples = fields["examples"].clone() if fields else None
        self.labels = fields["labels"].clone() if fields else None

    def to(self, device: str | torch.device) -> "RingMemory":
        """Move the stored tensors to ``device``."""
        if self.examples is not None:
            self.examples, self.labels = self.examples.to(device), self.labels.to(device)
        return self


@register_model("hal")
class HAL(ReplayModel):
    """HAL: ER on a ring memory, plus a second step that keeps the network's outputs on learned
    anchors (one per class seen) where they were before the step.

    Each step takes a cross-entropy step on the batch joined by ``minibatch_size`` stored
    examples (augmented); once anchors exist, the weights return to before that step and a
    second step on ``hal_lambda * mean((f_new(anchors) - f_old(anchors))**2)`` follows, its
    gradient added to the first one's (the original does not clear it). ``phi``, a running mean
    (``beta``) of the batch's features, starts at 0 each task. At the end of a task a copy of the
    network is fine-tuned ``finetuning_epochs`` steps on a batch of the memory, then each class of
    the task gets an anchor: an image drawn uniformly in [0, 1) and trained ``steps_on_anchors``
    SGD steps to maximise the fine-tuned copy's loss, minimise the current network's and keep its
    features near ``phi`` (weight ``gamma``). The memory keeps ``buffer_size // n_tasks`` examples
    per task, the newest.

    In the original the "current network" of the anchor objective is the fine-tuned copy too (its
    ``set_params`` makes the copy's weights views of the saved current weights, which its
    fine-tuning step then moves), so the two cross-entropy terms cancel and an anchor only matches
    ``phi``; that is the default. ``paper_anchors=true`` keeps the weights before fine-tuning for
    the second term, as the paper describes.
    """

    accepts_regularizer = False  # the anchor step adds its own gradient
    supports_memory_per_class = False  # a ring memory of buffer_size, as the original

    #: Per-step weight restores and anchor steps: one process only.
    supports_distributed = False
    #: Its anchor step accumulates onto the first step's gradient and steps the optimizer itself.
    supports_fp16 = False

    def __init__(self, net: MammothBackbone, dataset: Any, buffer_size: int, hal_lambda: float = 0.1,
                 beta: float = 0.5, gamma: float = 0.1, steps_on_anchors: int = 100, finetuning_epochs: int = 1,
                 paper_anchors: bool = False, **kwargs: Any) -> None:
        super().__init__(net, dataset, buffer_size=buffer_size, **kwargs)
        self.hal_lambda = check_non_negative("model.hal_lambda", hal_lambda)
        self.beta = float(beta)
        self.gamma = check_non_negative("model.gamma", gamma)
        self.steps_on_anchors = check_positive_int("model.steps_on_anchors", steps_on_anchors)
        self.finetuning_epochs = int(check_non_negative("model.finetuning_epochs", finetuning_epochs))
        self.paper_anchors = bool(paper_anchors)
        self.buffer = RingMemory(self.buffer_size, int(dataset.n_tasks), "cpu" if self.buffer_device == "cpu" else None)
        self.anchors: Optional[Tensor] = None
        self.phi: Optional[Tensor] = None

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """The replay step, then the anchor step; returns the sum of their losses."""
        real = inputs.shape[0]
        if self.anchors is None:
            self.anchors = inputs.new_zeros((0, *inputs.shape[1:]))
        if self.phi is None:
            with torch.no_grad():
                self.phi = torch.zeros_like(self.net(inputs[:1], returnt="features"))
        all_inputs, all_labels = inputs, labels
        if not self.buffer.is_empty():
            examples, stored = self.buffer.sample(self.minibatch_size if self.minibatch_size is not None else real)
            all_inputs = torch.cat([inputs, self.context.train_transform(examples.to(inputs.device))])
            all_labels = torch.cat([labels, stored.to(labels.device)])
        old_weights = self.net.get_params()
        value = self.step(self.loss(self.net(all_inputs), all_labels))
        if len(self.anchors):
            with torch.no_grad():
                new_outputs = self.net(self.anchors)
            self.net.set_params(old_weights)
            loss = self.hal_lambda * (new_outputs - self.net(self.anchors)).pow(2).mean()
            self.backward(loss)  # onto the first step's gradient, as the original
            self.optimizer.step()
            value += loss.item()
        with torch.no_grad():
            features = self.net(inputs, returnt="features").mean(0)
            self.phi = self.beta * self.phi + (1 - self.beta) * features
        self.buffer.add(not_aug_inputs, labels)
        return value

    def end_task(self, task: int, data: "DataSource") -> None:
        """Move the memory to the next task's portion and learn an anchor per class of the task."""
        self.buffer.next_task()
        if self.anchors is not None and self.phi is not None:
            self.anchors = torch.cat([self.anchors, self.learn_anchors(data.labels.unique().tolist())])
        self.phi = None

    def learn_anchors(self, classes: list[int]) -> Tensor:
        """One anchor per class of ``classes`` (the original's ``get_anchors``)."""
        theta_t = self.net.get_params()
        spare = copy.deepcopy(self.net).train()
        spare.set_params(theta_t)
        spare_optimizer = torch.optim.SGD(spare.parameters(), lr=self.lr)
        for _ in range(self.finetuning_epochs):
            examples, labels = self.buffer.sample(self.context.batch_size)
            spare_optimizer.zero_grad()
            self.loss(spare(self.context.train_transform(examples.to(self.device))), labels.to(self.device)).backward()
            spare_optimizer.step()
        theta_m = spare.get_params()
        if not self.paper_anchors:
            # the original's set_params makes the spare network's weights views of theta_t, so its
            # fine-tuning moves theta_t too: both loss terms below then use the fine-tuned weights
            theta_t = theta_m
        anchors = []
        for label in classes:
            anchor = torch.rand(self.anchors.shape[1:], generator=self.context.generator).to(self.device).requires_grad_()
            anchor_optimizer = torch.optim.SGD([anchor], lr=self.lr)
            target = torch.tensor([label], device=self.device)
            for _ in range(self.steps_on_anchors):
                anchor_optimizer.zero_grad()
                spare.set_params(theta_m)
                (-self.loss(spare(anchor.unsqueeze(0)), target)).backward()
                spare.set_params(theta_t)
                self.loss(spare(anchor.unsqueeze(0)), target).backward()
                (self.gamma * (spare(anchor.unsqueeze(0), returnt="features") - self.phi).pow(2)).sum().backward()
                anchor_optimizer.step()
            anchors.append(anchor.detach())
        return torch.stack(anchors) if anchors else self.anchors[:0]

    def extra_state(self) -> dict[str, Any]:
        """The ring memory, the anchors and the running features (None between tasks)."""
        return {**super().extra_state(), "anchors": self.anchors, "phi": self.phi}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the memory, anchors and running features on the backbone's device."""
        super().load_extra_state(state)
        self.anchors = None if state["anchors"] is None else state["anchors"].to(self.device)
        self.phi = None if state["phi"] is None else state["phi"].to(self.device)
