"""er_ace: Experience Replay with Asymmetric Cross-Entropy (Caccia et al., "New Insights on Reducing
Abrupt Representation Change in Online Continual Learning", ICLR 2022)."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from mammoth.backbones.base import MammothBackbone
from mammoth.errors import ConfigError
from mammoth.models.base import ReplayModel
from mammoth.models.registry import register_model
from mammoth.models.utils import require_class_il

#: The value masked logits get (the original's ``-1e9``).
MASKED_LOGIT = -1e9


class CosineClassifier(nn.Module):
    """``scale * cos(x, w_c)`` for every class ``c``: the original ER-ACE code's classifier
    (a bias-free linear layer on L2-normalised features and weights, ``scale`` 10)."""

    def __init__(self, in_features: int, out_features: int, scale: float = 10.0) -> None:
        super().__init__()
        self.L = nn.Linear(in_features, out_features, bias=False)
        self.in_features, self.out_features, self.scale = in_features, out_features, scale

    def forward(self, x: Tensor) -> Tensor:
        """The scaled cosine similarities (N, out_features); norms get ``+1e-5`` as in the original."""
        x = x / (x.norm(p=2, dim=1, keepdim=True) + 1e-5)
        weight = self.L.weight / (self.L.weight.norm(p=2, dim=1, keepdim=True) + 1e-5)
        return self.scale * x @ weight.t()


def ace_mask(logits: Tensor, present: Tensor, seen: Tensor) -> Tensor:
    """A 0/1 mask like ``logits``: 1 on the classes ``present`` in the batch and on every class from
    the largest ``seen`` one onwards (the original's ``mask[:, seen.max():] = 1``), 0 elsewhere."""
    mask = torch.zeros_like(logits)
    mask[:, present] = 1
    mask[:, int(seen.max()) :] = 1
    return mask


@register_model("er_ace")
class ErACE(ReplayModel):
    """ER-ACE: the incoming batch's cross-entropy only competes among the classes present in it
    (and the not yet seen ones), so new classes do not push the old ones' logits down; replayed
    examples get a plain cross-entropy over all classes.

    From the second task on (from the first with ``task_free``) the incoming batch's logits of
    the other seen classes are masked (:func:`ace_mask`) before the cross-entropy, and a replay
    minibatch adds its cross-entropy. ``use_custom_classifier`` replaces ``net.classifier``
    (a ``nn.Linear``) with the cosine classifier of the original code. Class-IL datasets only.
    """

    def __init__(
        self,
        net: MammothBackbone,
        dataset: Any,
        buffer_size: Optional[int] = None,
        memory_per_class: Optional[int] = None,
        task_free: bool = False,
        use_custom_classifier: bool = True,
        **kwargs: Any,
    ) -> None:
        require_class_il("er-ace", dataset)
        if use_custom_classifier:
            if not isinstance(getattr(net, "classifier", None), nn.Linear):
                raise ConfigError(
                    f"model.use_custom_classifier=true needs a backbone whose classifier is an nn.Linear, "
                    f"got {type(getattr(net, 'classifier', None)).__name__}; allowed: use_custom_classifier=false"
                )
            classifier = net.classifier
            net.classifier = CosineClassifier(classifier.in_features, classifier.out_features).to(
                classifier.weight.device, classifier.weight.dtype
            )
        super().__init__(net, dataset, buffer_size=buffer_size, memory_per_class=memory_per_class, **kwargs)
        self.task_free = bool(task_free)
        self.use_custom_classifier = bool(use_custom_classifier)
        self.seen_so_far = torch.zeros(0, dtype=torch.long)

    #: Under dataset.task_free=true with model.task_free=true (begin_stream refuses false).
    supports_task_free = True

    def begin_stream(self) -> None:
        """A task-free stream: refused unless ``model.task_free=true`` (without it the masking starts
        at the second task, which a task-free stream never announces)."""
        if not self.task_free:
            raise ConfigError("model.task_free=false is not allowed for er_ace with dataset.task_free=true "
                              "(it would never mask nor replay); allowed: model.task_free=true")
        super().begin_stream()

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """Masked cross-entropy on the batch plus, once replay starts, CE on a replay minibatch."""
        present = labels.unique()
        self.seen_so_far = torch.cat([self.seen_so_far.to(present.device), present]).unique()
        logits = self.net(inputs)
        if self.current_task > 0 or self.task_free:
            logits = logits.masked_fill(ace_mask(logits, present, self.seen_so_far) == 0, MASKED_LOGIT)
        loss = self.loss(logits, labels)
        if self.current_task > 0 or self.task_free:
            replay = self.replay_batch(inputs.shape[0], inputs.device)
            if replay is not None:
                loss = loss + self.loss(self.net(replay.examples), replay.labels)
        value = self.step(loss)
        self.buffer.add(not_aug_inputs, labels=labels)
        return value

    def extra_state(self) -> dict[str, Any]:
        """The replay buffer and the classes seen so far."""
        return {**super().extra_state(), "seen_so_far": self.seen_so_far.cpu()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the buffer and the classes seen so far."""
        super().load_extra_state(state)
        self.seen_so_far = state["seen_so_far"].to(self.device)
