"""icarl: Incremental Classifier and Representation Learning (Rebuffi et al., "iCaRL: Incremental
Classifier and Representation Learning", CVPR 2017)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.datasets.source import InMemorySource
from mammoth.models.utils import evaluation_mode
from mammoth.errors import ConfigError
from mammoth.models.base import ReplayModel
from mammoth.models.registry import register_model
from mammoth.models.utils import Frozen, class_bounds, keep_first, require_class_il, squared_norm

if TYPE_CHECKING:
    from mammoth.datasets.source import DataSource


def herding(features: Tensor, count: int) -> Tensor:
    """The indices of ``count`` rows of ``features`` (N, D) chosen by herding, in the order chosen.

    Step ``i`` picks the row that brings the mean of the chosen rows closest (L2) to the mean
    of all rows; a row is chosen at most once.
    """
    features = features.clone()
    target = features.mean(dim=0, keepdim=True)
    running_sum = torch.zeros_like(target)
    chosen = []
    for i in range(min(count, features.shape[0])):
        cost = (target - (features + running_sum) / (i + 1)).norm(p=2, dim=1)
        index = int(cost.argmin())
        chosen.append(index)
        running_sum += features[index : index + 1]
        features[index] += 1e6  # never chosen again
    return torch.tensor(chosen, dtype=torch.long)


def nearest_mean_scores(features: Tensor, class_means: Tensor) -> Tensor:
    """``-||mean_c - f / ||f|| ||**2`` for every row ``f`` of ``features`` and every class mean."""
    features = features / features.norm(dim=1, keepdim=True)
    return -(class_means.unsqueeze(0) - features.unsqueeze(1)).pow(2).sum(dim=2)


@register_model("icarl")
class ICarl(ReplayModel):
    """iCaRL: exemplars chosen by herding on the features, a nearest-mean-of-exemplars classifier,
    and a sigmoid distillation of the previous network.

    Each task trains on its data joined with the stored exemplars (as read from the task's
    source: float in [0, 1]), with binary cross-entropy on the logits: one-hot targets for the new classes, the sigmoid
    of the frozen previous network for the past ones, plus ``opt_wd`` times the squared norm of
    the weights (iCaRL's own weight decay; ``weight_decay`` must stay 0). After the task the
    memory keeps ``buffer_size // seen classes`` (or ``memory_per_class``) exemplars per class (:func:`herding` on the
    L2-normalised ``net(x, returnt="features")`` of the task's data, read in one pass of
    ``context.batches``). :meth:`forward` predicts with the nearest
    class mean (features of the exemplars and of their horizontal flips, normalised), so the
    evaluation scores the nearest-mean classifier. Class-IL datasets only.
    """

    trains_on_memory = True  # each task trains on its data joined with the memory

    supports_distributed = True

    def __init__(self, net: MammothBackbone, dataset: Any, buffer_size: Optional[int] = None, memory_per_class: Optional[int] = None,
                  opt_wd: float = 1e-5, **kwargs: Any) -> None:
        require_class_il("icarl", dataset)
        if kwargs.get("weight_decay"):
            raise ConfigError(
                f"model.weight_decay={kwargs['weight_decay']} has no effect with model=icarl, which has its own; "
                "allowed: weight_decay=0 and model.opt_wd"
            )
        super().__init__(net, dataset, buffer_size=buffer_size, memory_per_class=memory_per_class, **kwargs)
        self.opt_wd = float(opt_wd)
        self.old_net: Optional[Frozen] = None
        self.class_means: Optional[Tensor] = None

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """One step on the binary cross-entropy with distilled targets for the past classes."""
        self.class_means = None
        outputs = self.net(inputs)
        targets = F.one_hot(labels, outputs.shape[1]).to(outputs.dtype)
        if self.old_net is not None and self.current_task > 0:
            past = class_bounds(self.context, self.current_task)[0]
            old = torch.sigmoid(self.old_net(inputs))
            targets = torch.cat([old[:, :past], targets[:, past:]], dim=1)
        loss = F.binary_cross_entropy_with_logits(outputs, targets) + self.opt_wd * squared_norm(self.net)
        return self.step(loss)

    def end_task(self, task: int, data: DataSource) -> None:
        """Freeze a copy of the network; rebuild the memory by herding on the task's data."""
        with evaluation_mode(self.net), torch.no_grad():
            self.old_net = Frozen(self.net)
            self.fill_memory(task, data)
        self.class_means = None

    def features(self, source: DataSource) -> Tensor:
        """``net(test_transform(x), returnt="features")`` of every example of ``source``, in order."""
        return torch.cat([self.net(batch.inputs, returnt="features")
                          for batch in self.context.batches(source, shuffle=False, augment=False)])

    def fill_memory(self, task: int, data: DataSource) -> None:
        """Keep the first :meth:`exemplars_per_class` (``buffer_size // seen``, or ``memory_per_class``)
        exemplars of the old classes; herd as many of each new one."""
        per_class = self.exemplars_per_class(class_bounds(self.context, task)[1])
        keep_first(self.buffer, per_class)
        features = self.features(data)
        features = features / features.norm(dim=1, keepdim=True)
        labels, device = data.labels, self.context.device
        for label in labels.unique():
            members = (labels == label).nonzero().flatten()
            index = members[herding(features[members.to(features.device)], per_class)]
            self.buffer.add(data.read(index, device), labels=labels[index].to(device))

    @torch.no_grad()
    def compute_class_means(self) -> Tensor:
        """One normalised mean feature per class in the memory (rows in increasing class order), over
        the exemplars and their horizontal flips."""
        examples, labels = self.buffer.examples, self.buffer.labels
        means = []
        with evaluation_mode(self.net):
            for label in labels.unique():
                x = examples[labels == label]
                class_labels = labels[labels == label].cpu()
                plain = self.features(InMemorySource(x, class_labels))
                flipped = self.features(InMemorySource(torch.flip(x, dims=[-1]), class_labels))
                mean = ((plain / plain.norm(dim=1, keepdim=True)).mean(0)
                        + (flipped / flipped.norm(dim=1, keepdim=True)).mean(0)) / 2
                means.append(mean / mean.norm())
        return torch.stack(means)

    def forward(self, x: Tensor) -> Tensor:
        """Nearest-mean-of-exemplars scores over all classes (``-inf`` for classes without exemplars)."""
        if self.buffer.is_empty():
            return self.net(x)
        if self.class_means is None:
            self.class_means = self.compute_class_means()
        classes = self.buffer.labels.unique()
        scores = nearest_mean_scores(self.net(x, returnt="features"), self.class_means)
        full = scores.new_full((x.shape[0], self.context.n_classes), float("-inf"))
        full[:, classes] = scores
        return full

    def extra_state(self) -> dict[str, Any]:
        """The exemplars and the frozen previous network."""
        return {**super().extra_state(), "old_net": None if self.old_net is None else self.old_net.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the exemplars and the frozen previous network."""
        super().load_extra_state(state)
        self.old_net = None if state["old_net"] is None else Frozen.restore(self.net, state["old_net"])
        self.class_means = None
