"""Every new method through all the harness's hooks on two fake tasks, in the harness's order:
finite losses, finite predictions over all classes, and an extra state that survives a round trip
(values checked on seq-digits)."""

from __future__ import annotations

import io
import math
from types import SimpleNamespace

import pytest
import torch

from mammoth.engine.context import build_context
from mammoth.errors import TrainingError

REQUIRED = {"ewc_on": {"e_lambda": 1.0, "gamma": 1.0}, "si": {"c": 1.0, "xi": 1.0}, "mer": {"beta": 1.0, "gamma": 1.0},
            "bic": {"bic_epochs": 2}, "gdumb": {"fitting_epochs": 2}, "xder": {"alpha": 0.3, "beta": 0.8}}
METHODS = ("lwf", "ewc_on", "si", "agem", "gem", "icarl", "er_ace", "gdumb", "bic", "mer", "xder")


@pytest.mark.parametrize("name", METHODS)
def test_two_tasks_through_every_hook(name, make_model, make_batch, dataset, run_task) -> None:
    dataset.config = SimpleNamespace(batch_size=8, n_epochs=2)
    model = make_model(name, **REQUIRED.get(name, {}))
    losses: list = []
    observe = model.observe
    model.observe = lambda *batch: losses.append(observe(*batch)) or losses[-1]
    for task in range(dataset.n_tasks):
        run_task(model, task)
    del model.observe
    # gdumb trains on nothing during the tasks: its end_task offers each task's 2 batches to the
    # memory once; every other method steps on every batch of 2 epochs of 16 examples (or more:
    # the stored ones) per task, in batches of 8
    if name == "gdumb":
        assert losses == [0.0] * 4 and model.memory.num_seen == 32
    else:
        assert len(losses) >= 2 * 2 * 2 and all(isinstance(loss, float) and math.isfinite(loss) for loss in losses)
    model.eval()
    inputs = dataset.test_transform(make_batch(1)[2])
    with torch.no_grad():
        scores = model(inputs)
    # every class has been seen (icarl scores -inf for a class without exemplars; a nan would show too)
    assert scores.shape == (8, 4) and torch.isfinite(scores).all()
    saved = io.BytesIO()
    torch.save(model.extra_state(), saved)  # what a checkpoint holds, read back as the harness does
    restored = make_model(name, seed=1, **REQUIRED.get(name, {}))
    restored.load_state_dict(model.state_dict())
    restored.load_extra_state(torch.load(io.BytesIO(saved.getvalue()), weights_only=True))
    restored.current_task = model.current_task
    restored.eval()
    with torch.no_grad():
        assert torch.equal(restored(inputs), scores)


INNER_LOOPS = {"lwf": "lwf warm-up, task 2/2", "bic": "bic correction, task 2/2", "gdumb": "gdumb fit of the memory"}
INNER_VALUES = {"lwf": {}, "bic": {"bic_epochs": 2, "buffer_size": 8, "valset_split": 0.5}, "gdumb": {"fitting_epochs": 2}}


def _second_task(model, break_before_end_task: bool = False) -> None:
    """Task 2 in the harness's order; with ``break_before_end_task`` the classifier's weights become
    nan after training (before ``end_task``)."""
    data = model.context.task_data(1)
    model.begin_task(1)
    source = model.training_data(1, data)
    model.context.fit(lambda b: model.observe(b.inputs, b.labels, b.not_aug_inputs), source, 1, "task 2/2")
    if break_before_end_task:
        with torch.no_grad():
            model.net.classifier.weight.fill_(float("nan"))
    model.end_task(1, data)


@pytest.mark.parametrize("name", sorted(INNER_LOOPS))
def test_inner_loops_report_through_the_context_and_stop_on_a_non_finite_loss(name, make_model, dataset, run_task):
    model = make_model(name, **INNER_VALUES[name])
    reports: list = []
    model.attach(build_context(dataset, "cpu", torch.Generator().manual_seed(0), lambda *args: reports.append(args)))
    run_task(model, 0)
    _second_task(model)
    inner = [(epoch, loss) for description, epoch, loss in reports if description == INNER_LOOPS[name]]
    epochs = {"lwf": 1, "bic": 2, "gdumb": 2}[name]  # n_epochs, bic_epochs, fitting_epochs
    assert [epoch for epoch, _ in inner] == list(range(epochs)) and all(math.isfinite(loss) for _, loss in inner)

    broken = make_model(name, **INNER_VALUES[name])
    run_task(broken, 0)
    if name != "bic":  # lwf warms up with the classifier's weights, gdumb restarts from its initial ones
        weights = broken.initial_state["classifier.weight"] if name == "gdumb" else broken.net.classifier.weight
        with torch.no_grad():
            weights.fill_(float("nan"))
    with pytest.raises(TrainingError, match=rf"^the loss became nan in {INNER_LOOPS[name]}, epoch 1/{epochs}, step 1/"):
        _second_task(broken, break_before_end_task=name == "bic")
