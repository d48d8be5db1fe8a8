"""joint (the original's schedule: one training at the last task) and joint-cumulative (after every
task); both keep every task's training data in the checkpoint state."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mammoth.models.joint import Joint, JointCumulative
from mammoth.training import train_task


def _task_data(task: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((size, 1, 4, 4), float(task)), torch.full((size,), 2 * task, dtype=torch.long)


def test_joint_returns_no_data_before_the_last_task_and_all_of_it_at_the_last(make_model, dataset) -> None:
    model = make_model("joint")
    assert dataset.n_tasks == 2
    x0, y0 = _task_data(0, 3)
    x1, y1 = _task_data(1, 5)
    x, y = model.training_data(0, x0, y0)
    assert x.shape == (0, 1, 4, 4) and y.shape == (0,) and y.dtype == torch.long
    x, y = model.training_data(1, x1, y1)
    assert torch.equal(x, torch.cat([x0, x1])) and torch.equal(y, torch.cat([y0, y1]))


def _count_steps(model, dataset, sizes: list[int], batch_size: int, n_epochs: int) -> list[int]:
    """Optimizer steps per task when the harness drives ``model`` over tasks of ``sizes`` examples."""
    steps = []
    fake = SimpleNamespace(config=SimpleNamespace(batch_size=batch_size, n_epochs=n_epochs),
                           to_float=lambda x: x, train_transform=dataset.train_transform)
    generator = torch.Generator().manual_seed(0)
    for task, size in enumerate(sizes):
        model.begin_task(task)
        counted = [0]
        step = model.optimizer.step
        model.optimizer.step = lambda *args, **kwargs: counted.__setitem__(0, counted[0] + 1) or step(*args, **kwargs)
        x, y = model.training_data(task, *_task_data(task, size))
        train_task(model, fake, x / 2, y % dataset.n_classes, generator, torch.device("cpu"))
        model.end_task(task)
        steps.append(counted[0])
    return steps


@pytest.mark.parametrize(("name", "expected"), [
    # 3 tasks of 5, 7 and 6 examples, batches of 4, 2 epochs:
    # joint: nothing, nothing, then 2 epochs x ceil(18 / 4) = 10 steps on all the data;
    # joint-cumulative: 2 x ceil(5 / 4) = 4, 2 x ceil(12 / 4) = 6, 2 x ceil(18 / 4) = 10.
    ("joint", [0, 0, 10]),
    ("joint-cumulative", [4, 6, 10]),
])
def test_optimizer_steps_per_task(make_model, dataset, name, expected) -> None:
    dataset.n_tasks = 3
    model = make_model(name)
    before = model.net.get_params()
    assert _count_steps(model, dataset, [5, 7, 6], batch_size=4, n_epochs=2) == expected
    assert not torch.equal(model.net.get_params(), before)


def test_joint_leaves_the_network_untouched_before_the_last_task(make_model, dataset) -> None:
    dataset.n_tasks = 3
    model = make_model("joint", lr_milestones=[1])
    before = model.net.get_params()
    assert _count_steps(model, dataset, [5, 7], batch_size=4, n_epochs=2) == [0, 0]
    assert torch.equal(model.net.get_params(), before)
    assert model.optimizer.param_groups[0]["lr"] == 0.1  # no epoch ran, so the schedule did not step


def test_training_data_accumulates_all_tasks_seen_so_far(make_model) -> None:
    model = make_model("joint-cumulative")
    x0, y0 = _task_data(0, 3)
    x1, y1 = _task_data(1, 5)
    x, y = model.training_data(0, x0, y0)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    x, y = model.training_data(1, x1, y1)
    assert x.shape == (8, 1, 4, 4)
    assert torch.equal(x, torch.cat([x0, x1])) and torch.equal(y, torch.cat([y0, y1]))
    x, y = model.training_data(1, x1, y1)  # asking again for the same task does not duplicate it
    assert len(x) == 8 and y.tolist() == [0, 0, 0, 2, 2, 2, 2, 2]


@pytest.mark.parametrize(("name", "cls"), [("joint", Joint), ("joint-cumulative", JointCumulative)])
def test_extra_state_keeps_the_earlier_tasks(make_model, make_net, dataset, name, cls) -> None:
    model = make_model(name)
    model.training_data(0, *_task_data(0, 3))
    resumed = cls(make_net(), dataset)
    resumed.load_extra_state(model.extra_state())
    x, y = resumed.training_data(1, *_task_data(1, 2))  # task 1 is the last of the 2
    assert x[:, 0, 0, 0].tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert y.tolist() == [0, 0, 0, 2, 2]


def test_joint_observe_is_plain_cross_entropy(make_model, make_batch) -> None:
    joint, sgd = make_model("joint"), make_model("sgd")
    batch = make_batch(0)
    assert joint.observe(*batch) == sgd.observe(*batch)
    assert torch.equal(joint.net.get_params(), sgd.net.get_params())
