"""gem: Gradient Episodic Memory (Lopez-Paz and Ranzato, "Gradient Episodic Memory for Continual
Learning", NeurIPS 2017)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.config.value_checks import check_non_negative
from mammoth.errors import ConfigError
from mammoth.models.base import ReplayModel
from mammoth.models.registry import register_model
from mammoth.models.utils import keep_first, seen_classes

if TYPE_CHECKING:
    from mammoth.datasets.source import DataSource

#: The ridge GEM adds to the Gram matrix of the memories' gradients (the original's ``eps``).
QP_EPSILON = 1e-3


def _quadprog() -> Any:
    try:
        import quadprog  # optional: quadprog
    except ImportError as error:
        raise ConfigError(
            "model=gem needs the quadprog package, which is not installed; "
            "allowed: install it with pip install 'mammoth[gem]' (or pip install quadprog)"
        ) from error
    return quadprog


def project_to_cone(gradient: Tensor, memories: Tensor, margin: float, eps: float = QP_EPSILON) -> Tensor:
    """GEM's projection of ``gradient`` (p,) given the past tasks' gradients ``memories`` (t, p).

    Solves the dual ``min_v 1/2 v^T (M M^T + eps I) v + (M g)^T v`` subject to ``v >= margin``
    with quadprog (in double precision) and returns ``g + M^T v``, a new tensor like ``gradient``.
    """
    quadprog = _quadprog()
    memories_np = memories.detach().cpu().double().numpy()
    gradient_np = gradient.detach().cpu().double().numpy()
    n_rows = memories_np.shape[0]
    gram = memories_np @ memories_np.T
    gram = 0.5 * (gram + gram.T) + eps * np.eye(n_rows)
    linear = -(memories_np @ gradient_np)
    v = quadprog.solve_qp(gram, linear, np.eye(n_rows), np.full(n_rows, margin))[0]
    projected = v @ memories_np + gradient_np
    return torch.from_numpy(projected).to(gradient.device, gradient.dtype)


@register_model("gem")
class Gem(ReplayModel):
    """GEM: the step's gradient may not increase the loss of any past task's memory, to first order.

    After each task the memory is refilled class-balanced (``buffer_size // seen classes``, or ``memory_per_class``
    random non-augmented examples per class; earlier classes keep their first ones), each
    item with its task label. Each step computes one gradient per past task on all of its
    memory; if the current gradient has a negative dot product with any of them, it is
    replaced by the solution of GEM's quadratic program (:func:`project_to_cone`, margin
    ``gamma``, solved by quadprog). Uses ``get_grads`` (reused ``out=`` rows), ``flat_grads`` (the
    step's gradient, read in place) and ``set_grads``.
    """

    supports_distributed = True
    accepts_regularizer = False  # its step projects gradients outside step(): a regulariser's term would be skipped
    supports_fp16 = False  # calls backward and steps its optimizer itself (no gradient scaling)

    def __init__(self, net: MammothBackbone, dataset: Any, buffer_size: Optional[int] = None, memory_per_class: Optional[int] = None,
                  gamma: float = 0.5, **kwargs: Any) -> None:
        _quadprog()
        super().__init__(net, dataset, buffer_size=buffer_size, memory_per_class=memory_per_class, **kwargs)
        self.gamma = check_non_negative("model.gamma", gamma)
        self._memories: Optional[Tensor] = None  # one row per past task, reused every step

    def memory_gradients(self) -> Tensor:
        """One row per task in the memory: the gradient of the cross-entropy on all of its items."""
        memory = self.buffer.sample(len(self.buffer), transform=self.context.train_transform)
        tasks = memory.task_labels.unique()
        if self._memories is None or self._memories.shape[0] < len(tasks):
            self._memories = torch.empty(len(tasks), self.net.num_params(), device=self.device)
        for row, task in enumerate(tasks):
            chosen = memory.task_labels == task
            self.optimizer.zero_grad(set_to_none=True)
            self.loss(self.net(memory.examples[chosen]), memory.labels[chosen]).backward()
            self.net.get_grads(out=self._memories[row])
        return self._memories[: len(tasks)]

    def replay_rows(self, batch_size: int) -> int:
        """0: no replay minibatch is split over the ranks (the memory's gradients are computed whole on every rank)."""
        return 0

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """One step along the (projected) gradient; returns the cross-entropy on the batch."""
        memories = None
        if not self.buffer.is_empty():
            with self.context.same_on_every_rank():  # the whole memory on every rank: nothing to average
                memories = self.memory_gradients()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.net(inputs), labels)
        self.backward(loss)
        if memories is not None:
            gradient = self.net.flat_grads()
            if bool((memories @ gradient < 0).any()):
                self.net.set_grads(project_to_cone(gradient, memories, self.gamma))
        self.optimizer.step()
        return loss.item()

    def end_task(self, task: int, data: DataSource) -> None:
        """Refill the memory class-balanced with random examples (drawn from the run's generator)
        of the task's classes."""
        per_class = self.exemplars_per_class(seen_classes(self.context, task))
        keep_first(self.buffer, per_class)
        labels = data.labels
        for label in labels.unique():
            members = (labels == label).nonzero().flatten()
            index = members[torch.randperm(len(members), generator=self.context.generator)[:per_class]]
            self.buffer.add(
                data.read(index, self.device),
                labels=labels[index].to(self.device),
                task_labels=torch.full((len(index),), task, dtype=torch.long, device=self.device),
            )
