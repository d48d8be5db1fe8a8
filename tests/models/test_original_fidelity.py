"""agem_r, fdr, rpc, gss, hal and er_ace_aer_abs against the ORIGINAL Mammoth's code: the same tiny MLP and initial
weights, the same batches, settings and random draws give the per-step losses, the memory's
contents after each task and the probe logits that ``scripts/reference_original_methods.py``
stored from the original's own classes (tests/models/data/original_methods_reference.json).

The draws: the script feeds the original this implementation's (its docstring says how); here
the buffer's generator is seeded with ``BUFFER_SEED`` after ``attach`` and the run's generator
with ``end_task_seed(task)`` before each ``end_task``."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Callable

import pytest
import torch
from torch import Tensor

from mammoth.backbones.mlp import MNISTMLP
from mammoth.datasets.source import DataSource, InMemorySource
from mammoth.engine.context import build_context
from mammoth.models import build_model
from reference_tasks import PairTasks, reference_script

REPO = Path(__file__).resolve().parents[2]
REFERENCE = Path(__file__).parent / "data" / "original_methods_reference.json"
#: float32 on a CPU, the same operations in the same order on 16-8-8-4 layers, 6 steps (hal: and
#: 100 anchor steps per class): the differences are BLAS summation orders, ~1e-7 per step.
LOSS_TOLERANCE, VALUE_TOLERANCE = 1e-5, 1e-4


@functools.lru_cache(maxsize=1)
def script() -> ModuleType:
    """scripts/reference_original_methods.py as a module (its top level needs only torch)."""
    return reference_script('reference_original_methods')


@functools.lru_cache(maxsize=1)
def reference() -> dict[str, Any]:
    """The original's numbers (written by the script)."""
    return json.loads(REFERENCE.read_text())


class TinyDataset(PairTasks):
    """The script's benchmark: 2 class-IL tasks of 2 classes, 1x4x4 images, no transforms."""

    name = "original-reference"
    n_classes, n_tasks, setting = 4, 2, "class-il"
    input_shape = (1, 4, 4)

    def __init__(self) -> None:
        self.config = SimpleNamespace(batch_size=script().BATCH, n_epochs=1)

    def task_source(self, task: int) -> DataSource:
        """The task's images of the script's ``task_images``."""
        return InMemorySource(*script().task_images(task))


def our_values(name: str) -> dict[str, Any]:
    """The script's settings of ``name`` as this implementation's ``model.*`` values."""
    return {key: value for key, value in script().SETTINGS[name].items()}


def run_ours(name: str, memory: Callable[[Any], dict[str, Tensor]], **values: Any) -> dict[str, Any]:
    """``name`` over the script's two tasks: per-step losses, ``memory(model)`` and probe logits after each task."""
    net = MNISTMLP(num_classes=4, input_shape=(1, 4, 4), hidden_sizes=(script().HIDDEN, script().HIDDEN))
    script().load_weights(net)
    dataset = TinyDataset()
    model = build_model(name, net=net, dataset=dataset, **{**our_values(name), **values})
    model.attach(build_context(dataset, "cpu", torch.Generator().manual_seed(0)))
    model.buffer.generator.manual_seed(script().BUFFER_SEED)
    result: dict[str, Any] = {"losses": [], "memory": [], "logits": []}
    epochs = script().EPOCHS.get(name, 1)
    dataset.config.n_epochs = model.context.n_epochs = epochs
    for task in range(2):
        model.begin_task(task)
        model.train()
        losses = []
        for epoch in range(epochs):
            losses += [model.observe(x, y, x) for x, y in script().batches(task)]
            model.end_epoch(epoch)
        result["losses"].append(losses)
        model.context.generator.manual_seed(script().end_task_seed(task))
        model.end_task(task, dataset.task_source(task))
        result["memory"].append(memory(model))
        model.eval()
        with torch.no_grad():
            result["logits"].append(model(script().probe_images()))
    result["model"] = model
    return result


def reservoir_memory(model: Any) -> dict[str, Tensor]:
    """The filled slots of a ReplayBuffer, in slot order."""
    return {name: getattr(model.buffer, name).clone() for name in model.buffer.fields}


def assert_matches(ours: dict[str, Any], original: dict[str, Any]) -> None:
    """Losses, memories (exact labels, examples to the float) and logits step by step, task by task."""
    for task in range(2):
        assert ours["losses"][task] == pytest.approx(original["losses"][task], abs=LOSS_TOLERANCE), task
        for field, stored in original["memory"][task].items():
            mine = ours["memory"][task][field]
            if field.endswith("labels"):
                assert mine.tolist() == [int(v) for v in stored], (task, field)
            else:
                torch.testing.assert_close(mine.float(), torch.tensor(stored), atol=VALUE_TOLERANCE, rtol=0,
                                           msg=f"task {task} {field}")
        torch.testing.assert_close(ours["logits"][task], torch.tensor(original["logits"][task]),
                                   atol=VALUE_TOLERANCE, rtol=0, msg=f"task {task} logits")


# ---- agem_r ----


def test_agem_r_is_the_originals_step_by_step(monkeypatch) -> None:
    import mammoth.models.agem as agem  # agem_r steps as A-GEM does, with agem's project

    dots, project = [], agem.project
    monkeypatch.setattr(agem, "project", lambda g, r: dots.append(float(g @ r)) or project(g, r))
    original = reference()["agem_r"]
    ours = run_ours("agem_r", reservoir_memory)
    assert_matches(ours, original)
    # every step after the first replayed, and some of task 1's gradients were projected
    assert len(dots) == 5 and min(dots) < 0
    # the reservoir replaced slots in both tasks (24 examples through 6 slots) and replay projected
    assert ours["model"].buffer.num_seen == 24
    assert sorted(set(ours["memory"][1]["labels"].tolist())) != sorted(set(ours["memory"][0]["labels"].tolist()))


# ---- fdr ----


def test_fdr_is_the_originals_step_by_step() -> None:
    original = reference()["fdr"]
    ours = run_ours("fdr", reservoir_memory)
    assert_matches(ours, original)
    # task 0's 6 examples, then (the original's count: buffer_size // 1 per task) all 6 kept and 6 of
    # task 1 offered to the full reservoir
    assert ours["memory"][0]["task_labels"].tolist() == [0] * 6
    assert set(ours["memory"][1]["task_labels"].tolist()) == {0, 1}
    assert ours["model"].buffer.num_seen == 12


# ---- rpc ----


def test_rpc_is_the_originals_step_by_step() -> None:
    original = reference()["rpc"]
    ours = run_ours("rpc", reservoir_memory)
    assert_matches(ours, original)  # the logits are forward's: the simplex projection
    # task 0: 2 + 2 examples and the remainder slot to a class drawn at random; task 1: task 0's
    # classes cut to 5 // 2 = 2 each, the one free slot to a task-1 class drawn at random
    assert sorted(ours["memory"][0]["labels"].tolist()) in ([0, 0, 0, 1, 1], [0, 0, 1, 1, 1])
    labels = sorted(ours["memory"][1]["labels"].tolist())
    assert labels[:4] == [0, 0, 1, 1] and labels[4] in (2, 3)


def test_rpc_simplex_is_regular_and_centred() -> None:
    from mammoth.models.rpc import dsimplex

    vertices = dsimplex(10)
    assert vertices.shape == (9, 10)
    torch.testing.assert_close(vertices.norm(dim=0), torch.ones(10, dtype=torch.float64))
    torch.testing.assert_close(vertices.sum(1), torch.zeros(9, dtype=torch.float64), atol=1e-12, rtol=0)
    cosines = vertices.t() @ vertices  # every pair of vertices at the same angle: -1 / (C - 1)
    torch.testing.assert_close(cosines[~torch.eye(10, dtype=torch.bool)], torch.full((90,), -1 / 9, dtype=torch.float64))


# ---- gss ----


def gss_memory(model: Any) -> dict[str, Tensor]:
    """The filled slots of the gradient memory: examples, labels, scores."""
    filled = len(model.buffer)
    return {name: getattr(model.buffer, name)[:filled].clone() for name in ("examples", "labels", "scores")}


def test_gss_is_the_originals_step_by_step() -> None:
    original = reference()["gss"]
    ours = run_ours("gss", gss_memory)
    assert_matches(ours, original)
    # the memory filled with the first batches' score 0.1, then examples replaced by the
    # score-weighted draw, each with its own gradient's score
    scores = ours["memory"][1]["scores"]
    assert (scores != 0.1).any() and ((scores >= 0) & (scores <= 2)).all()
    assert ours["model"].buffer.num_seen == 24


# ---- hal ----


def ring_memory(model: Any) -> dict[str, Tensor]:
    """The filled slots of the ring memory, in slot order."""
    filled = model.buffer.filled.nonzero().flatten()
    return {"examples": model.buffer.examples[filled].clone(), "labels": model.buffer.labels[filled].clone()}


def test_hal_is_the_originals_step_by_step() -> None:
    original = reference()["hal"]
    ours = run_ours("hal", ring_memory)
    assert_matches(ours, original)
    # one anchor per class of each task, learned over 100 steps each from a uniform draw
    anchors = ours["model"].anchors
    assert anchors.shape == (4, 1, 4, 4)
    torch.testing.assert_close(anchors, torch.tensor(original["anchors"]), atol=VALUE_TOLERANCE, rtol=0)
    # the ring keeps buffer_size // n_tasks = 3 examples of each task, the newest
    assert ours["memory"][1]["labels"][:3].lt(2).all() and ours["memory"][1]["labels"][3:].ge(2).all()


def test_hal_paper_anchors_keep_the_current_weights_for_the_second_term() -> None:
    default, paper = (run_ours("hal", ring_memory, paper_anchors=value) for value in (False, True))
    assert default["losses"][0] == paper["losses"][0]  # the same first task: anchors come at its end
    assert (default["model"].anchors - paper["model"].anchors).abs().max() > 1e-3


# ---- er_ace_aer_abs ----


def loss_memory(model: Any) -> dict[str, Tensor]:
    """The filled slots of the loss-scored memory: examples, labels, the losses kept (``importance``)."""
    filled = len(model.buffer)
    return {"examples": model.buffer.examples[:filled].clone(), "labels": model.buffer.labels[:filled].clone(),
            "importance": model.buffer.importance[:filled].clone()}


def test_er_ace_aer_abs_is_the_originals_step_by_step() -> None:
    original = reference()["er_ace_aer_abs"]
    ours = run_ours("er_ace_aer_abs", loss_memory)
    assert_matches(ours, original)
    model = ours["model"]
    # AER: only the first epoch of each task stores, 2 of each batch of 4 (alpha 0.5): 6 + 6 offered
    assert model.buffer.num_seen == 12
    # ABS replaced some of task 0's slots with task 1's examples
    assert set(ours["memory"][1]["labels"].tolist()) & {2, 3} and set(ours["memory"][1]["labels"].tolist()) & {0, 1}
