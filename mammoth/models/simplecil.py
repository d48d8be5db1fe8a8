"""SimpleCIL: nearest class prototype on the features of a frozen (pretrained) backbone."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.datasets.source import DataSource, empty_source
from mammoth.models.utils import evaluation_mode
from mammoth.models.base import ContinualModel
from mammoth.models.registry import register_model


@register_model("simplecil")
class SimpleCIL(ContinualModel):
    """SimpleCIL (Zhou et al., IJCV 2024; LAMDA-PILOT's ``simplecil``, which the original Mammoth
    does not have): the backbone is never trained. After each task, the mean feature of each class
    over the task's training data (no augmentation, eval mode) becomes, or is averaged into, the
    class's prototype; the scores are the cosine similarities between an example's features and
    the prototypes (``-inf`` for classes without one). That is PILOT's ``replace_fc`` (a class's
    prototype is its mean feature) scored by its cosine head (``sigma`` stays 1); in a class-IL run
    each class has one task, so averaging and PILOT's overwriting agree. It is the reference a
    pretrained-backbone method has to beat; use it with pretrained weights, e.g.
    ``experiment=simplecil-seq-cifar100-224`` (PILOT's ``vit_base_patch16_224``, batches of 128).
    """

    def __init__(self, net: MammothBackbone, dataset: Any, **kwargs: Any) -> None:
        super().__init__(net, dataset, **kwargs)
        n_classes = int(dataset.n_classes)
        self.register_buffer("feature_sums", torch.zeros(n_classes, int(net.num_features), dtype=torch.float64))
        self.register_buffer("feature_counts", torch.zeros(n_classes, dtype=torch.int64))

    def training_data(self, task: int, data: DataSource) -> DataSource:
        """Nothing: the backbone is not trained (the prototypes come from :meth:`end_task`)."""
        return empty_source(data)

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """Never called: SimpleCIL has no training step."""
        raise NotImplementedError("simplecil trains nothing; its prototypes are computed in end_task")

    def end_task(self, task: int, data: DataSource) -> None:
        """Add the features of ``data`` (normalised, not augmented) to their classes' prototypes."""
        sums = torch.zeros_like(self.feature_sums)
        counts = torch.zeros_like(self.feature_counts)
        with evaluation_mode(self.net), torch.no_grad():
            for batch in self.context.batches(data, shuffle=False, augment=False):
                features = self.net(batch.inputs, returnt="features").to(sums.dtype)
                sums.index_add_(0, batch.labels, features)
                counts += torch.bincount(batch.labels, minlength=len(counts))
        self.feature_sums += sums
        self.feature_counts += counts

    @property
    def prototypes(self) -> Tensor:
        """The mean feature of each class (zeros for classes not seen yet)."""
        return (self.feature_sums / self.feature_counts.clamp(min=1).unsqueeze(1)).to(torch.float32)

    def forward(self, x: Tensor) -> Tensor:
        """Cosine similarity of the features of ``x`` to every prototype; ``-inf`` where a class has none."""
        features = F.normalize(self.net(x, returnt="features").float(), dim=1)
        scores = features @ F.normalize(self.prototypes, dim=1).T
        return scores.masked_fill(self.feature_counts == 0, float("-inf"))
