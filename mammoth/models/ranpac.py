"""RanPAC: Random Projections and Pre-trained Models for Continual Learning (McDonnell et al., NeurIPS 2023)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mammoth.backbones.base import MammothBackbone
from mammoth.config.value_checks import check_positive_int
from mammoth.datasets.source import DataSource, empty_source
from mammoth.models.utils import evaluation_mode
from mammoth.errors import ConfigError
from mammoth.models.adapters import (
    MlpAdapter,
    adapted_blocks,
    attach_mlp_adapters,
    block_width,
)
from mammoth.models.base import ContinualModel
from mammoth.models.registry import register_model

#: The ridge values the original tries (``10**-8 .. 10**8``), and the share of a task's data that fits them.
RIDGES = tuple(10.0**exponent for exponent in range(-8, 9))
RIDGE_FIT_SHARE = 0.8


class CosineHead(nn.Module):
    """``sigma * cos(features, weight)``: the first session's classifier (the original's CosineLinear)."""

    def __init__(self, width: int, n_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_classes, width))
        self.sigma = nn.Parameter(torch.ones(1))

    def reset(self, generator: torch.Generator) -> None:
        """Weights uniform in ``+-1/sqrt(width)``, ``sigma = 1`` (drawn from ``generator``)."""
        bound = 1.0 / math.sqrt(self.weight.shape[1])
        with torch.no_grad():
            self.weight.copy_(torch.rand(self.weight.shape, generator=generator) * 2 * bound - bound)
            self.sigma.fill_(1.0)

    def forward(self, features: Tensor) -> Tensor:
        """The scaled cosine similarities, ``(batch, n_classes)``."""
        return self.sigma * F.linear(F.normalize(features, dim=1), F.normalize(self.weight, dim=1))


@register_model("ranpac")
class RanPAC(ContinualModel):
    """RanPAC as the original Mammoth runs it.

    First session (task 0): parallel adapters of ``adapter_size`` hidden units (AdaptFormer,
    scale 0.1, dropout 0.1; :mod:`mammoth.models.adapters`) in every transformer block and a
    cosine classifier are trained (SGD, ``momentum`` 0.9, ``weight_decay`` 5e-4, the original's
    defaults); the backbone itself stays frozen, and so do the adapters after the first task.
    ``adapter_size=0`` skips the first session, and then any backbone serves.

    After each task (no training from the second on): the features of the task's data (no
    augmentation, in an order drawn from the run's generator) go through a fixed random
    projection ``W`` (``features x rp_size``, standard normal, drawn once from the run's
    generator) and a ReLU, ``h``; the Gram matrix ``G += h^T h`` and ``Q += h^T y`` (one-hot
    labels) accumulate over tasks; the ridge ``lambda`` in ``10^-8..10^8`` with the least squared
    error on the task's last 20% when fitted on its first 80% is chosen; the classifier is
    ``(G + lambda I)^-1 Q``. Scores: ``relu(features @ W) @ Wo^T`` (``-inf`` for unseen classes).
    """

    #: With its default adapters it needs a ViT's blocks (refused when built otherwise); ``adapter_size=0`` takes any backbone.
    requires_tokens: ClassVar[bool] = True

    def __init__(
        self,
        net: MammothBackbone,
        dataset: Any,
        rp_size: int = 10000,
        adapter_size: int = 64,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.0005,
        **kwargs: Any,
    ) -> None:
        super().__init__(net, dataset, lr=lr, momentum=momentum, weight_decay=weight_decay, **kwargs)
        self.rp_size = check_positive_int("model.rp_size", rp_size)
        if isinstance(adapter_size, bool) or not isinstance(adapter_size, int) or adapter_size < 0:
            raise ConfigError(f"model.adapter_size={adapter_size!r} is not a size; allowed: 0 (no adapters) or a positive integer")
        width, n_classes = int(net.num_features), int(dataset.n_classes)
        self.first_classes = dataset.task_classes(0).stop
        self.seen_per_task = [dataset.task_classes(task).stop for task in range(dataset.n_tasks)]
        blocks = adapted_blocks(net) if adapter_size else []
        self.adapters = nn.ModuleList(MlpAdapter(block_width(norm, width), adapter_size) for _, norm in blocks)
        self.hooks = attach_mlp_adapters(net, self.adapters) if adapter_size else []
        self.cosine_head = CosineHead(width, self.first_classes)
        self.register_buffer("random_projection", torch.zeros(width, self.rp_size))
        self.register_buffer("gram", torch.zeros(self.rp_size, self.rp_size))
        self.register_buffer("label_projection", torch.zeros(self.rp_size, n_classes))
        self.register_buffer("classifier", torch.zeros(n_classes, self.rp_size))
        self.register_buffer("ridge", torch.zeros(()))
        self.register_buffer("seen_classes", torch.zeros((), dtype=torch.int64))
        self.register_buffer("projected", torch.zeros((), dtype=torch.bool))

    # ---- the first session ----

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The base optimizer over the adapters and the cosine classifier (the backbone stays frozen)."""
        parameters = [*self.adapters.parameters(), *self.cosine_head.parameters()]
        if self.optimizer_name == "adam":
            return torch.optim.Adam(parameters, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(parameters, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def begin_task(self, task: int) -> None:
        """Task 0 with adapters: fresh adapters and cosine classifier (from the run's generator), the
        backbone frozen, an optimizer over them; later tasks train nothing.

        With adapters, each task sets which weights are frozen (the backbone always, the adapters
        after the first task), so a run resumed after the first task has the flags of an
        uninterrupted one: ``requires_grad`` is no checkpoint state, and it changes float results
        even under ``no_grad`` (torch's matmul picks its kernel for 3-D inputs by it)."""
        self.current_task = task
        self.seen_classes.fill_(self.seen_per_task[task])
        if not len(self.adapters):
            return
        self.net.requires_grad_(False)
        self.adapters.requires_grad_(task == 0)
        if task == 0:
            for adapter in self.adapters:
                adapter.reset(self.context.generator)
            self.cosine_head.reset(self.context.generator)
            super().begin_task(task)

    def training_data(self, task: int, data: DataSource) -> DataSource:
        """The first task's data when there are adapters to train; nothing otherwise."""
        return data if task == 0 and len(self.adapters) else empty_source(data)

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """Cross-entropy of the cosine classifier on the adapted features; one SGD step."""
        return self.step(self.loss(self.cosine_head(self.net(inputs, returnt="features")), labels))

    # ---- the random-projection classifier ----

    def end_task(self, task: int, data: DataSource) -> None:
        """After the first task: adapters frozen, the random projection drawn. Then the task's
        projected features update G and Q, the ridge is chosen and the classifier solved."""
        if task == 0:
            self.adapters.requires_grad_(False)
            self.random_projection.copy_(torch.randn(self.random_projection.shape, generator=self.context.generator))
        features, labels = self.task_features(data)
        projected = F.relu(features @ self.random_projection)
        targets = F.one_hot(labels, len(self.classifier)).to(projected.dtype)
        self.label_projection += projected.T @ targets
        self.gram += projected.T @ projected
        self.ridge.fill_(select_ridge(projected, targets))
        self.classifier.copy_(solve_ridge(self.gram, self.label_projection, float(self.ridge)))
        self.projected.fill_(True)

    def task_features(self, data: DataSource) -> tuple[Tensor, Tensor]:
        """The features (eval mode, no augmentation) and labels of ``data``, in an order drawn from the run's generator."""
        features, labels = [], []
        with evaluation_mode(self), torch.no_grad():  # the whole model: the adapters' dropout too
            for batch in self.context.batches(data, shuffle=True, augment=False):
                features.append(self.net(batch.inputs, returnt="features").float())
                labels.append(batch.labels)
        return torch.cat(features).to(self.gram.device), torch.cat(labels).to(self.gram.device)

    # ---- evaluation ----

    def forward(self, x: Tensor) -> Tensor:
        """Random-projection scores once a task has ended (the cosine classifier before); ``-inf`` for unseen classes."""
        features = self.net(x, returnt="features").float()
        seen = int(self.seen_classes)
        if bool(self.projected):
            scores = F.relu(features @ self.random_projection) @ self.classifier[:seen].T
        else:
            scores = self.cosine_head(features)[:, :seen]
        padding = scores.new_full((len(scores), len(self.classifier) - scores.shape[1]), float("-inf"))
        return torch.cat([scores, padding], dim=1)


def solve_ridge(gram: Tensor, label_projection: Tensor, ridge: float) -> Tensor:
    """``((G + ridge I)^-1 Q)^T``: the classifier, ``(classes, projection)``."""
    identity = torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram + ridge * identity, label_projection).T


def select_ridge(projected: Tensor, targets: Tensor) -> float:
    """The ridge of :data:`RIDGES` whose classifier fitted on the first 80% of ``projected`` has the
    least mean squared error on the rest (the original's ``optimise_ridge_parameter``)."""
    fit = int(len(projected) * RIDGE_FIT_SHARE)
    gram = projected[:fit].T @ projected[:fit]
    label_projection = projected[:fit].T @ targets[:fit]
    errors = [F.mse_loss(projected[fit:] @ solve_ridge(gram, label_projection, ridge).T, targets[fit:]).item()
              for ridge in RIDGES]
    return RIDGES[min(range(len(RIDGES)), key=errors.__getitem__)]
