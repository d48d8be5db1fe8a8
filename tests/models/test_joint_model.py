"""joint: accumulates every task's training data and keeps it in the checkpoint state."""

from __future__ import annotations

import torch

from mammoth.models.joint import Joint


def _task_data(task: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((size, 1, 4, 4), float(task)), torch.full((size,), 2 * task, dtype=torch.long)


def test_training_data_accumulates_all_tasks_seen_so_far(make_model) -> None:
    model = make_model("joint")
    x0, y0 = _task_data(0, 3)
    x1, y1 = _task_data(1, 5)
    x, y = model.training_data(0, x0, y0)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    x, y = model.training_data(1, x1, y1)
    assert x.shape == (8, 1, 4, 4)
    assert torch.equal(x, torch.cat([x0, x1])) and torch.equal(y, torch.cat([y0, y1]))
    x, y = model.training_data(1, x1, y1)  # asking again for the same task does not duplicate it
    assert len(x) == 8 and y.tolist() == [0, 0, 0, 2, 2, 2, 2, 2]


def test_extra_state_keeps_the_earlier_tasks(make_model, make_net, dataset) -> None:
    model = make_model("joint")
    model.training_data(0, *_task_data(0, 3))
    resumed = Joint(make_net(), dataset)
    resumed.load_extra_state(model.extra_state())
    x, y = resumed.training_data(1, *_task_data(1, 2))
    assert x[:, 0, 0, 0].tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert y.tolist() == [0, 0, 0, 2, 2]


def test_joint_observe_is_plain_cross_entropy(make_model, make_batch) -> None:
    joint, sgd = make_model("joint"), make_model("sgd")
    batch = make_batch(0)
    assert joint.observe(*batch) == sgd.observe(*batch)
    assert torch.equal(joint.net.get_params(), sgd.net.get_params())
