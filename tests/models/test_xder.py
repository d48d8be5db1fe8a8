"""xder: the logit update, the future-head constraint and the buffer updates, by hand."""

from __future__ import annotations

import pytest
import torch

from mammoth.backbones.mlp import MNISTMLP
from mammoth.datasets.source import InMemorySource
from mammoth.engine.context import build_context
from mammoth.models import build_model
from mammoth.models.buffer import ReplayBuffer
from mammoth.models.xder import _remove_duplicates, update_logits


def test_update_logits_scales_a_head_above_the_ground_truth_down_to_gamma_times_it() -> None:
    old = torch.tensor([[2.0, 0.0, 5.0, 1.0], [5.0, 0.0, 0.0, 0.0]])
    new = torch.tensor([[9.0, 9.0, 4.0, 1.0], [9.0, 9.0, 4.0, 1.0]])
    updated = update_logits(old.clone(), new, torch.tensor([0, 0]), start=2, stop=4, gamma=0.85)
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


def test_xder_memory_after_two_tasks_is_balanced_and_revised(make_model, run_task) -> None:
    model = make_model("xder", alpha=0.3, beta=0.8, buffer_size=8)
    run_task(model, 0)
    assert sorted(model.buffer.labels.tolist()) == [0] * 4 + [1] * 4
    # the stored examples are examples of the task as read, with the network's logits at the end of the task
    data = model.context.task_data(0)
    rows = data.read(torch.arange(len(data)), "cpu").flatten(1)
    assert (model.buffer.examples.flatten(1).unsqueeze(1) == rows.unsqueeze(0)).all(2).any(1).all()
    stored_examples, stored_logits = model.buffer.examples.flatten(1).clone(), model.buffer.logits.clone()
    run_task(model, 1)
    # 8 // 4 seen classes = 2 per old class, then 2 per new class; every stored item is revised
    # for the last task's heads
    assert sorted(model.buffer.labels.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert model.buffer.task_labels.tolist() == [1] * 8
    # the kept items of task 1 have new logits on the second task's head (the first head as stored)
    old = (model.buffer.labels < 2).nonzero().flatten()
    same = (model.buffer.examples.flatten(1)[old].unsqueeze(1) == stored_examples.unsqueeze(0)).all(2)
    before = stored_logits[same.float().argmax(1)]
    assert same.any(1).all() and torch.equal(model.buffer.logits[old][:, :2], before[:, :2])
    assert not torch.isclose(model.buffer.logits[old][:, 2:], before[:, 2:]).any()


def test_xder_draws_come_from_the_run_generator(make_model, run_task) -> None:
    buffers = []
    for global_seed in (1, 2):
        model = make_model("xder", alpha=0.3, beta=0.8, buffer_size=8)
        torch.manual_seed(global_seed)  # torch's global generator plays no part
        run_task(model, 0)
        run_task(model, 1)
        buffers.append((model.buffer.examples, model.buffer.logits, model.net.get_params()))
    assert all(torch.equal(a, b) for a, b in zip(*buffers))


class UnevenDataset:
    """Tasks of 3 classes then 1 (0, 1, 2 | 3): 24 examples of the first, 8 of the second."""

    def __init__(self, base):
        self.base = base

    def __getattr__(self, name):
        return getattr(self.base, name)

    def task_classes(self, task: int) -> range:
        return [range(0, 3), range(3, 4)][task]

    def task_source(self, task: int) -> InMemorySource:
        generator = torch.Generator().manual_seed(task)
        classes = self.task_classes(task)
        size = 8 * len(classes)
        labels = torch.arange(classes.start, classes.stop).repeat(8)[torch.randperm(size, generator=generator)]
        return InMemorySource(torch.rand(size, 1, 4, 4, generator=generator), labels)


def test_xder_on_tasks_of_unequal_size_balances_every_seen_class(dataset, run_task) -> None:
    uneven = UnevenDataset(dataset)
    torch.manual_seed(0)
    net = MNISTMLP(num_classes=4, input_shape=(1, 4, 4), hidden_sizes=(16,))
    model = build_model("xder", net=net, dataset=uneven, buffer_size=12, alpha=0.3, beta=0.8)
    model.attach(build_context(uneven, "cpu", torch.Generator().manual_seed(0)))
    run_task(model, 0)
    assert sorted(model.buffer.labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4  # 12 over the first task's 3 classes
    run_task(model, 1)
    # 12 // 4 seen classes = 3 per old class kept, the 3 free slots to the new class 3
    assert sorted(model.buffer.labels.tolist()) == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    # every stored item was revised at the end of task 1 (its head of task 1, column 3)
    assert model.buffer.task_labels.tolist() == [1] * 12
    # the future constraint and the replayed items' own heads follow the tasks' classes
    outputs = torch.tensor([[5.0, 1.0, 0.0, 2.0], [5.0, 1.0, 0.0, 2.0]])
    assert model._own_head_maximum(outputs, torch.tensor([1, 3])).tolist() == [5.0, 2.0]
    model.current_task = 0  # future head {3} against task 0's {0, 1, 2}: 3.1 + 0.3 - 3 = 0.4, times 0.1
    assert model._future_constraint(torch.tensor([[1.0, 3.0, 2.9, 3.1]]), None, None).item() == pytest.approx(0.04)
