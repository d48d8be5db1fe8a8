"""gdumb: Greedy sampler and Dumb learner (Prabhu, Torr and Dokania, "GDumb: A Simple Approach that
Questions Our Progress in Continual Learning", ECCV 2020)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Optional

import torch
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.datasets.source import Batch, InMemorySource, empty_source
from mammoth.models.buffer import ReplayBuffer
from mammoth.models.base import ContinualModel, check_memory_fits, check_memory_size, classes_seen
from mammoth.models.registry import register_model
from mammoth.models.utils import require_class_il
from mammoth.config.value_checks import check_choice, check_positive, check_positive_int

if TYPE_CHECKING:
    from mammoth.engine.context import TrainingContext
    from mammoth.datasets.source import DataSource

#: How GDumb fills its memory: the original Mammoth's reservoir, or the paper's greedy class-balanced sampler.
SAMPLERS = ("reservoir", "greedy")


class GreedyClassBalancedMemory:
    """GDumb's memory of at most ``capacity`` items: an item is stored while there is room; when
    full, an item whose class holds fewer than ``capacity // classes seen`` items replaces a
    random item of the largest class (the smallest label among equally large ones)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.examples: Optional[Tensor] = None
        self.labels: list[int] = []

    def __len__(self) -> int:
        return len(self.labels)

    def grow(self, capacity: int) -> None:
        """Raise the capacity to ``capacity`` (a memory per class, as classes arrive); the items stay."""
        if capacity > self.capacity and self.examples is not None:
            grown = self.examples.new_zeros((capacity, *self.examples.shape[1:]))
            grown[: self.capacity] = self.examples
            self.examples = grown
        self.capacity = max(self.capacity, capacity)

    def add(self, examples: Tensor, labels: Tensor, generator: Optional[torch.Generator] = None) -> None:
        """Offer a batch, one item at a time, in order (random choices from ``generator``, else
        torch's global one)."""
        if self.examples is None:
            self.examples = examples.new_zeros((self.capacity, *examples.shape[1:]))
        for example, label in zip(examples, labels.tolist()):
            slot = self._slot_for(label, generator)
            if slot is None:
                continue
            self.examples[slot] = example
            if slot == len(self.labels):
                self.labels.append(label)
            else:
                self.labels[slot] = label

    def _slot_for(self, label: int, generator: Optional[torch.Generator]) -> Optional[int]:
        if len(self.labels) < self.capacity:
            return len(self.labels)
        counts: dict[int, int] = {}
        for stored in self.labels:
            counts[stored] = counts.get(stored, 0) + 1
        n_classes = len(counts) + (label not in counts)
        if counts.get(label, 0) >= self.capacity // n_classes:
            return None
        largest = max(sorted(counts), key=lambda c: counts[c])
        members = [slot for slot, stored in enumerate(self.labels) if stored == largest]
        return members[int(torch.randint(len(members), (), generator=generator))]

    def data(self) -> tuple[Tensor, Tensor]:
        """The stored examples and labels, in slot order."""
        labels = torch.tensor(self.labels, dtype=torch.long, device=self.examples.device)
        return self.examples[: len(self.labels)], labels

    def state_dict(self) -> dict[str, Any]:
        """The stored items."""
        return {"examples": None if self.examples is None else self.examples.clone(), "labels": list(self.labels),
                "capacity": self.capacity}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """Restore :meth:`state_dict` onto ``device``."""
        self.examples = None if state["examples"] is None else state["examples"].to(device)
        self.labels = list(state["labels"])
        self.capacity = int(state.get("capacity", self.capacity))  # states written before grow(): this capacity


def beta_sample(alpha: float, generator: torch.Generator) -> float:
    """One draw of ``Beta(alpha, alpha)`` determined by ``generator`` (torch's Beta sampler takes
    no generator: it runs on torch's global one, forked and seeded from ``generator``)."""
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return float(torch.distributions.Beta(alpha, alpha).sample())


def cutmix(x: Tensor, y: Tensor, alpha: float, generator: torch.Generator,
           probability: float = 0.5) -> tuple[Tensor, Tensor, Tensor, float]:
    """CutMix (Yun et al., 2019) as the original Mammoth applies it: with ``probability``, paste a
    random box of a shuffled copy of the batch (box area ``~ 1 - Beta(alpha, alpha)``) into ``x``.
    Every draw comes from ``generator``. Returns ``(x, y_a, y_b, lam)``: the loss is
    ``lam * CE(y_a) + (1 - lam) * CE(y_b)``."""
    if float(torch.rand((), generator=generator)) > probability:
        return x, y, y, 1.0
    lam = beta_sample(alpha, generator)
    index = torch.randperm(x.shape[0], generator=generator).to(x.device)
    width, height = x.shape[2], x.shape[3]
    cut = (1.0 - lam) ** 0.5
    cut_w, cut_h = int(width * cut), int(height * cut)
    cx, cy = int(torch.randint(width, (), generator=generator)), int(torch.randint(height, (), generator=generator))
    x1, x2 = min(max(cx - cut_w // 2, 0), width), min(max(cx + cut_w // 2, 0), width)
    y1, y2 = min(max(cy - cut_h // 2, 0), height), min(max(cy + cut_h // 2, 0), height)
    x = x.clone()
    x[:, :, x1:x2, y1:y2] = x[index, :, x1:x2, y1:y2]
    lam = 1 - ((x2 - x1) * (y2 - y1) / (width * height))
    return x, y, y[index], lam


@register_model("gdumb")
class GDumb(ContinualModel):
    """GDumb: fills a memory of ``buffer_size`` examples (or ``memory_per_class`` per class seen,
    grown at :meth:`begin_task`), and after the last task trains the network from its initial
    weights on the memory alone.

    ``sampler`` chooses how the memory is filled. ``reservoir`` (the default) is the original
    Mammoth's: its ``models/gdumb.py`` stores every example in a reservoir ``Buffer``, so the
    memory is a uniform sample of the stream (drawn from the memory's own generator, seeded from
    the run's generator and saved with the memory). ``greedy`` is the paper's greedy class-balanced
    sampler (:class:`GreedyClassBalancedMemory`): an example is stored while its class holds fewer
    than ``buffer_size // classes seen`` items, evicting one of the largest class. On an
    unbalanced stream the two memories differ, and so do the accuracies.

    GDumb trains on nothing during the tasks (:meth:`training_data` is empty): :meth:`end_task`
    offers the task's examples to the memory once, in an order drawn from ``context.generator``
    (the original forces ``n_epochs=1``). After the last task: ``fitting_epochs`` epochs of SGD
    (``momentum``, ``weight_decay``) through ``context.fit``, with warm restarts (cosine,
    ``T_0=1``, ``T_mult=2``, from ``maxlr`` down to ``minlr``; first epoch at ``maxlr / 10``) and
    CutMix (``cutmix_alpha``; null disables it), on batches of ``batch_size`` augmented by the
    train transform, as the original. Every other random choice (the greedy memory's, the
    order, CutMix) draws from ``context.generator``. The original restarts from a newly drawn initialisation; this
    restarts from the backbone's initial weights (same distribution, and a resume restarts from
    the same weights). The network is not trained before the last task (``lr`` is unused), so
    the earlier evaluations score the untrained network. Class-IL datasets only.
    """

    supports_distributed = True
    supports_fp16 = False  # calls backward and steps its optimizer itself (no gradient scaling)

    trains_only_at_end = True
    has_memory = True  # the evaluation also scores the nearest mean of the memory's classes

    def __init__(
        self,
        net: MammothBackbone,
        dataset: Any,
        buffer_size: Optional[int] = None,
        memory_per_class: Optional[int] = None,
        maxlr: float = 0.05,
        minlr: float = 0.0005,
        fitting_epochs: int = 256,
        cutmix_alpha: Optional[float] = 1.0,
        sampler: Literal["reservoir", "greedy"] = "reservoir",
        **kwargs: Any,
    ) -> None:
        require_class_il("gdumb", dataset)
        super().__init__(net, dataset, **kwargs)
        self.buffer_size, self.memory_per_class = check_memory_size(buffer_size, memory_per_class)
        capacity = self.buffer_size if self.buffer_size is not None else self.memory_per_class  # grown at begin_task
        self.maxlr = check_positive("model.maxlr", maxlr)
        self.minlr = check_positive("model.minlr", minlr)
        self.fitting_epochs = check_positive_int("model.fitting_epochs", fitting_epochs)
        self.cutmix_alpha = None if cutmix_alpha is None else check_positive("model.cutmix_alpha", cutmix_alpha)
        self.sampler = check_choice("model.sampler", sampler, SAMPLERS)
        self.memory: ReplayBuffer | GreedyClassBalancedMemory = (
            ReplayBuffer(capacity, seed=0) if sampler == "reservoir" else GreedyClassBalancedMemory(capacity)
        )
        # The weights GDumb restarts from: the backbone's initialisation (the same on a resume,
        # which rebuilds the backbone from the same seed).
        self.initial_state = {name: value.detach().clone() for name, value in net.state_dict().items()}

    def training_data(self, task: int, data: DataSource) -> DataSource:
        """Nothing: GDumb does not train during the tasks."""
        return empty_source(data)

    def attach(self, context: TrainingContext) -> None:
        """Receive the context (the memory must fit in the run's training data); a reservoir
        memory's own generator is seeded from the run's generator."""
        if self.memory_per_class is None:
            check_memory_fits(self.buffer_size, context)
        else:
            check_memory_fits(self.memory_per_class, context, classes=classes_seen(context, context.n_tasks - 1))
        super().attach(context)
        if isinstance(self.memory, ReplayBuffer):
            self.memory.generator.manual_seed(int(torch.randint(0, 2**62, (1,), generator=context.generator)))

    def begin_task(self, task: int) -> None:
        """Record the task; a memory per class grows to ``memory_per_class`` times the classes seen."""
        super().begin_task(task)
        if self.memory_per_class is not None:
            self.memory.grow(self.memory_per_class * classes_seen(self.context, task))

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """Offer the batch to the memory (no training step; returns 0)."""
        if isinstance(self.memory, ReplayBuffer):
            self.memory.add(not_aug_inputs, labels=labels)
        else:
            self.memory.add(not_aug_inputs, labels, generator=self.context.generator)
        return 0.0

    def end_task(self, task: int, data: DataSource) -> None:
        """Offer the task's examples to the memory; after the last task, restart from the initial
        weights and fit the memory."""
        for batch in self.context.batches(data, augment=False):
            self.observe(batch.inputs, batch.labels, batch.not_aug_inputs)
        if task == self.context.n_tasks - 1 and len(self.memory):
            self.net.load_state_dict(self.initial_state)
            self.fit_memory()

    def memory_examples(self) -> Optional[tuple[Tensor, Tensor]]:
        """The memory's examples and labels (None while it is empty), for the nearest-mean evaluation."""
        return self.memory_data() if len(self.memory) else None

    def memory_data(self) -> tuple[Tensor, Tensor]:
        """The stored examples and labels, in slot order."""
        if isinstance(self.memory, ReplayBuffer):
            return self.memory.examples, self.memory.labels
        return self.memory.data()

    def fit_memory(self) -> float:
        """``fitting_epochs`` epochs of ``context.fit`` on the memory; returns the last epoch's mean loss."""
        optimizer = torch.optim.SGD(self.net.parameters(), lr=self.maxlr, momentum=self.momentum,
                                    weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=1, T_mult=2, eta_min=self.minlr)
        for group in optimizer.param_groups:  # the first epoch at maxlr / 10; the schedule keeps maxlr
            group["lr"] = self.maxlr * 0.1
        examples, labels = self.memory_data()
        generator = self.context.generator

        def step(batch: Batch) -> float:
            optimizer.zero_grad()
            if self.cutmix_alpha is None:
                loss = self.loss(self.net(batch.inputs), batch.labels)
            else:
                x, y_a, y_b, lam = cutmix(batch.inputs, batch.labels, self.cutmix_alpha, generator)
                outputs = self.net(x)
                loss = lam * self.loss(outputs, y_a) + (1 - lam) * self.loss(outputs, y_b)
            loss.backward()
            optimizer.step()
            return loss.item()

        def end_epoch(epoch: int) -> None:
            # The original's schedule: epoch 0 at maxlr / 10, epoch 1 at maxlr, then warm restarts.
            if epoch == 0:
                for group in optimizer.param_groups:
                    group["lr"] = self.maxlr
            else:
                scheduler.step()

        return self.context.fit(step, InMemorySource(examples.cpu(), labels.cpu()), self.fitting_epochs,
                                "gdumb fit of the memory", end_epoch=end_epoch)

    def extra_state(self) -> dict[str, Any]:
        """The memory."""
        return {"memory": self.memory.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the memory."""
        if isinstance(self.memory, ReplayBuffer):
            if self.memory_per_class is not None:
                self.memory.grow(int(state["memory"]["capacity"]))
            self.memory.load_state_dict(state["memory"])
            if not self.memory.is_empty():
                self.memory.to(self.device)
        else:
            self.memory.load_state_dict(state["memory"], self.device)
