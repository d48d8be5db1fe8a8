"""The original Mammoth's multi-step learning-rate schedule: per epoch, reset at every task."""

from __future__ import annotations

import pytest
import torch

from mammoth.datasets import get_dataset_class
from mammoth.datasets.source import InMemorySource
from mammoth.errors import ConfigError
from mammoth.models import build_model


def _lr(model) -> float:
    return model.optimizer.param_groups[0]["lr"]


def _epochs(model, make_batch, n_epochs: int) -> list[float]:
    """The lr after each of ``n_epochs`` epochs of one step each (the harness calls end_epoch after every epoch)."""
    rates = []
    for epoch in range(n_epochs):
        model.observe(*make_batch(model.current_task, seed=epoch))
        model.end_epoch(epoch)
        rates.append(_lr(model))
    return rates


def test_lr_is_multiplied_by_gamma_at_each_milestone(make_model, make_batch) -> None:
    model = make_model("sgd", lr=0.1, lr_milestones=[2, 4], sched_multistep_lr_gamma=0.5)
    model.begin_task(0)
    assert _lr(model) == 0.1
    # epochs 0-1 train at 0.1, epochs 2-3 at 0.1 * 0.5, epochs 4-5 at 0.1 * 0.5 * 0.5
    assert _epochs(model, make_batch, 6) == pytest.approx([0.1, 0.05, 0.05, 0.025, 0.025, 0.025], abs=1e-12)


def test_schedule_restarts_at_every_task(make_model, make_batch) -> None:
    model = make_model("er", lr=0.2, momentum=0.9, lr_milestones=[1], sched_multistep_lr_gamma=0.1)
    model.begin_task(0)
    assert _epochs(model, make_batch, 3) == pytest.approx([0.02, 0.02, 0.02], abs=1e-12)
    model.begin_task(1)
    assert _lr(model) == 0.2
    assert model.scheduler.optimizer is model.optimizer
    assert _epochs(model, make_batch, 2) == pytest.approx([0.02, 0.02], abs=1e-12)


def test_default_gamma_is_the_originals_0_1(make_model, make_batch) -> None:
    model = make_model("derpp", lr=0.03, alpha=0.1, beta=0.5, lr_milestones=[1, 2])
    model.begin_task(0)
    assert model.sched_multistep_lr_gamma == 0.1
    assert _epochs(model, make_batch, 3) == pytest.approx([0.003, 0.0003, 0.0003], abs=1e-12)


def test_without_milestones_the_lr_is_constant(make_model, make_batch) -> None:
    model = make_model("sgd", lr=0.05)
    model.begin_task(0)
    assert model.lr_milestones == () and model.scheduler is None
    assert _epochs(model, make_batch, 3) == [0.05, 0.05, 0.05]


def test_milestones_default_to_the_datasets(make_net, dataset) -> None:
    # the original's seq-cifar100 defaults to --lr_scheduler multisteplr --lr_milestones 35 45 (gamma 0.1)
    cifar100 = get_dataset_class("seq-cifar100")({"name": "seq-cifar100"})
    cifar10 = get_dataset_class("seq-cifar10")({"name": "seq-cifar10"})
    assert build_model("sgd", net=make_net(), dataset=cifar100).lr_milestones == (35, 45)
    assert build_model("sgd", net=make_net(), dataset=cifar100, lr_milestones=[]).scheduler is None
    assert build_model("sgd", net=make_net(), dataset=cifar10).lr_milestones == ()
    assert build_model("sgd", net=make_net(), dataset=dataset).lr_milestones == ()  # a dataset without the attribute


@pytest.mark.parametrize("milestones", [[0, 3], [5, 3], [2, 2]])
def test_bad_milestones_are_refused_naming_them(make_model, milestones) -> None:
    with pytest.raises(ConfigError) as error:
        make_model("sgd", lr_milestones=milestones)
    first_line = str(error.value).splitlines()[0]
    assert f"model.lr_milestones={milestones!r}" in first_line and "increasing positive epochs" in first_line


@pytest.mark.parametrize("milestones", [["ten"], 5])
def test_milestones_of_the_wrong_type_are_refused_naming_them(make_model, milestones) -> None:
    with pytest.raises(ConfigError) as error:
        make_model("sgd", lr_milestones=milestones)
    first_line = str(error.value).splitlines()[0]
    assert first_line.startswith("model.lr_milestones:") and repr(milestones) in first_line


@pytest.mark.parametrize("gamma", [0.0, -0.1])
def test_bad_gamma_is_refused(make_model, gamma) -> None:
    with pytest.raises(ConfigError, match="model.sched_multistep_lr_gamma"):
        make_model("sgd", lr_milestones=[1], sched_multistep_lr_gamma=gamma)


def test_the_harness_trains_each_epoch_at_the_scheduled_lr(make_model) -> None:
    model = make_model("sgd", lr=1.0, lr_milestones=[1, 3], sched_multistep_lr_gamma=0.5)
    seen: list[float] = []
    observe = model.observe
    model.observe = lambda *batch: seen.append(_lr(model)) or observe(*batch)
    for task in range(2):
        model.begin_task(task)
        source = InMemorySource(torch.rand(8, 1, 4, 4), torch.tensor([2 * task] * 8))
        model.context.fit(lambda b: model.observe(b.inputs, b.labels, b.not_aug_inputs), source, 4, f"task {task + 1}",
                          batch_size=4, end_epoch=model.end_epoch)
    # two batches per epoch; epochs 0, 1-2, 3 at 1.0, 0.5, 0.25; the second task starts again at 1.0
    assert seen == [1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25] * 2


def test_cosine_anneals_the_rate_over_each_tasks_epochs(make_model, make_batch) -> None:
    """The original's ``--lr_scheduler cosine``: CosineAnnealingLR with T_max = n_epochs, per epoch."""
    import math

    model = make_model("sgd", lr=0.2, lr_scheduler="cosine")
    epochs = model.context.n_epochs = 4
    model.begin_task(0)
    expected = [0.2 * (1 + math.cos(math.pi * (epoch + 1) / epochs)) / 2 for epoch in range(epochs)]
    assert _epochs(model, make_batch, epochs) == pytest.approx(expected, abs=1e-12)
    assert expected[-1] == pytest.approx(0.0, abs=1e-12)
    model.begin_task(1)
    assert _lr(model) == 0.2  # it restarts at every task, as the multi-step schedule


def test_cosine_with_milestones_is_refused(make_model) -> None:
    with pytest.raises(ConfigError, match=r"^model.lr_milestones=\[3\] apply to lr_scheduler=multisteplr; allowed"):
        make_model("sgd", lr_scheduler="cosine", lr_milestones=[3])
    with pytest.raises(ConfigError, match=r"^model.lr_scheduler: invalid value 'step'.*allowed values: 'multisteplr', 'cosine'"):
        make_model("sgd", lr_scheduler="step")


def test_cosine_from_the_command_line_reaches_every_method() -> None:
    from composing import compose_mammoth

    for method in ("sgd", "der", "lwf"):
        cfg = compose_mammoth(f"model={method}", "model.lr_scheduler=cosine")
        assert cfg.model.lr_scheduler == "cosine"
