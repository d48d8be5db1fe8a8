"""joint (the original's schedule: one training at the last task) and joint-cumulative (after every
task); both read the earlier tasks' data again from the dataset instead of keeping it."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from mammoth.models.joint import Joint, JointCumulative
from mammoth.engine.loop import train_task


def _task_data(task: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((size, 1, 4, 4), float(task)), torch.full((size,), 2 * task, dtype=torch.long)


def test_joint_returns_no_data_before_the_last_task_and_all_of_it_at_the_last(make_model, dataset) -> None:
    model = make_model("joint")
    assert dataset.n_tasks == 2
    x, y = model.training_data(0, *_task_data(0, 3))
    assert x.shape == (0, 1, 4, 4) and y.shape == (0,) and y.dtype == torch.long
    x1, y1 = _task_data(1, 5)
    x, y = model.training_data(1, x1, y1)
    # task 0's training data is read again from the dataset, then comes task 1's own
    task0 = dataset.get_task(0)
    assert len(task0.train_y) == 16
    assert torch.equal(x, torch.cat([task0.train_x, x1])) and torch.equal(y, torch.cat([task0.train_y, y1]))


def test_joint_cumulative_returns_all_data_seen_so_far(make_model, dataset) -> None:
    model = make_model("joint-cumulative")
    x0, y0 = _task_data(0, 3)
    x, y = model.training_data(0, x0, y0)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    x1, y1 = _task_data(1, 5)
    x, y = model.training_data(1, x1, y1)
    assert len(x) == 16 + 5 and y.tolist() == dataset.get_task(0).train_y.tolist() + [2] * 5


@pytest.mark.parametrize("name", ["joint", "joint-cumulative"])
def test_nothing_is_kept_so_a_resumed_model_still_sees_every_task(make_model, make_net, dataset, name) -> None:
    model = make_model(name)
    model.training_data(0, *_task_data(0, 3))
    assert model.extra_state() == {}
    resumed = (Joint if name == "joint" else JointCumulative)(make_net(), dataset)  # as after a resume at task 1
    x, y = resumed.training_data(1, *_task_data(1, 2))
    assert torch.equal(x[:16], dataset.get_task(0).train_x) and x[16:, 0, 0, 0].tolist() == [1.0, 1.0]
    assert y[16:].tolist() == [2, 2]


def _count_steps(model, dataset, n_tasks: int, batch_size: int, n_epochs: int) -> list[int]:
    """Optimizer steps per task when the harness drives ``model`` over ``n_tasks`` tasks of ``dataset``."""
    steps = []
    fake = SimpleNamespace(config=SimpleNamespace(batch_size=batch_size, n_epochs=n_epochs),
                           to_float=lambda x: x, train_transform=dataset.train_transform)
    generator = torch.Generator().manual_seed(0)
    for task in range(n_tasks):
        model.begin_task(task)
        counted = [0]
        step = model.optimizer.step
        model.optimizer.step = lambda *args, **kwargs: counted.__setitem__(0, counted[0] + 1) or step(*args, **kwargs)
        data = dataset.get_task(task)
        x, y = model.training_data(task, data.train_x, data.train_y)
        train_task(model, fake, x, y % dataset.n_classes, generator, torch.device("cpu"))
        model.end_task(task)
        steps.append(counted[0])
    return steps


@pytest.mark.parametrize(("name", "expected"), [
    # 3 tasks of 16 examples, batches of 5, 2 epochs:
    # joint: nothing, nothing, then 2 epochs x ceil(48 / 5) = 20 steps on all the data;
    # joint-cumulative: 2 x ceil(16 / 5) = 8, 2 x ceil(32 / 5) = 14, 2 x ceil(48 / 5) = 20.
    ("joint", [0, 0, 20]),
    ("joint-cumulative", [8, 14, 20]),
])
def test_optimizer_steps_per_task(make_model, dataset, name, expected) -> None:
    dataset.n_tasks = 3
    model = make_model(name)
    before = model.net.get_params()
    assert _count_steps(model, dataset, 3, batch_size=5, n_epochs=2) == expected
    assert not torch.equal(model.net.get_params(), before)


def test_joint_leaves_the_network_untouched_before_the_last_task(make_model, dataset) -> None:
    dataset.n_tasks = 3
    model = make_model("joint", lr_milestones=[1])
    before = model.net.get_params()
    assert _count_steps(model, dataset, 2, batch_size=4, n_epochs=2) == [0, 0]
    assert torch.equal(model.net.get_params(), before)
    assert model.optimizer.param_groups[0]["lr"] == 0.1  # no epoch ran, so the schedule did not step


@pytest.mark.parametrize("name", ["joint", "joint-cumulative"])
def test_joint_observe_is_one_plain_cross_entropy_sgd_step(make_model, make_batch, name) -> None:
    # Computed here, not by the method joint inherits: loss = CE(net(x), y), then w <- w - lr * dloss/dw.
    model = make_model(name, lr=0.05)
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
