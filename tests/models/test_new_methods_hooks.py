"""Every new method through all the harness's hooks on two fake tasks: finite losses, predictions
over all classes, and an extra state that survives a round trip (values checked on seq-digits)."""

from __future__ import annotations

import io
import math

import pytest
import torch

REQUIRED = {"ewc_on": {"e_lambda": 1.0, "gamma": 1.0}, "si": {"c": 1.0, "xi": 1.0}, "mer": {"beta": 1.0, "gamma": 1.0},
            "bic": {"bic_epochs": 2}, "gdumb": {"fitting_epochs": 2}, "xder": {"alpha": 0.3, "beta": 0.8}}
METHODS = ("lwf", "ewc_on", "si", "agem", "gem", "icarl", "er_ace", "gdumb", "bic", "mer", "xder")


@pytest.mark.parametrize("name", METHODS)
def test_two_tasks_through_every_hook(name, make_model, make_batch, dataset) -> None:
    model = make_model(name, **REQUIRED.get(name, {}))
    for task in range(dataset.n_tasks):
        model.begin_task(task)
        _, labels, not_aug = make_batch(task, size=16)
        x, y = model.training_data(task, (not_aug * 255).round().to(torch.uint8), labels)
        assert x.dtype == torch.uint8 and len(x) == len(y) >= 16
        for epoch in range(2):
            for start in range(0, len(y), 8):
                batch = dataset.to_float(x[start : start + 8])
                loss = model.observe(dataset.train_transform(batch), y[start : start + 8], batch)
                assert isinstance(loss, float) and math.isfinite(loss)
            model.end_epoch(epoch)
        model.end_task(task)
    model.eval()
    inputs = dataset.test_transform(make_batch(1)[2])
    with torch.no_grad():
        scores = model(inputs)
    assert scores.shape == (8, 4) and not torch.isnan(scores).any()
    assert scores[:, :4].argmax(1).max() < 4
    saved = io.BytesIO()
    torch.save(model.extra_state(), saved)  # what a checkpoint holds, read back as the harness does
    restored = make_model(name, seed=1, **REQUIRED.get(name, {}))
    restored.load_state_dict(model.state_dict())
    restored.load_extra_state(torch.load(io.BytesIO(saved.getvalue()), weights_only=True))
    restored.current_task = model.current_task
    restored.eval()
    with torch.no_grad():
        assert torch.equal(restored(inputs), scores)
