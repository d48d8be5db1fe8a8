"""rpc: Regular Polytope Classifier (Pernici et al., "Class-incremental Learning with Pre-allocated
Fixed Classifiers", ICPR 2020), as the original Mammoth's ``rpc``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.models.base import ReplayModel
from mammoth.models.registry import register_model
from mammoth.models.utils import keep_first, require_class_il

if TYPE_CHECKING:
    from mammoth.datasets.source import DataSource


def dsimplex(num_classes: int) -> Tensor:
    """The ``(num_classes - 1, num_classes)`` vertices of a regular simplex centred at 0, unit-norm
    columns (float64): the original's ``dsimplex`` (Pernici et al.'s ``simplex_coordinates2``)."""
    m = num_classes - 1
    x = torch.zeros(m, m + 1, dtype=torch.float64)
    x[:, :m] = torch.eye(m, dtype=torch.float64)
    x[:, m] = (1.0 - math.sqrt(1.0 + m)) / m
    x -= x.sum(1, keepdim=True) / (m + 1)
    return x / x[:, 0].pow(2).sum().sqrt()


@register_model("rpc")
class RPC(ReplayModel):
    """RPC: predictions are the network's first ``n_classes - 1`` logits projected on the fixed
    vertices of a regular simplex (:func:`dsimplex`), ``forward(x) = net(x)[:, :-1] @ simplex``.

    Training, as in the original, is a cross-entropy on the network's own logits over the batch
    joined by a replay minibatch (augmented). The memory is class-balanced and written at the end
    of each task, as the original's: every stored class is cut to its first ``buffer_size //
    classes_before_t`` examples (``classes_before_t`` the classes of the tasks before the one just
    trained, ``t``: the original's count, so after the second task the first task's classes keep
    the whole memory and the second's get none), then the free slots are shared among the task's
    classes (the remainder to classes drawn at random) and filled in a shuffled pass over its
    non-augmented examples. Class-IL datasets only.
    """

    accepts_regularizer = False  # not checked with a regulariser
    supports_memory_per_class = False  # a class-balanced memory of buffer_size, as the original

    #: Not checked against one process on several.
    supports_distributed = False

    def __init__(self, net: MammothBackbone, dataset: Any, buffer_size: int, **kwargs: Any) -> None:
        require_class_il("rpc", dataset)
        super().__init__(net, dataset, buffer_size=buffer_size, **kwargs)
        self.register_buffer("simplex", dsimplex(dataset.n_classes).float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """The scores of the classes: the first ``n_classes - 1`` logits on the simplex's vertices."""
        return self.net(x)[:, :-1] @ self.simplex

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """One cross-entropy step on the batch and a replay minibatch; returns the loss."""
        replay = self.replay_batch(inputs.shape[0], inputs.device)
        if replay is not None:
            inputs, labels = torch.cat([inputs, replay.examples]), torch.cat([labels, replay.labels])
        return self.step(self.loss(self.net(inputs), labels))

    @torch.no_grad()
    def end_task(self, task: int, data: "DataSource") -> None:
        """Cut the stored classes, then fill the free slots with this task's examples, class-balanced."""
        classes = self.context.task_classes(task)
        if task > 0:
            keep_first(self.buffer, self.buffer_size // classes.start)
        free = self.buffer_size - self.buffer.num_seen
        per_class = torch.full((len(classes),), free // len(classes), dtype=torch.long)
        extra = torch.randperm(len(classes), generator=self.context.generator)[: free - per_class.sum()]
        per_class[extra] += 1
        for batch in self.context.batches(data, augment=False):
            if not per_class.any():
                break
            taken = []
            for row, label in enumerate(batch.labels.tolist()):
                position = label - classes.start
                if per_class[position] > 0:
                    taken.append(row)
                    per_class[position] -= 1
            if taken:
                rows = torch.tensor(taken, device=batch.labels.device)
                self.buffer.add(batch.not_aug_inputs[rows], labels=batch.labels[rows])
