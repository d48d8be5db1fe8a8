"""Every registered method's state survives a checkpoint that loads with weights_only=True: what
it keeps (buffers, importance weights, class means...) is only tensors, numbers, strings, lists
and dicts, and a restored model continues exactly as the original."""

from __future__ import annotations

import pytest
import torch

from mammoth.models import MODELS
from mammoth.engine.loop import TrainingState, train_task
from mammoth.engine.checkpoint import load_checkpoint, save_checkpoint


def _train_two_tasks(model) -> None:
    """Both tasks of the fake dataset through the harness's ``train_task`` (one epoch, batches of 8)."""
    for task in range(2):
        train_task(model, model.context, task, model.context.task_data(task))


def _required_values(name: str) -> dict:
    """A value for every argument of ``name`` that has no default (sizes 32, other numbers 0.5)."""
    values = {}
    for argument in MODELS.get(name).arguments:
        if argument.required:
            values[argument.name] = 32 if "size" in argument.name else (1 if argument.hint is int else 0.5)
    return values


@pytest.mark.parametrize("name", MODELS.names())
def test_a_trained_method_round_trips_through_a_weights_only_checkpoint(tmp_path, name, make_model, make_batch, dataset):
    model = make_model(name, **_required_values(name))
    _train_two_tasks(model)
    path = tmp_path / "checkpoint.pt"
    state = TrainingState(2, {"class_il": [[50.0], [25.0, 75.0]]}, [1.0, 1.0], [0.1, 0.1])
    save_checkpoint(path, model, torch.Generator().manual_seed(3), state, {"model": name})

    restored = make_model(name, seed=1, **_required_values(name))
    assert load_checkpoint(path, restored, torch.Generator(), {"model": name}) == state
    for (key, value), (_, restored_value) in zip(model.state_dict().items(), restored.state_dict().items()):
        assert torch.equal(value, restored_value), key
    # Not checkpoint state: after a resume the harness calls begin_task(next task), which sets it.
    restored.current_task = model.current_task
    batch = make_batch(1, seed=9)
    model.eval(), restored.eval()
    with torch.no_grad():
        assert torch.equal(model(batch[0]), restored(batch[0]))  # the same predictions, method hooks included
