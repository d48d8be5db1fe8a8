"""agem: Averaged Gradient Episodic Memory (Chaudhry et al., "Efficient Lifelong Learning with
A-GEM", ICLR 2019)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Optional

import torch
from torch import Tensor

from mammoth.backbones.base import MammothBackbone
from mammoth.models.base import ReplayModel
from mammoth.models.registry import register_model

if TYPE_CHECKING:
    from mammoth.datasets.source import DataSource


def project(gradient: Tensor, reference: Tensor) -> Tensor:
    """A-GEM's projection, in place: if ``gradient . reference < 0``, remove the component of
    ``gradient`` along ``reference`` (``g - (g.r / r.r) r``, then ``g.r = 0``); else leave it."""
    dot = torch.dot(gradient, reference)
    if dot < 0:
        gradient.sub_(reference, alpha=float(dot / torch.dot(reference, reference)))
    return gradient


@register_model("agem")
class AGem(ReplayModel):
    """A-GEM: the step's gradient never increases the loss on a replayed minibatch, to first order.

    The gradient ``g`` of the cross-entropy on the batch is projected (:func:`project`) on the
    half-space ``g . g_ref >= 0`` of the gradient ``g_ref`` on a replay minibatch. As in the
    original Mammoth, the episodic memory gets one random training batch (``batch_size``
    non-augmented examples) of each finished task, through the reservoir buffer, and the replay
    minibatch is drawn without replacement and augmented like the training batches. Uses
    ``get_grads`` (a reused ``out=`` buffer), ``flat_grads`` (the replay gradient, read in place)
    and ``set_grads``.

    The replay minibatch has ``minibatch_size`` examples (null: the incoming batch's size). The
    original Mammoth since December 2023 overwrites ``--minibatch_size`` with ``--batch_size``
    (``extend_args`` in its ``main.py``; every dataset sets a batch size), so it always replays
    ``batch_size`` examples: with its best seq-mnist arguments (``--batch_size 10
    --minibatch_size 128``) it replays 10 where ``model.minibatch_size=128`` replays up to 128, as
    the original did when its published tables were made. That is the whole gap measured side by
    side (``scripts/compare_original.py``); leave ``minibatch_size`` null to run as today's original.
    """

    supports_distributed = True
    accepts_regularizer = False  # its step projects gradients outside step(): a regulariser's term would be skipped
    supports_fp16 = False  # calls backward and steps its optimizer itself (no gradient scaling)
    #: Whether the replay minibatch is augmented (``replay_batch``'s ``augment``); agem_r's is not.
    replay_augmented: ClassVar[bool] = True

    def __init__(self, net: MammothBackbone, dataset: Any, buffer_size: Optional[int] = None, memory_per_class: Optional[int] = None,
                  **kwargs: Any) -> None:
        super().__init__(net, dataset, buffer_size=buffer_size, memory_per_class=memory_per_class, **kwargs)
        self._gradient: Optional[Tensor] = None

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """One step along the projected gradient; returns the cross-entropy on the batch."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.net(inputs), labels)
        self.backward(loss)
        replay = self.replay_batch(inputs.shape[0], inputs.device, augment=self.replay_augmented)
        if replay is not None:
            self._gradient = self.net.get_grads(out=self._gradient)
            self.optimizer.zero_grad(set_to_none=True)
            self.backward(self.loss(self.net(replay.examples), replay.labels))
            self.net.set_grads(project(self._gradient, self.net.flat_grads()))
        self.optimizer.step()
        return loss.item()

    def end_task(self, task: int, data: DataSource) -> None:
        """Offer one random batch (drawn from the run's generator) of the task's non-augmented examples to the memory."""
        index = torch.randperm(len(data), generator=self.context.generator)[: self.context.batch_size]
        self.buffer.add(data.read(index, self.device), labels=data.labels[index].to(self.device))
