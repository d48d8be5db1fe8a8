"""Every method that takes ``compile=true`` trains compiled exactly as it does uncompiled: the same
accuracies, weights and state, with its backbone's forward compiled by dynamo (torch.compile's
``eager`` backend: dynamo's tracing, guards and recompilations, the same arithmetic), its hooks
(ranpac's adapters) included; and the number of graphs each compiles stays within
mammoth.engine.compiled.RECOMPILE_LIMIT (reaching it raises). Second suite (``-m distributed``):
dynamo traces each method's forward variants in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from mammoth.datasets import build_dataset
from mammoth.engine import compiled
from mammoth.engine.compiled import compile_backbone, compiled_run
from mammoth.engine.loop import run_tasks
from mammoth.models import MODELS, build_model
from test_methods_bf16 import arguments, one_thread, tiny_network  # noqa: F401  (a fixture)

COMPILED_METHODS = sorted(name for name in MODELS.names() if MODELS.get(name).target.supports_compile)


def run(name: str, compile: bool, run_dir: Path):
    """``name`` on seq-digits in 2 tasks of 8 steps each (batches of 32, seed 7; the networks of
    tests/models/test_methods_bf16.py), compiled or not: the model and its final state."""
    dataset = build_dataset({"name": "seq-digits", "n_epochs": 1, "batch_size": 32, "n_tasks": 2,
                             "fitting_mode": "iters", "n_iters": 8}, seed=7)
    torch.manual_seed(7)
    model = build_model(name, net=tiny_network(name, dataset), dataset=dataset, **arguments(name))
    if compile:
        compile_backbone(model.net)
    with compiled_run(compile):
        state = run_tasks(model, dataset, torch.device("cpu"), run_dir, 7, {"model": name})
    return model, state


@pytest.mark.distributed
@pytest.mark.parametrize("name", COMPILED_METHODS)
def test_every_method_trains_compiled_as_uncompiled(tmp_path: Path, name: str, monkeypatch, one_thread) -> None:
    monkeypatch.setattr(compiled, "BACKEND", "eager")
    (tmp_path / "plain").mkdir(), (tmp_path / "compiled").mkdir()
    plain, plain_state = run(name, False, tmp_path / "plain")
    torch._dynamo.reset()
    counters.clear()
    model, state = run(name, True, tmp_path / "compiled")
    graphs = counters["stats"]["unique_graphs"]
    assert 1 <= graphs <= compiled.RECOMPILE_LIMIT, graphs
    assert state.accuracies == plain_state.accuracies
    for (key, value), (_, expected) in zip(model.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(value, expected), key
