"""agem_r: A-GEM with a reservoir memory (the original Mammoth's ``agem_r``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from mammoth.models.agem import AGem
from mammoth.models.registry import register_model

if TYPE_CHECKING:
    from mammoth.datasets.source import DataSource


@register_model("agem_r")
class AGemR(AGem):
    """A-GEM whose episodic memory is a reservoir of the whole stream (the original's ``agem_r``).

    Every step: the cross-entropy gradient on the batch is projected (:func:`~mammoth.models.agem.project`)
    against the gradient on a replay minibatch of ``minibatch_size`` examples (null: the batch's
    size), then the incoming non-augmented examples are offered to the reservoir. As in the
    original, the replay minibatch is not augmented (the original replays the stored images with
    no transform; here they get ``test_transform``, the normalisation, which seq-mnist does not
    have: the same there, normalised where a dataset normalises); ``end_task`` stores nothing.
    """

    #: Not checked against one process on several (tests/engine/test_distributed_training.py covers agem's).
    supports_distributed = False

    replay_augmented = False  # the original replays the stored images untransformed

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """A-GEM's step (:meth:`AGem.observe`), then the batch offered to the memory; returns the CE on the batch."""
        value = super().observe(inputs, labels, not_aug_inputs)
        self.buffer.add(not_aug_inputs, labels=labels)
        return value

    def end_task(self, task: int, data: "DataSource") -> None:
        """Nothing: the reservoir fills during training."""
