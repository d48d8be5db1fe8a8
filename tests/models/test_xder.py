"""xder: the logit update, the future-head constraint and the buffer updates, by hand."""

from __future__ import annotations

import pytest
import torch

from mammoth.models.buffer import ReplayBuffer
from mammoth.models.xder import _remove_duplicates, update_logits


def test_update_logits_scales_a_head_above_the_ground_truth_down_to_gamma_times_it() -> None:
    old = torch.tensor([[2.0, 0.0, 5.0, 1.0], [5.0, 0.0, 0.0, 0.0]])
    new = torch.tensor([[9.0, 9.0, 4.0, 1.0], [9.0, 9.0, 4.0, 1.0]])
    updated = update_logits(old.clone(), new, torch.tensor([0, 0]), first_head=1, n_heads=1, classes_per_task=2, gamma=0.85)
    # row 0: head 1 of new is (4, 1), max 4 > ground truth 2 -> times 0.85 * 2 / 4 = 0.425 -> (1.7, 0.425)
    assert updated[0].tolist() == pytest.approx([2.0, 0.0, 1.7, 0.425])
    # row 1: max 4 <= ground truth 5 -> transplanted unchanged; head 0 untouched
    assert updated[1].tolist() == [5.0, 0.0, 4.0, 1.0]


def test_duplicates_keep_their_first_occurrence() -> None:
    assert _remove_duplicates(torch.tensor([3, 1, 3, 2, 1])).tolist() == [True, True, False, True, False]


def test_future_constraint_is_a_hinge_on_the_future_heads(make_model) -> None:
    model = make_model("xder", alpha=0.3, beta=0.8)
    outputs = torch.tensor([[1.0, 3.0, 2.9, 0.0], [5.0, 0.0, 1.0, 1.0]])
    # row 0: 2.9 + 0.3 - 3 = 0.2 > 0; row 1: 1 + 0.3 - 5 < 0 (left out of the mean) -> 0.1 * 0.2
    assert model._future_constraint(outputs, None, None).item() == pytest.approx(0.02)
    assert model._future_constraint(torch.tensor([[0.0, 5.0, 1.0, 1.0]]), None, None).item() == 0.0


def test_buffer_update_overwrites_the_given_slots_only() -> None:
    buffer = ReplayBuffer(4, seed=0)
    buffer.add(torch.zeros(3, 2), labels=torch.tensor([0, 1, 2]), logits=torch.zeros(3, 2))
    buffer.update(torch.tensor([2, 0]), logits=torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert buffer.logits.tolist() == [[3.0, 4.0], [0.0, 0.0], [1.0, 2.0]]
    assert buffer.labels.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="'task_labels' is not stored"):
        buffer.update(torch.tensor([0]), task_labels=torch.tensor([1]))
    with pytest.raises(ValueError, match="slot 3 is not filled; allowed: 0..2"):
        buffer.update(torch.tensor([3]), logits=torch.zeros(1, 2))


def test_xder_memory_after_two_tasks_is_balanced_and_revised(make_model, make_batch, dataset) -> None:
    model = make_model("xder", alpha=0.3, beta=0.8, buffer_size=8)
    for task in range(2):
        model.begin_task(task)
        _, labels, not_aug = make_batch(task, size=16)
        x, y = model.training_data(task, (not_aug * 255).round().to(torch.uint8), labels)
        for start in (0, 8):
            batch = dataset.to_float(x[start : start + 8])
            model.observe(dataset.train_transform(batch), y[start : start + 8], batch)
        model.end_task(task)
        if task == 0:
            assert sorted(model.buffer.labels.tolist()) == [0] * 4 + [1] * 4
    # 8 // 4 seen classes = 2 per old class, then 2 per new class; every stored item is revised
    # for the last task's heads
    assert sorted(model.buffer.labels.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert model.buffer.task_labels.tolist() == [1] * 8
