"""TrainingContext: batches from the run's generator, fit's loop, reports and non-finite checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mammoth.datasets import build_dataset
from mammoth.datasets.source import Batch
from mammoth.engine.context import build_context
from mammoth.models.utils import evaluation_mode, training_mode
from mammoth.errors import TrainingError


def _context(seed: int = 0, **report_to: list):
    digits = build_dataset({"name": "seq-digits", "batch_size": 16, "n_epochs": 2})
    reports = report_to.get("reports")
    report = None if reports is None else lambda *args: reports.append(args)
    return digits, build_context(digits, "cpu", torch.Generator().manual_seed(seed), report)


def test_context_facts_come_from_the_dataset() -> None:
    digits, context = _context()
    assert (context.batch_size, context.n_epochs, context.n_tasks) == (16, 2, digits.n_tasks)
    assert (context.n_classes, context.setting, context.input_shape) == (10, "class-il", tuple(digits.input_shape))
    assert context.task_classes(1) == range(2, 4)
    assert torch.equal(context.task_data(2).labels, digits.task_source(2).labels)


def test_batches_cover_the_source_once_in_an_order_from_the_generator() -> None:
    digits, context = _context(seed=3)
    source = context.task_data(0)
    batches = list(context.batches(source, augment=False))
    assert all(isinstance(batch, Batch) for batch in batches)
    assert [len(batch.labels) for batch in batches[:-1]] == [16] * (len(batches) - 1)
    indices = torch.cat([batch.indices for batch in batches])
    assert torch.equal(indices, torch.randperm(len(source), generator=torch.Generator().manual_seed(3)))
    first = batches[0]
    assert torch.equal(first.not_aug_inputs, source.read(first.indices, "cpu"))
    assert torch.equal(first.inputs, digits.test_transform(first.not_aug_inputs))
    assert torch.equal(first.labels, source.labels[first.indices])
    ordered = list(context.batches(source, batch_size=1000, shuffle=False, augment=False))
    assert len(ordered) == 1 and torch.equal(ordered[0].indices, torch.arange(len(source)))


def test_fit_runs_every_batch_of_every_epoch_and_reports_the_mean_loss() -> None:
    reports: list = []
    _, context = _context(reports=reports)
    source = context.task_data(0)
    seen, ends = [], []
    losses = iter(float(i) for i in range(1000))
    result = context.fit(lambda batch: (seen.append(len(batch.labels)), next(losses))[1], source, epochs=2,
                         description="warm-up", end_epoch=ends.append)
    steps = -(-len(source) // 16)
    assert sum(seen) == 2 * len(source) and len(seen) == 2 * steps
    assert ends == [0, 1]
    first_mean = sum(range(steps)) / steps
    last_mean = sum(range(steps, 2 * steps)) / steps
    assert reports == [("warm-up", 0, first_mean), ("warm-up", 1, last_mean)]
    assert result == last_mean


def test_fit_on_an_empty_source_calls_nothing() -> None:
    reports: list = []
    _, context = _context(reports=reports)
    empty = context.task_data(0).subset(torch.zeros(0, dtype=torch.long))
    assert context.fit(lambda batch: pytest.fail("step called"), empty, 3, "x", end_epoch=lambda e: pytest.fail()) == 0.0
    assert reports == []


def test_fit_refuses_a_non_finite_loss_naming_where() -> None:
    _, context = _context()
    steps = iter([1.0, 1.0, float("nan")])
    with pytest.raises(TrainingError, match=r"the loss became nan in bias correction, epoch 1/4, step 3/\d+; the run stopped"):
        context.fit(lambda batch: next(steps), context.task_data(0), 4, "bias correction")


def test_evaluation_mode_restores_the_mode() -> None:
    net = nn.Sequential(nn.Linear(2, 2))
    with evaluation_mode(net):
        assert not net.training and not net[0].training
    assert net.training
    net.eval()
    with pytest.raises(RuntimeError), evaluation_mode(net):
        raise RuntimeError
    assert not net.training


def test_training_mode_sets_and_restores_either_mode() -> None:
    net = nn.Sequential(nn.Linear(2, 2)).eval()
    with training_mode(net, True):
        assert net.training and net[0].training
    assert not net.training and not net[0].training


def _image_folder(root) -> None:
    import numpy as np
    from PIL import Image

    for label in range(5):
        (root / f"c{label}").mkdir(parents=True)
        for index in range(6):
            pixels = np.random.default_rng(10 * label + index).integers(0, 256, (12, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"c{label}" / f"{index}.{'png' if index % 2 else 'jpg'}")


def test_batches_are_the_same_with_0_and_2_worker_processes(tmp_path) -> None:
    """dataset.num_workers reads batches ahead in worker processes; the order and the augmentation
    are drawn here from the run's generator, so the batches are identical."""
    _image_folder(tmp_path)
    runs = []
    for workers in (0, 2):
        dataset = build_dataset({"name": "image-folder", "root": str(tmp_path), "batch_size": 2, "num_workers": workers})
        context = build_context(dataset, "cpu", torch.Generator().manual_seed(7))
        assert context.num_workers == workers
        source = dataset.task_source(0)
        runs.append([*context.batches(source), *context.batches(dataset.test_source(1), shuffle=False, augment=False)])
        runs[-1].append(context.generator.get_state())
    zero, two = runs
    assert len(zero) == len(two) == 3 + 1 + 1  # 5 training images (one of 6 is test data) in 3 batches, 1 test batch, the state
    for first, second in zip(zero[:-1], two[:-1]):
        for name in ("inputs", "labels", "not_aug_inputs", "indices"):
            assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert zero[0].inputs.shape == (2, 3, 224, 224) and not torch.equal(zero[0].inputs, zero[0].not_aug_inputs)
    assert torch.equal(zero[-1], two[-1])  # the generator drew the same numbers


def test_fit_by_iterations_runs_that_many_steps_cutting_the_last_pass() -> None:
    """dataset.fitting_mode=iters: n_iters steps per task, epochs as needed, the last cut short (the original's)."""
    digits = build_dataset({"name": "seq-digits", "batch_size": 64, "fitting_mode": "iters", "n_iters": 10})
    reports: list = []
    context = build_context(digits, "cpu", torch.Generator().manual_seed(0), lambda *args: reports.append(args))
    assert context.n_iters == 10 and digits.describe()["n_iters"] == 10
    source = context.task_data(0)  # 5 batches of 64 per pass
    steps_per_pass = -(-len(source) // 64)
    seen, epochs_ended = [], []

    def step(batch: Batch) -> float:
        seen.append(batch)
        return float(len(seen))  # the loss of step k is k

    loss = context.fit(step, source, 99, "task", end_epoch=epochs_ended.append, iterations=context.n_iters)
    assert len(seen) == 10 and epochs_ended == list(range(-(-10 // steps_per_pass)))
    last_pass = 10 - steps_per_pass * (len(epochs_ended) - 1)
    assert loss == sum(range(11 - last_pass, 11)) / last_pass
    assert [report[1] for report in reports] == epochs_ended
    assert build_context(build_dataset("seq-digits"), "cpu", torch.Generator()).n_iters is None


@pytest.mark.parametrize(("fields", "message"), [
    ({"fitting_mode": "time"}, "dataset.fitting_mode='time' is not allowed; allowed: epochs, iters"),
    ({"fitting_mode": "iters"}, "dataset.n_iters=None is not allowed with dataset.fitting_mode=iters; allowed: an integer >= 1"),
    ({"n_iters": 5}, "dataset.n_iters=5 is not allowed with dataset.fitting_mode=epochs; allowed: null, or dataset.fitting_mode=iters"),
])
def test_fitting_mode_errors_are_one_line(fields: dict, message: str) -> None:
    from mammoth.errors import DatasetError

    with pytest.raises(DatasetError) as error:
        build_dataset({"name": "seq-digits", **fields})
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
