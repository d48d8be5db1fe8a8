"""models/utils: the one buffer-shrinking function."""

from __future__ import annotations

import torch

from mammoth.models.buffer import ReplayBuffer
from mammoth.models.utils import keep_first


def _buffer() -> ReplayBuffer:
    buffer = ReplayBuffer(8, seed=0)
    buffer.add(torch.arange(6.0).view(6, 1), labels=torch.tensor([1, 0, 1, 0, 1, 2]),
               task_labels=torch.tensor([0, 0, 0, 0, 1, 1]))
    return buffer


def test_keep_first_keeps_the_first_items_of_each_class_in_slot_order() -> None:
    buffer = _buffer()
    keep_first(buffer, 2)
    # class 0: slots 1, 3; class 1: slots 0, 2 (not 4); class 2: slot 5; classes in increasing order
    assert buffer.examples.flatten().tolist() == [1.0, 3.0, 0.0, 2.0, 5.0]
    assert buffer.labels.tolist() == [0, 0, 1, 1, 2] and buffer.task_labels.tolist() == [0, 0, 0, 0, 1]


def test_keep_first_groups_by_the_field_given() -> None:
    buffer = _buffer()
    keep_first(buffer, 1, by="task_labels")
    assert buffer.examples.flatten().tolist() == [0.0, 4.0] and buffer.task_labels.tolist() == [0, 1]
    empty = ReplayBuffer(4, seed=0)
    keep_first(empty, 1)
    assert empty.is_empty()
