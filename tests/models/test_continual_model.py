"""Behaviour shared by every CL method: training steps, optimizer re-creation, hooks, validation."""

from __future__ import annotations

import math

import pytest
import torch

from mammoth.engine.context import build_context
from mammoth.engine.loop import train_task
from mammoth.errors import ConfigError, MammothError
from mammoth.models.base import ContinualModel, ReplayModel
from mammoth.models.sgd import SGD

REPLAY_METHODS = ("er", "der", "derpp")
ALL_METHODS = ("sgd", "joint", "joint-cumulative", *REPLAY_METHODS)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_observe_changes_the_parameters_and_returns_a_finite_float(name, make_model, make_batch) -> None:
    model = make_model(name)
    model.begin_task(0)
    for step in range(2):  # the second step of a replay method replays the first batch
        before = model.net.get_params()
        loss = model.observe(*make_batch(0, seed=step))
        assert isinstance(loss, float) and math.isfinite(loss) and loss > 0
        assert not torch.equal(model.net.get_params(), before)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_begin_task_recreates_the_optimizer(name, make_model, make_batch) -> None:
    model = make_model(name, momentum=0.9)
    model.begin_task(0)
    model.observe(*make_batch(0))
    first = model.optimizer
    assert first.state  # momentum buffers after a step
    model.begin_task(1)
    assert model.current_task == 1
    assert model.optimizer is not first and not model.optimizer.state
    assert isinstance(model.optimizer, torch.optim.SGD)
    assert model.optimizer.param_groups[0]["momentum"] == 0.9
    optimised = [p for group in model.optimizer.param_groups for p in group["params"]]
    assert [id(p) for p in optimised] == [id(p) for p in model.net.parameters()]


@pytest.mark.parametrize("name", ALL_METHODS)
def test_two_tasks_run_through_all_hooks(name, make_model, dataset) -> None:
    model = make_model(name)
    calls: list[str] = []
    for hook in ("begin_task", "training_data", "observe", "end_epoch", "end_task"):
        original = getattr(model, hook)
        setattr(model, hook, lambda *args, hook=hook, original=original: (calls.append(hook), original(*args))[1])
    for task in range(dataset.n_tasks):
        calls.clear()
        train_task(model, model.context, task, model.context.task_data(task))
        # 16 examples a task in batches of 8; joint trains at the last task only, on both tasks'
        # data; joint-cumulative on all data so far. No data: no observe and no end_epoch.
        steps = {"joint": [0, 4], "joint-cumulative": [2, 4]}.get(name, [2, 2])[task]
        epoch = ["observe"] * steps + ["end_epoch"] if steps else []
        assert calls == ["begin_task", "training_data", *epoch, "end_task"]
    assert model.current_task == 1


def test_adam_optimizer_and_hyper_parameters(make_model) -> None:
    model = make_model("sgd", optimizer="adam", lr=0.01, weight_decay=1e-4)
    assert model.optimizer is None and model.scheduler is None  # built by begin_task, not __init__
    with pytest.raises(MammothError, match=r"^SGD has no optimizer yet; allowed: training after begin_task\(task\)"):
        model.step(model.loss(model.net(torch.zeros(2, 1, 4, 4)), torch.tensor([0, 1])))
    model.begin_task(0)
    assert isinstance(model.optimizer, torch.optim.Adam)
    assert model.optimizer.param_groups[0]["lr"] == 0.01
    assert model.optimizer.param_groups[0]["weight_decay"] == 1e-4
    model.begin_task(1)
    assert isinstance(model.optimizer, torch.optim.Adam)


def test_sgd_observe_is_one_cross_entropy_step(make_model, make_batch) -> None:
    model = make_model("sgd", lr=0.5)
    model.begin_task(0)
    inputs, labels, not_aug = make_batch(0)
    before = {name: p.detach().clone() for name, p in model.net.named_parameters()}
    expected_loss = torch.nn.functional.cross_entropy(model.net(inputs), labels)
    grads = torch.autograd.grad(expected_loss, list(model.net.parameters()))
    loss = model.observe(inputs, labels, not_aug)
    assert loss == pytest.approx(expected_loss.item(), rel=1e-6)
    for (name, parameter), grad in zip(model.net.named_parameters(), grads):
        assert torch.allclose(parameter, before[name] - 0.5 * grad, atol=1e-6)


def test_base_hooks_and_defaults(make_net, dataset, make_batch) -> None:
    model = SGD(make_net(), dataset)
    assert (model.lr, model.optimizer_name, model.momentum, model.weight_decay) == (0.1, "sgd", 0.0, 0.0)
    assert isinstance(model.loss, torch.nn.CrossEntropyLoss)
    assert model.current_task == 0 and not hasattr(model, "dataset")  # only static facts are kept
    assert model.device == torch.device("cpu")
    with pytest.raises(MammothError, match=r"^SGD has no training context; allowed: call model\.attach\(build_context"):
        model.context
    context = build_context(dataset, "cpu", torch.Generator())
    model.attach(context)
    assert model.context is context
    inputs, labels, not_aug = make_batch(0)
    assert torch.equal(model(inputs), model.net(inputs))
    data = context.task_data(0)
    assert model.training_data(0, data) is data
    assert model.extra_state() == {}
    with pytest.raises(NotImplementedError, match="ContinualModel does not implement observe"):
        ContinualModel(make_net(), dataset).observe(inputs, labels, not_aug)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"lr": -1.0}, "model.lr=-1.0 is not positive; allowed: lr > 0"),
        ({"lr": 0}, "model.lr=0 is not positive; allowed: lr > 0"),
        ({"lr": float("nan")}, "model.lr=nan is not a finite number; allowed: 0 < lr < inf"),
        ({"lr": float("inf")}, "model.lr=inf is not a finite number; allowed: 0 < lr < inf"),
        ({"lr": 1e300}, "model.lr=1e+300 does not fit float32 (torch's default dtype, largest 3.402823e+38); "
                        "allowed: 0 < lr <= 3.402823e+38"),
        ({"momentum": 4e38}, "model.momentum=4e+38 does not fit float32 (torch's default dtype, largest 3.402823e+38); "
                             "allowed: 0 <= momentum <= 3.402823e+38"),
        ({"momentum": -0.5}, "model.momentum=-0.5 is negative or not a number; allowed: momentum >= 0"),
        ({"momentum": 0.9, "optimizer": "adam"}, "model.momentum=0.9 has no effect with model.optimizer=adam; allowed: momentum=0 with adam"),
        ({"weight_decay": -1e-4}, "model.weight_decay=-0.0001 is negative or not a number; allowed: weight_decay >= 0"),
        ({"optimizer": "rmsprop"}, "model.optimizer='rmsprop' is not supported; allowed: sgd, adam"),
    ],
)
def test_invalid_hyper_parameters_raise_config_error(values, message, make_net, dataset) -> None:
    with pytest.raises(ConfigError) as error:
        SGD(make_net(), dataset, **values)
    assert str(error.value).splitlines()[0] == message


@pytest.mark.parametrize(
    "name, values, message",
    [
        ("er", {"buffer_size": 0}, "model.buffer_size=0 is not a positive integer; allowed: buffer_size >= 1"),
        ("der", {"buffer_size": -5}, "model.buffer_size=-5 is not a positive integer; allowed: buffer_size >= 1"),
        ("er", {"minibatch_size": 0}, "model.minibatch_size=0 is not a positive integer; allowed: minibatch_size >= 1"),
        ("der", {"alpha": -0.1}, "model.alpha=-0.1 is negative or not a number; allowed: alpha >= 0"),
        ("derpp", {"alpha": -1.0}, "model.alpha=-1.0 is negative or not a number; allowed: alpha >= 0"),
        ("derpp", {"beta": -0.5}, "model.beta=-0.5 is negative or not a number; allowed: beta >= 0"),
    ],
)
def test_invalid_replay_arguments_raise_config_error(name, values, message, make_model) -> None:
    with pytest.raises(ConfigError) as error:
        make_model(name, **values)
    assert str(error.value).splitlines()[0] == message


@pytest.mark.parametrize("name", REPLAY_METHODS)
def test_invalid_buffer_device_is_refused_when_built_or_constructed(name, make_model, make_net, dataset) -> None:
    with pytest.raises(ConfigError, match=r"model\.buffer_device"):
        make_model(name, buffer_device="gpu")
    with pytest.raises(ConfigError, match=r"^model.buffer_device='gpu' is not supported; allowed: training, cpu"):
        ReplayModel(make_net(), dataset, buffer_size=4, buffer_device="gpu")  # type: ignore[arg-type]


def test_a_method_written_against_the_old_hooks_is_refused_when_defined() -> None:
    with pytest.raises(ConfigError) as error:

        class OldData(SGD):
            def training_data(self, task, train_x, train_y):
                return train_x, train_y

    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        f"{__name__}.test_a_method_written_against_the_old_hooks_is_refused_when_defined.<locals>.OldData"
        ".training_data(self, task, train_x, train_y) is an old hook; allowed: training_data(self, task, data) "
        "-> DataSource and end_task(self, task, data)"
    )
    assert message.endswith("(docs/methods.md: Write your own method)")
    with pytest.raises(ConfigError, match=r"OldEnd\.end_task\(self, task\) is an old hook; allowed: "):

        class OldEnd(ReplayModel):
            def end_task(self, task):
                pass

    class New(SGD):  # the new hooks, and hooks taking *args, are accepted
        def training_data(self, task, data):
            return data

        def end_task(self, *args):
            pass

    assert New.training_data is not SGD.training_data
