"""SLCA: Slow Learner with Classifier Alignment (Zhang et al., ICCV 2023), as the original Mammoth runs it."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mammoth.backbones.base import MammothBackbone
from mammoth.config.value_checks import (
    check_non_negative,
    check_positive_int,
)
from mammoth.datasets.source import DataSource
from mammoth.models.utils import evaluation_mode
from mammoth.errors import ConfigError, MammothError, TrainingError
from mammoth.models.base import ContinualModel
from mammoth.models.registry import register_model

#: The original's fixed values (models/slca_utils/slca.py): backbone lr scale, CA samples per class, covariance shrinkage.
BACKBONE_LR_SCALE = 0.01
CA_SAMPLES_PER_CLASS = 256
COVARIANCE_SHRINKAGE = 1e-4


@register_model("slca")
class SLCA(ContinualModel):
    """SLCA on the features of any backbone (``net(x, returnt="features")``).

    Slow learner: each task trains the backbone at ``lr / 100`` and a new linear head for the
    task's classes at ``lr`` (SGD with ``momentum``, 0.9 as the original's), with the cross-entropy
    over the task's own classes; older heads stay frozen. ``virtual_bs_iterations`` accumulates
    gradients over that many batches, stepping as the original does (after the batches
    ``k, 2k, ...`` of the task: the first step of a task sums ``k + 1`` batches).

    Classifier alignment: after each task the mean and covariance (+1e-4 I) of every class's
    features (task data, no augmentation, eval mode) are kept; after every task but the first,
    all heads are re-trained for ``ca_epochs`` epochs (SGD at ``lr``, cosine schedule) on 256
    features per seen class sampled from each class's Gaussian, its mean scaled by
    ``0.9 + 0.1 (t + 1) / (T + 1)`` (``t`` the class's task, ``T`` the current one), with the
    logits divided by their mean per-task norm and by ``ca_with_logit_norm`` (0: plain logits).
    The aligned classifier scores the test data; the next task trains from the heads as they
    were before the alignment. Every draw (heads, samples, order) comes from the run's generator.
    ``reset_final_norm``: as the original does to its ViT-B/16 (``vit-b-p16``), the final
    LayerNorm of a ViT backbone (the one its token interface's ``final_norm`` applies) starts
    again from weight 1 and bias 0; other backbones have none to reset.
    """

    supports_fp16 = False  # calls backward and steps its optimizer itself (no gradient scaling)

    def __init__(
        self,
        net: MammothBackbone,
        dataset: Any,
        ca_epochs: int = 5,
        ca_with_logit_norm: float = 0.1,
        virtual_bs_iterations: int = 1,
        reset_final_norm: bool = True,
        momentum: float = 0.9,
        optimizer: Literal["sgd"] = "sgd",
        **kwargs: Any,
    ) -> None:
        if optimizer != "sgd":
            raise ConfigError(f"model.optimizer={optimizer!r} is not used by slca; allowed: sgd (the original's)")
        super().__init__(net, dataset, momentum=momentum, optimizer=optimizer, **kwargs)
        if dataset.setting == "domain-il":
            raise ConfigError("slca on a domain-il benchmark; allowed: class-il or task-il benchmarks (one head per task)")
        self.ca_epochs = check_positive_int("model.ca_epochs", ca_epochs) if ca_epochs else 0
        self.ca_with_logit_norm = check_non_negative("model.ca_with_logit_norm", ca_with_logit_norm)
        self.virtual_bs_iterations = check_positive_int("model.virtual_bs_iterations", virtual_bs_iterations)
        self.reset_final_norm = bool(reset_final_norm)
        if self.reset_final_norm:
            reset_layer_norm(final_layer_norm(net))
        self.task_ranges = [dataset.task_classes(task) for task in range(dataset.n_tasks)]
        width, n_classes = int(net.num_features), int(dataset.n_classes)
        self.heads = nn.ModuleList(
            nn.utils.skip_init(nn.Linear, width, len(classes)) for classes in self.task_ranges
        )
        for head in self.heads:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.register_buffer("class_means", torch.zeros(n_classes, width))
        self.register_buffer("class_covariances", torch.zeros(n_classes, width, width))
        self.register_buffer("aligned_weight", torch.zeros(n_classes, width))
        self.register_buffer("aligned_bias", torch.zeros(n_classes))
        self.register_buffer("seen_tasks", torch.zeros((), dtype=torch.int64))
        self.register_buffer("aligned_tasks", torch.zeros((), dtype=torch.int64))
        self.task_iteration = 0

    # ---- the slow learner ----

    def make_optimizer(self) -> torch.optim.Optimizer:
        """SGD over the trainable backbone parameters at ``lr / 100`` and the current task's head at ``lr``."""
        backbone = [parameter for parameter in self.net.parameters() if parameter.requires_grad]
        head = list(self.heads[self.current_task].parameters())
        groups = [{"params": backbone, "lr": self.lr * BACKBONE_LR_SCALE}, {"params": head, "lr": self.lr}]
        return torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def begin_task(self, task: int) -> None:
        """A new head for ``task`` (truncated normal, std 0.02, zero bias), the older heads frozen."""
        self.current_task = task
        head = self.heads[task]
        with torch.no_grad():
            weight = torch.empty(head.weight.shape)
            nn.init.trunc_normal_(weight, std=0.02, generator=self.context.generator)
            head.weight.copy_(weight)
            head.bias.zero_()
        for index, other in enumerate(self.heads):
            other.requires_grad_(index == task)
        self.seen_tasks.fill_(task + 1)
        self.task_iteration = 0
        super().begin_task(task)

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """Cross-entropy over the current task's classes; a step every ``virtual_bs_iterations`` batches."""
        classes = self.task_ranges[self.current_task]
        logits = self.heads[self.current_task](self.net(inputs, returnt="features"))
        loss = self.loss(logits, labels - classes.start)
        if self.task_iteration == 0:
            self.optimizer.zero_grad(set_to_none=True)
        (loss / self.virtual_bs_iterations).backward()
        if self.task_iteration > 0 and self.task_iteration % self.virtual_bs_iterations == 0:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.task_iteration += 1
        return loss.item()

    # ---- classifier alignment ----

    def end_task(self, task: int, data: DataSource) -> None:
        """Keep the task's class statistics; from the second task on, align the classifier."""
        self.store_class_statistics(data)
        if task > 0 and self.ca_epochs:
            self.align_classifier(self.context.generator)

    def store_class_statistics(self, data: DataSource) -> None:
        """The mean and covariance (+1e-4 I) of each class's features over ``data`` (no augmentation,
        eval mode), accumulated in float64 over batches for the classes ``data`` holds."""
        classes = data.labels.unique()
        device, width = self.class_means.device, self.class_means.shape[1]
        position = torch.full((len(self.class_means),), -1, dtype=torch.int64)
        position[classes] = torch.arange(len(classes))
        position = position.to(device)
        sums = torch.zeros(len(classes), width, dtype=torch.float64, device=device)
        products = torch.zeros(len(classes), width, width, dtype=torch.float64, device=device)
        counts = torch.zeros(len(classes), dtype=torch.int64, device=device)
        with evaluation_mode(self.net), torch.no_grad():
            for batch in self.context.batches(data, shuffle=False, augment=False):
                features = self.net(batch.inputs, returnt="features").to(sums)
                local = position[batch.labels.to(device)]
                sums.index_add_(0, local, features)
                counts += torch.bincount(local, minlength=len(classes))
                for index in local.unique():
                    chosen = features[local == index]
                    products[index] += chosen.T @ chosen
        identity = torch.eye(width, dtype=sums.dtype, device=device)
        for index, label in enumerate(classes.tolist()):
            count = int(counts[index])
            if count < 2:
                raise MammothError(f"class {label} has {count} training example; slca needs at least 2 per class for its covariance")
            mean = sums[index] / count
            covariance = (products[index] - count * torch.outer(mean, mean)) / (count - 1)
            self.class_means[label] = mean.to(self.class_means)
            self.class_covariances[label] = (covariance + COVARIANCE_SHRINKAGE * identity).to(self.class_means)

    def align_classifier(self, generator: torch.Generator) -> list[float]:
        """Re-train every seen head on features sampled from the class Gaussians (draws from
        ``generator``); the result scores the test data. Returns each step's loss."""
        seen = int(self.seen_tasks)
        weight = torch.cat([head.weight.detach() for head in self.heads[:seen]]).clone().requires_grad_(True)
        bias = torch.cat([head.bias.detach() for head in self.heads[:seen]]).clone().requires_grad_(True)
        optimizer = torch.optim.SGD([weight, bias], lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.ca_epochs)
        n_classes = len(weight)
        scales = torch.tensor([0.9 + 0.1 * (task + 1) / seen for task in range(seen) for _ in self.task_ranges[task]])
        factors = torch.linalg.cholesky(self.class_covariances[:n_classes])
        means = self.class_means[:n_classes] * scales.to(self.class_means).unsqueeze(1)
        losses = []
        for epoch in range(self.ca_epochs):
            # the original's MultivariateNormal(mean, cov).sample per class: mean + L @ eps, eps drawn class by class
            samples = torch.cat([
                means[label] + torch.randn(CA_SAMPLES_PER_CLASS, weight.shape[1], generator=generator).to(means) @ factors[label].T
                for label in range(n_classes)
            ])
            labels = torch.arange(n_classes, device=samples.device).repeat_interleave(CA_SAMPLES_PER_CLASS)
            order = torch.randperm(len(samples), generator=generator).to(samples.device)
            samples, labels = samples[order].to(weight.device), labels[order].to(weight.device)
            for step, start in enumerate(range(0, len(samples), CA_SAMPLES_PER_CLASS)):
                logits = F.linear(samples[start : start + CA_SAMPLES_PER_CLASS], weight, bias)
                loss = F.cross_entropy(self.normalised_logits(logits, seen), labels[start : start + CA_SAMPLES_PER_CLASS])
                if not math.isfinite(loss.item()):
                    raise TrainingError(f"the loss became {loss.item()} in slca classifier alignment, epoch "
                                        f"{epoch + 1}/{self.ca_epochs}, step {step + 1}; lower model.lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            schedule.step()
        self.aligned_weight[:n_classes] = weight.detach()
        self.aligned_bias[:n_classes] = bias.detach()
        self.aligned_tasks.fill_(seen)
        return losses

    def normalised_logits(self, logits: Tensor, seen: int) -> Tensor:
        """The logits divided by the mean of their per-task norms and by ``ca_with_logit_norm`` (0: unchanged)."""
        if not self.ca_with_logit_norm:
            return logits
        norms = torch.stack([
            logits[:, classes.start : classes.stop].norm(p=2, dim=1) + 1e-7 for classes in self.task_ranges[:seen]
        ], dim=1)
        return logits / norms.mean(dim=1, keepdim=True) / self.ca_with_logit_norm

    # ---- evaluation ----

    def forward(self, x: Tensor) -> Tensor:
        """The heads of the seen tasks (aligned when the classifier has been aligned since); ``-inf`` for unseen classes."""
        features = self.net(x, returnt="features")
        seen = int(self.seen_tasks)
        n_seen = self.task_ranges[seen - 1].stop if seen else 0
        if seen and int(self.aligned_tasks) == seen:
            scores = F.linear(features, self.aligned_weight[:n_seen], self.aligned_bias[:n_seen])
        else:
            scores = torch.cat([head(features) for head in self.heads[:seen]], dim=1) if seen else features[:, :0]
        padding = scores.new_full((len(scores), len(self.class_means) - n_seen), float("-inf"))
        return torch.cat([scores, padding], dim=1)


def final_layer_norm(net: nn.Module) -> nn.LayerNorm | None:
    """The LayerNorm module that a token backbone's ``final_norm`` applies (None for other backbones)."""
    if not getattr(net, "supports_tokens", False):
        return None
    applied: list[nn.Module] = []
    norms = [module for module in net.modules() if isinstance(module, nn.LayerNorm)]
    handles = [norm.register_forward_hook(lambda module, inputs, output: applied.append(module)) for norm in norms]
    parameter = next(net.parameters(), None)
    try:
        with torch.no_grad():
            net.final_norm(torch.zeros(1, 1, int(net.num_features), device=None if parameter is None else parameter.device))
    finally:
        for handle in handles:
            handle.remove()
    return applied[-1] if applied else None


def reset_layer_norm(norm: nn.LayerNorm | None) -> None:
    """Weight 1 and bias 0 (a fresh LayerNorm's parameters); nothing for None."""
    if norm is not None and norm.elementwise_affine:
        with torch.no_grad():
            norm.weight.fill_(1.0)
            if norm.bias is not None:
                norm.bias.zero_()
