"""lucir: Learning a Unified Classifier Incrementally via Rebalancing (Hou et al., "Learning a
Unified Classifier Incrementally via Rebalancing", CVPR 2019), as the original Mammoth's
models/lucir.py."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mammoth.backbones.base import MammothBackbone
from mammoth.config.value_checks import check_non_negative, check_positive, check_positive_int
from mammoth.datasets.source import Batch, InMemorySource
from mammoth.models.base import ReplayModel
from mammoth.models.icarl import herding
from mammoth.models.registry import register_model
from mammoth.models.utils import (Frozen, bn_track_stats, class_bounds, evaluation_mode, keep_first,
                                  require_class_il, training_mode)

if TYPE_CHECKING:
    from mammoth.datasets.source import DataSource

#: The batch steps of the class-balanced finetuning after which its rate is divided by 10 (the
#: original's ``ft_lr_strat``: a ``MultiStepLR`` stepped after every batch, not every epoch).
FINETUNE_MILESTONES = (10,)


def margin_ranking_loss(labels: Tensor, scores: Tensor, k: int, margin: float, past: int) -> Tensor:
    """LUCIR's inter-class separation (the original's ``lucir_batch_hard_triplet_loss``): for each
    example of a past class (label < ``past``), its ground-truth cosine score must exceed each of the
    ``k`` highest scores among the classes from ``past`` on by ``margin`` (``MarginRankingLoss``,
    averaged over the pairs); 0 when the batch has no past-class example. With fewer than ``k``
    classes from ``past`` on (a last task of one class) it takes them all (the original fails there)."""
    k = min(k, scores.shape[1] - past)
    hard = labels < past
    if not bool(hard.any()):
        return scores.new_zeros(())
    truth = scores.gather(1, labels.view(-1, 1))[hard].repeat(1, k)
    novel = scores[:, past:].topk(k, dim=1)[0][hard]
    return F.margin_ranking_loss(truth.reshape(-1, 1), novel.reshape(-1, 1),
                                 torch.ones_like(truth).reshape(-1, 1), margin=margin)


class CosineClassifier(nn.Module):
    """LUCIR's classifier: ``sigma * cos(features, w_c)`` for every class ``c``, with one weight block
    per task (``weights[t]``: the classes of task ``t``, rows of ``in_features``) and a learned scale
    ``sigma`` (initially 1). Blocks start uniform in ``+-1/sqrt(in_features)`` (the global generator,
    as a layer's initial weights); only the current task's block trains."""

    def __init__(self, in_features: int, task_sizes: list[int]) -> None:
        super().__init__()
        self.in_features = in_features
        self.weights = nn.ParameterList([nn.Parameter(torch.empty(size, in_features)) for size in task_sizes])
        self.sigma = nn.Parameter(torch.ones(1))
        bound = 1.0 / math.sqrt(in_features)
        with torch.no_grad():
            for weight in self.weights:
                weight.uniform_(-bound, bound)
        self.train_block(0)

    def train_block(self, task: int) -> None:
        """Only ``weights[task]`` (and ``sigma``) require gradients."""
        for index, weight in enumerate(self.weights):
            weight.requires_grad_(index == task)

    def cosine(self, features: Tensor) -> Tensor:
        """The cosine similarity of each row of ``features`` (flattened) with each class's weight, block by block."""
        features = F.normalize(features.reshape(len(features), -1), p=2, dim=1)
        return torch.cat([F.linear(features, F.normalize(weight, p=2, dim=1)) for weight in self.weights], dim=1)

    def forward(self, features: Tensor) -> Tensor:
        """``sigma`` times :meth:`cosine`."""
        return self.cosine(features) * self.sigma


@register_model("lucir")
class Lucir(ReplayModel):
    """LUCIR: a cosine classifier on ``net(x, returnt="features")`` (the backbone's own classifier is
    not used, and frozen), with less-forget distillation of the features, a margin ranking loss and a
    class-balanced finetuning of the classifier on the memory after each task.

    Each task trains on its data joined with the memory (as iCaRL, float in [0, 1]). The step's
    loss is ``CE(sigma * cos, labels)`` over all classes, plus from the second task on
    ``lamda * cosine_embedding_loss(features, old features)`` (the frozen previous network's) and
    ``lamda_mr *`` :func:`margin_ranking_loss` (``k_mr``, ``mr_margin``) on the unscaled cosines;
    ``lamda`` is ``lamda_base * sqrt(t - 1)`` in task ``t`` (the original sets it to
    ``sqrt(current task)`` at the end of each task, so it is 0 in the second task; the paper's is
    ``lamda_base * sqrt(old / new classes)``). At the beginning of task ``t > 0`` the new block of
    the classifier is imprinted (``imprint_weights``): the normalised mean of each new class's
    normalised features (training transform, network in eval mode), scaled to the old blocks'
    mean row norm; only that block and ``sigma`` train with the backbone. After each task: a
    frozen copy of the network; the memory keeps ``buffer_size // seen classes`` (or ``memory_per_class``) exemplars per
    class by :func:`~mammoth.models.icarl.herding` on the (unnormalised) features of the task's
    data; then ``fitting_epochs`` epochs of SGD (``lr_finetune``, ``momentum``, ``weight_decay``;
    the rate divided by 10 after 10 batch steps) on the memory with the same loss, training only
    the classifier, BatchNorm with batch statistics and no running updates. Class-IL datasets only.
    """

    trains_on_memory = True  # each task trains on its data joined with the memory

    accepts_regularizer = False  # its class-balanced finetuning steps its optimizer itself

    #: The margin ranking loss averages over the batch's past-class examples, which the ranks' equal
    #: shards split unequally: the mean of their means is not the batch's (measured: weights 0.03 apart).
    supports_distributed = False
    supports_fp16 = False  # the class-balanced finetuning calls backward and steps its optimizer itself

    def __init__(
        self,
        net: MammothBackbone,
        dataset: Any,
        buffer_size: Optional[int] = None,
        memory_per_class: Optional[int] = None,
        lamda_base: float = 5.0,
        lamda_mr: float = 1.0,
        k_mr: int = 2,
        mr_margin: float = 0.5,
        fitting_epochs: int = 20,
        lr_finetune: float = 0.01,
        imprint_weights: bool = True,
        **kwargs: Any,
    ) -> None:
        require_class_il("lucir", dataset)
        super().__init__(net, dataset, buffer_size=buffer_size, memory_per_class=memory_per_class, **kwargs)
        self.lamda_base = check_non_negative("model.lamda_base", lamda_base)
        self.lamda_mr = check_non_negative("model.lamda_mr", lamda_mr)
        self.k_mr = check_positive_int("model.k_mr", k_mr)
        self.mr_margin = check_non_negative("model.mr_margin", mr_margin)
        self.fitting_epochs = int(check_non_negative("model.fitting_epochs", fitting_epochs))
        self.lr_finetune = check_positive("model.lr_finetune", lr_finetune)
        self.imprint_weights = bool(imprint_weights)
        task_sizes = [len(dataset.task_classes(task)) for task in range(dataset.n_tasks)]
        self.head = CosineClassifier(net.num_features, task_sizes)
        # the backbone's own classifier is never used: frozen, so that no trainable parameter goes
        # without a gradient (what the ranks' gradient averaging requires)
        net.classifier.requires_grad_(False)
        self.old_net: Optional[Frozen] = None

    # ---- training ----

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The backbone's trainable parameters (its own ``classifier`` is frozen), the current task's
        block of the cosine classifier and ``sigma``."""
        parameters = [p for p in self.net.parameters() if p.requires_grad]
        parameters += [self.head.weights[self.current_task], self.head.sigma]
        if self.optimizer_name == "adam":
            return torch.optim.Adam(parameters, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(parameters, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def begin_task(self, task: int) -> None:
        """Make ``weights[task]`` the block that trains; for ``task > 0`` imprint it (or, with
        ``imprint_weights=false``, draw it afresh from the run's generator); then the optimizer."""
        self.head.train_block(task)
        if task > 0:
            with torch.no_grad():
                if self.imprint_weights:
                    self.imprint(task)
                else:
                    weight = self.head.weights[task]
                    bound = 1.0 / math.sqrt(weight.shape[1])
                    values = torch.rand(weight.shape, generator=self.context.generator) * (2 * bound) - bound
                    weight.copy_(values)
        super().begin_task(task)

    def imprint(self, task: int) -> None:
        """``weights[task]``: per new class, the normalised mean of its examples' normalised features
        (training transform, eval mode), times the mean row norm of the old blocks (in float64, as the original)."""
        past, seen = class_bounds(self.context, task)
        scale = torch.cat(list(self.head.weights[:task])).norm(dim=1, keepdim=True).mean(dim=0).cpu().double()
        data = self.context.task_data(task)
        weight = self.head.weights[task]
        rows = weight.detach().cpu().clone()
        with evaluation_mode(self.net):
            for label in range(past, seen):
                members = (data.labels == label).nonzero().flatten()
                if len(members) == 0:
                    continue  # a class without examples keeps its initial row
                batches = self.context.batches(data.subset(members), shuffle=False, augment=True)
                features = torch.cat([self.net(batch.inputs, returnt="features").cpu().reshape(len(batch.inputs), -1)
                                      for batch in batches])
                mean = F.normalize(features, p=2, dim=1).mean(dim=0)
                rows[label - past] = (F.normalize(mean, p=2, dim=0) * scale).float()
        weight.copy_(rows.to(weight.device))

    def less_forget_weight(self, task: int) -> float:
        """``lamda_base * sqrt(task - 1)`` (0 up to the second task), the original's schedule."""
        return math.sqrt(max(task - 1, 0)) * self.lamda_base

    def lucir_loss(self, inputs: Tensor, labels: Tensor, backbone_grad: bool = True) -> Tensor:
        """The step's loss (see the class docstring) for the current task; ``backbone_grad=False``
        runs the backbone without gradients (the finetuning trains only the classifier)."""
        task = self.current_task
        with torch.set_grad_enabled(torch.is_grad_enabled() and backbone_grad):
            features = self.net(inputs, returnt="features").float()
        features = features.reshape(len(features), -1)
        cosine = self.head.cosine(features)
        loss = F.cross_entropy(cosine * self.head.sigma, labels)
        if task > 0 and self.old_net is not None:
            old = self.old_net(inputs, returnt="features").reshape(len(features), -1)
            target = torch.ones(len(features), device=features.device)
            loss = loss + F.cosine_embedding_loss(features, old, target) * self.less_forget_weight(task)
            past = class_bounds(self.context, task)[0]
            loss = loss + margin_ranking_loss(labels, cosine, self.k_mr, self.mr_margin, past) * self.lamda_mr
        return loss

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """One step on :meth:`lucir_loss`."""
        return self.step(self.lucir_loss(inputs, labels))

    def end_task(self, task: int, data: DataSource) -> None:
        """Freeze a copy of the network, rebuild the memory by herding, then finetune the classifier on it."""
        with evaluation_mode(self.net), torch.no_grad():
            self.old_net = Frozen(self.net)
            self.fill_memory(task, data)
        if self.fitting_epochs > 0:
            self.finetune_classifier(task)

    def features(self, source: DataSource) -> Tensor:
        """``net(test_transform(x), returnt="features")`` of every example of ``source``, in order."""
        return torch.cat([self.net(batch.inputs, returnt="features").reshape(len(batch.inputs), -1)
                          for batch in self.context.batches(source, shuffle=False, augment=False)])

    def fill_memory(self, task: int, data: DataSource) -> None:
        """Keep the first :meth:`exemplars_per_class` (``buffer_size // seen``, or ``memory_per_class``) exemplars of the old classes; herd as many of each
        new one on the unnormalised features (the original's ``fill_buffer(use_herding=True)``)."""
        per_class = self.exemplars_per_class(class_bounds(self.context, task)[1])
        keep_first(self.buffer, per_class)
        features = self.features(data)
        labels, device = data.labels, self.context.device
        for label in labels.unique():
            members = (labels == label).nonzero().flatten()
            index = members[herding(features[members.to(features.device)], per_class)]
            self.buffer.add(data.read(index, device), labels=labels[index].to(device))

    def finetune_classifier(self, task: int) -> float:
        """``fitting_epochs`` epochs of SGD on the cosine classifier over the memory (through
        ``context.fit``), BatchNorm on batch statistics without updating its running ones; returns
        the last epoch's mean loss."""
        optimizer = torch.optim.SGD(self.head.parameters(), lr=self.lr_finetune, momentum=self.momentum,
                                    weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(FINETUNE_MILESTONES), gamma=0.1)
        memory = InMemorySource(self.buffer.examples.cpu(), self.buffer.labels.cpu())

        def step(batch: Batch) -> float:
            optimizer.zero_grad()
            loss = self.lucir_loss(batch.inputs, batch.labels, backbone_grad=False)
            loss.backward()
            optimizer.step()
            scheduler.step()
            return loss.item()

        with training_mode(self.net, True), bn_track_stats(self.net, False):
            return self.context.fit(step, memory, self.fitting_epochs,
                                    f"lucir class-balanced finetuning, task {task + 1}/{self.context.n_tasks}")

    def forward(self, x: Tensor) -> Tensor:
        """The cosine classifier's scores (``sigma * cos``) over all classes."""
        return self.head(self.net(x, returnt="features"))

    # ---- checkpoints ----

    def extra_state(self) -> dict[str, Any]:
        """The memory and the frozen previous network."""
        return {**super().extra_state(), "old_net": None if self.old_net is None else self.old_net.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the memory and the frozen previous network."""
        super().load_extra_state(state)
        self.old_net = None if state["old_net"] is None else Frozen.restore(self.net, state["old_net"])
