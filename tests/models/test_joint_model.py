"""joint (the original's schedule: one training at the last task) and joint-cumulative (after every
task); both read the earlier tasks' data again through the context instead of keeping it."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from mammoth.datasets.source import InMemorySource
from mammoth.engine.context import build_context
from mammoth.engine.loop import train_task
from mammoth.models.joint import Joint, JointCumulative


def _task_data(task: int, size: int) -> InMemorySource:
    return InMemorySource(torch.full((size, 1, 4, 4), float(task)), torch.full((size,), 2 * task, dtype=torch.long))


def _everything(source) -> torch.Tensor:
    return source.read(torch.arange(len(source)), "cpu")


def test_joint_returns_no_data_before_the_last_task_and_all_of_it_at_the_last(make_model, dataset) -> None:
    model = make_model("joint")
    assert dataset.n_tasks == 2
    assert len(model.training_data(0, _task_data(0, 3))) == 0
    task1 = _task_data(1, 5)
    source = model.training_data(1, task1)
    # task 0's training data is read again through the context, then comes task 1's own
    task0 = dataset.task_source(0)
    assert len(task0) == 16 and len(source) == 21
    assert torch.equal(_everything(source), torch.cat([_everything(task0), _everything(task1)]))
    assert torch.equal(source.labels, torch.cat([task0.labels, task1.labels]))


def test_joint_cumulative_returns_all_data_seen_so_far(make_model, dataset) -> None:
    model = make_model("joint-cumulative")
    task0 = _task_data(0, 3)
    assert model.training_data(0, task0) is task0
    source = model.training_data(1, _task_data(1, 5))
    assert len(source) == 16 + 5 and source.labels.tolist() == dataset.task_source(0).labels.tolist() + [2] * 5


@pytest.mark.parametrize("name", ["joint", "joint-cumulative"])
def test_nothing_is_kept_so_a_resumed_model_still_sees_every_task(make_model, make_net, dataset, name) -> None:
    model = make_model(name)
    model.training_data(0, _task_data(0, 3))
    assert model.extra_state() == {}
    resumed = (Joint if name == "joint" else JointCumulative)(make_net(), dataset)  # as after a resume at task 1
    resumed.attach(build_context(dataset, "cpu", torch.Generator()))
    source = resumed.training_data(1, _task_data(1, 2))
    everything = _everything(source)
    assert torch.equal(everything[:16], _everything(dataset.task_source(0))) and everything[16:, 0, 0, 0].tolist() == [1.0, 1.0]
    assert source.labels[16:].tolist() == [2, 2]


def _count_steps(model, n_tasks: int) -> list[int]:
    """``observe`` calls (one optimizer step each, for joint) per task when the harness drives ``model``."""
    steps = []
    observe = model.observe
    for task in range(n_tasks):
        counted = [0]
        model.observe = lambda *args, counted=counted: counted.__setitem__(0, counted[0] + 1) or observe(*args)
        train_task(model, model.context, task, model.context.task_data(task))
        steps.append(counted[0])
    return steps


def _three_tasks(model, dataset, batch_size: int, n_epochs: int) -> None:
    """Attach ``model`` to a context of 3 tasks of 16 examples (labels folded into the 4 classes)."""
    dataset.n_tasks = 3
    dataset.config = SimpleNamespace(batch_size=batch_size, n_epochs=n_epochs)
    task_source = dataset.task_source
    dataset.task_source = lambda task: InMemorySource(
        _everything(task_source(task)), task_source(task).labels % dataset.n_classes)
    model.attach(build_context(dataset, "cpu", torch.Generator().manual_seed(0)))


@pytest.mark.parametrize(("name", "expected"), [
    # 3 tasks of 16 examples, batches of 5, 2 epochs:
    # joint: nothing, nothing, then 2 epochs x ceil(48 / 5) = 20 steps on all the data;
    # joint-cumulative: 2 x ceil(16 / 5) = 8, 2 x ceil(32 / 5) = 14, 2 x ceil(48 / 5) = 20.
    ("joint", [0, 0, 20]),
    ("joint-cumulative", [8, 14, 20]),
])
def test_optimizer_steps_per_task(make_model, dataset, name, expected) -> None:
    model = make_model(name)
    _three_tasks(model, dataset, batch_size=5, n_epochs=2)
    before = model.net.get_params()
    assert _count_steps(model, 3) == expected
    assert not torch.equal(model.net.get_params(), before)


def test_joint_leaves_the_network_untouched_before_the_last_task(make_model, dataset) -> None:
    model = make_model("joint", lr_milestones=[1])
    _three_tasks(model, dataset, batch_size=4, n_epochs=2)
    before = model.net.get_params()
    assert _count_steps(model, 2) == [0, 0]
    assert torch.equal(model.net.get_params(), before)
    assert model.optimizer.param_groups[0]["lr"] == 0.1  # no epoch ran, so the schedule did not step


@pytest.mark.parametrize("name", ["joint", "joint-cumulative"])
def test_joint_observe_is_one_plain_cross_entropy_sgd_step(make_model, make_batch, name) -> None:
    # Computed here, not by the method joint inherits: loss = CE(net(x), y), then w <- w - lr * dloss/dw.
    model = make_model(name, lr=0.05)
    model.begin_task(0)
    inputs, labels, not_aug = make_batch(0)
    reference = copy.deepcopy(model.net)
    expected_loss = torch.nn.functional.cross_entropy(reference(inputs), labels)
    expected_loss.backward()
    expected = [p.detach() - 0.05 * p.grad for p in reference.parameters()]
    loss = model.observe(inputs, labels, not_aug)
    assert loss == pytest.approx(expected_loss.item(), rel=1e-6)
    for parameter, value in zip(model.net.parameters(), expected):
        assert torch.allclose(parameter, value, atol=1e-7)
    assert not torch.equal(model.net.get_params(), reference.get_params())  # the step moved the weights
