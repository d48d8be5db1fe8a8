"""podnet: PODNet (Douillard et al., "PODNet: Pooled Outputs Distillation for Small-Tasks
Incremental Learning", ECCV 2020), as PyCIL runs it (models/podnet.py)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mammoth.backbones.base import MammothBackbone
from mammoth.config.value_checks import check_non_negative, check_positive, check_positive_int
from mammoth.datasets.source import Batch, InMemorySource
from mammoth.models.base import ReplayModel
from mammoth.models.icarl import ICarl, herding
from mammoth.models.registry import register_model
from mammoth.models.utils import Frozen, class_bounds, evaluation_mode, require_class_il, training_mode

if TYPE_CHECKING:
    from mammoth.datasets.source import DataSource


def pod_spatial_loss(maps: list[Tensor], old_maps: list[Tensor]) -> Tensor:
    """POD-spatial (PyCIL's ``pod_spatial_loss``): per stage, the squared activations summed over
    the width and over the height (``(B, C, H, W)``; an output of fewer dimensions is read as
    ``(B, C, H, 1)`` or ``(B, C, 1, 1)``), concatenated, L2-normalised, and the L2 distance to the
    old network's, averaged over the batch; the mean over the stages (0 without stages)."""
    if not maps:
        return torch.zeros(())
    loss = maps[0].new_zeros(())
    for new, old in zip(maps, old_maps, strict=True):
        new, old = as_maps(new).pow(2), as_maps(old).pow(2)
        new = torch.cat([new.sum(dim=3).flatten(1), new.sum(dim=2).flatten(1)], dim=-1)
        old = torch.cat([old.sum(dim=3).flatten(1), old.sum(dim=2).flatten(1)], dim=-1)
        difference = F.normalize(old, dim=1, p=2) - F.normalize(new, dim=1, p=2)
        loss = loss + torch.linalg.vector_norm(difference, dim=-1).mean()
    return loss / len(maps)


def as_maps(x: Tensor) -> Tensor:
    """``x`` as ``(B, C, H, W)``: a 2-D output as ``(B, C, 1, 1)``, a 3-D one as ``(B, C, H, 1)``."""
    while x.ndim < 4:
        x = x.unsqueeze(-1)
    return x.flatten(3) if x.ndim > 4 else x


def nca_loss(similarities: Tensor, targets: Tensor, margin: float = 0.6, scale: float = 1.0,
             margin_on_target: bool = False) -> Tensor:
    """PyCIL's ``nca`` (``exclude_pos_denominator``): ``s = scale * (similarities - margin)``, shifted
    by its row maximum; the loss is ``-(s_y - log(1 + sum_{j != y} exp(s_j)))`` (the target's entry
    counts as ``exp(0)``), batch mean. PyCIL's code takes the margin from every class, where it
    cancels in the shift; ``margin_on_target`` takes it from the target's similarity only (the
    paper's, and Douillard et al.'s code)."""
    rows = torch.arange(len(similarities), device=similarities.device)
    if margin_on_target:
        margins = torch.zeros_like(similarities)
        margins[rows, targets] = margin
        similarities = scale * (similarities - margins)
    else:
        similarities = scale * (similarities - margin)
    similarities = similarities - similarities.max(1)[0].view(-1, 1)
    disable_pos = torch.zeros_like(similarities)
    disable_pos[rows, targets] = similarities[rows, targets]
    numerator = similarities[rows, targets]
    denominator = similarities - disable_pos
    return -(numerator - torch.log(torch.exp(denominator).sum(-1))).mean()


class LocalSimilarityClassifier(nn.Module):
    """PODNet's LSC (PyCIL's ``CosineLinear`` / ``SplitCosineLinear`` with ``nb_proxy`` proxies and
    ``to_reduce``): ``nb_proxy`` proxies per class, one block of rows per task; a class's score is
    the softmax-weighted mean of its proxies' cosine similarities to the features, times ``sigma``
    (a learned scale, 1 at first)."""

    def __init__(self, num_features: int, task_sizes: list[int], nb_proxy: int) -> None:
        super().__init__()
        self.nb_proxy = nb_proxy
        self.proxies = nn.ParameterList([nn.Parameter(torch.zeros(size * nb_proxy, num_features)) for size in task_sizes])
        self.sigma = nn.Parameter(torch.ones(1))

    def reset_task(self, task: int, generator: torch.Generator) -> None:
        """The proxies of ``task`` start as PyCIL's: uniform in +-1/sqrt(features), from ``generator``."""
        proxies = self.proxies[task]
        bound = 1.0 / math.sqrt(proxies.shape[1])
        values = torch.rand(proxies.shape, generator=generator, dtype=torch.float32)
        with torch.no_grad():
            proxies.copy_((values * 2 * bound - bound).to(proxies.device, proxies.dtype))

    def forward(self, features: Tensor, tasks: int) -> Tensor:
        """The scores of the classes of the first ``tasks`` tasks, ``(batch, classes)``."""
        proxies = torch.cat(list(self.proxies[:tasks]))
        similarities = F.linear(F.normalize(features, p=2, dim=1), F.normalize(proxies, p=2, dim=1))
        per_class = similarities.view(len(features), -1, self.nb_proxy)
        reduced = (F.softmax(per_class, dim=-1) * per_class).sum(-1)
        return self.sigma * reduced


@register_model("podnet")
class PODNet(ReplayModel):
    """PODNet: a local-similarity classifier trained with the NCA loss, pooled-output distillation
    of every stage and of the features from the previous network, and a class-balanced finetuning.

    The backbone's stages come from ``net(x, returnt="full")``: its items after the first stage
    (the stem) and before the features are the maps POD-spatial distils (a ResNet's layer1 to
    layer4); the features go to the method's own :class:`LocalSimilarityClassifier` (``nb_proxy``
    proxies per class; the backbone's ``classifier`` is not used). ``margin_on_target`` takes the NCA
    margin from the target's similarity only (the paper's); PyCIL's code, the default, takes it from
    every class, where it cancels. A task's proxies start afresh
    from the run's generator; from the second task the old classes' proxies are frozen (PyCIL's
    ``fc1`` at learning rate 0). Loss: ``nca_loss`` on the scores of the seen classes, plus, from
    the second task, with ``factor = sqrt(seen / new classes)``, ``factor * lambda_f_base`` times
    the cosine embedding loss of the features to the old network's and ``factor * lambda_c_base``
    times :func:`pod_spatial_loss` of the maps. After a later task, :meth:`exemplars_per_class` of the old classes (``buffer_size // old classes``)
    exemplars of every class (the memory's and herded ones of the new classes) finetune the whole
    network but the old proxies for ``ft_epochs`` epochs at ``ft_lr`` with the same loss (cosine
    schedule; PyCIL's class-balanced finetuning); then iCaRL's herding memory is rebuilt
    (``buffer_size // seen`` (or ``memory_per_class``) per class) and the network frozen as the next teacher. Class-IL only.
    """

    trains_on_memory = True  # each task trains on its data joined with the memory

    accepts_regularizer = False  # not checked with a regulariser (its finetuning steps too)

    def __init__(
        self,
        net: MammothBackbone,
        dataset: Any,
        buffer_size: Optional[int] = None,
        memory_per_class: Optional[int] = None,
        nb_proxy: int = 10,
        lambda_c_base: float = 5.0,
        lambda_f_base: float = 1.0,
        nca_margin: float = 0.6,
        nca_scale: float = 1.0,
        margin_on_target: bool = False,
        ft_epochs: int = 20,
        ft_lr: float = 0.005,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0005,
        lr_scheduler: Literal["multisteplr", "cosine"] = "cosine",
        lr_milestones: Optional[tuple[int, ...]] = (),
        **kwargs: Any,
    ) -> None:
        require_class_il("podnet", dataset)
        super().__init__(net, dataset, buffer_size=buffer_size, memory_per_class=memory_per_class, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         lr_scheduler=lr_scheduler, lr_milestones=lr_milestones, **kwargs)
        self.nb_proxy = check_positive_int("model.nb_proxy", nb_proxy)
        self.lambda_c_base = check_non_negative("model.lambda_c_base", lambda_c_base)
        self.lambda_f_base = check_non_negative("model.lambda_f_base", lambda_f_base)
        self.nca_margin = float(nca_margin)
        self.nca_scale = check_positive("model.nca_scale", nca_scale)
        self.margin_on_target = bool(margin_on_target)
        self.ft_epochs = int(check_non_negative("model.ft_epochs", ft_epochs))
        self.ft_lr = check_positive("model.ft_lr", ft_lr)
        task_sizes = [len(dataset.task_classes(task)) for task in range(dataset.n_tasks)]
        self.lsc = LocalSimilarityClassifier(int(net.num_features), task_sizes, self.nb_proxy)
        self.old_net: Optional[Frozen] = None

    # ---- the optimizer: the backbone (but its classifier), the task's proxies and sigma ----

    def trained_parameters(self) -> list[nn.Parameter]:
        """What a task trains: the backbone's trainable parameters but its ``classifier``'s, the
        current task's proxies and ``sigma`` (the old proxies stay: PyCIL's ``fc1`` at lr 0)."""
        skipped = {id(parameter) for parameter in self.net.classifier.parameters()}
        backbone = [p for p in self.net.parameters() if p.requires_grad and id(p) not in skipped]
        return [*backbone, self.lsc.proxies[self.current_task], self.lsc.sigma]

    def optimizer_at(self, lr: float) -> torch.optim.Optimizer:
        """The configured optimizer over :meth:`trained_parameters` at ``lr``."""
        if self.optimizer_name == "adam":
            return torch.optim.Adam(self.trained_parameters(), lr=lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(self.trained_parameters(), lr=lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The task's optimizer at ``lr`` (SGD, momentum 0.9, weight decay 5e-4 by default; PyCIL's)."""
        return self.optimizer_at(self.lr)

    def begin_task(self, task: int) -> None:
        """The task's proxies start afresh; its optimizer and (cosine) schedule."""
        self.lsc.reset_task(task, self.context.generator)
        super().begin_task(task)

    # ---- the loss ----

    def scores(self, features: Tensor) -> Tensor:
        """The LSC's scores of the classes seen up to the current task."""
        return self.lsc(features, self.current_task + 1)

    def losses(self, inputs: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """``nca``, ``flat`` and ``spatial`` (both 0 in the first task) on a batch."""
        outputs = self.net(inputs, returnt="full")
        maps, features = outputs[1:-2], outputs[-2]
        losses = {"nca": nca_loss(self.scores(features), labels, self.nca_margin, self.nca_scale,
                                    self.margin_on_target)}
        past, seen = class_bounds(self.context, self.current_task)
        if self.old_net is None or past == 0:
            return {**losses, "flat": features.new_zeros(()), "spatial": features.new_zeros(())}
        factor = math.sqrt(seen / (seen - past))
        old = self.old_net(inputs, returnt="full")
        ones = torch.ones(len(inputs), device=inputs.device)
        losses["flat"] = F.cosine_embedding_loss(features, old[-2], ones) * factor * self.lambda_f_base
        losses["spatial"] = pod_spatial_loss(maps, old[1:-2]).to(features.device) * factor * self.lambda_c_base
        return losses

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """One step on NCA + POD-flat + POD-spatial."""
        return self.step(sum(self.losses(inputs, labels).values()))

    # ---- after the task: class-balanced finetuning, memory, teacher ----

    def end_task(self, task: int, data: DataSource) -> None:
        """From the second task, finetune on a class-balanced set; rebuild the memory (iCaRL's
        herding); freeze a copy of the network as the next task's teacher."""
        past = class_bounds(self.context, task)[0]
        if past > 0 and self.ft_epochs > 0:
            self.finetune(self.balanced_set(data, self.exemplars_per_class(past)))
        with evaluation_mode(self.net), torch.no_grad():
            self.fill_memory(task, data)
            self.old_net = Frozen(self.net)

    def balanced_set(self, data: DataSource, per_class: int) -> DataSource:
        """The first ``per_class`` exemplars of each old class in the memory and ``per_class`` of each
        new class of ``data`` herded with the current network (PyCIL's finetuning set)."""
        labels = self.buffer.labels
        keep = torch.cat([(labels == label).nonzero().flatten()[:per_class] for label in labels.unique()])
        examples, kept = [self.buffer.examples[keep].cpu()], [labels[keep].cpu()]
        with evaluation_mode(self.net), torch.no_grad():
            features = self.features(data)
        features = features / features.norm(dim=1, keepdim=True)
        for label in data.labels.unique():
            members = (data.labels == label).nonzero().flatten()
            index = members[herding(features[members.to(features.device)], per_class)]
            examples.append(data.read(index, "cpu")), kept.append(data.labels[index])
        return InMemorySource(torch.cat(examples), torch.cat(kept))

    def finetune(self, source: DataSource) -> None:
        """``ft_epochs`` epochs over ``source`` at ``ft_lr`` (cosine to 0) with the task's loss; the
        old proxies stay."""
        self.optimizer = self.optimizer_at(self.ft_lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.ft_epochs)

        def step(batch: Batch) -> float:
            return self.observe(batch.inputs, batch.labels, batch.not_aug_inputs)

        with training_mode(self.net, True):
            self.context.fit(step, source, self.ft_epochs, f"podnet finetuning, task {self.current_task + 1}",
                             end_epoch=self.end_epoch)

    # iCaRL's herding memory, shared (exemplars_per_class: buffer_size // seen, or memory_per_class)
    features = ICarl.features
    fill_memory = ICarl.fill_memory

    def forward(self, x: Tensor) -> Tensor:
        """The LSC's scores of the seen classes (``-inf`` for the others)."""
        scores = self.scores(self.net(x, returnt="features"))
        full = scores.new_full((x.shape[0], self.context.n_classes), float("-inf"))
        full[:, : scores.shape[1]] = scores
        return full

    def extra_state(self) -> dict[str, Any]:
        """The exemplars and the frozen previous network."""
        return {**super().extra_state(), "old_net": None if self.old_net is None else self.old_net.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the exemplars and the frozen previous network."""
        super().load_extra_state(state)
        self.old_net = None if state["old_net"] is None else Frozen.restore(self.net, state["old_net"])
