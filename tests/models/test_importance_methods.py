"""mas, rwalk and ewc (PyCIL's offline EWC) held step by step to the reference implementations' own
code (Avalanche's MASPlugin and RWalkPlugin, PyCIL's models/ewc.py), run by
scripts/reference_importance_methods.py on the same tiny network and batches over 3 tasks; and what
each refuses.

Tolerances: both sides compute in float32 on the CPU with the same operations in the same order
but for the matrix products' and sums' internal order (BLAS, threads), so every value is compared
to a relative 1e-5 of its size plus an absolute floor stated per quantity (measured on this
machine, torch 2.14 on 2 CPU threads: every loss, importance, penalty term, anchor, weight and logit
bit-identical to the reference's for all three methods, but ewc's step loss, which the test sums
from PyCIL's recorded terms in float64: 3e-8 apart; the tolerances leave room for other BLAS orders)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import Tensor

from mammoth.backbones.mlp import MNISTMLP
from mammoth.datasets.source import Batch, DataSource, InMemorySource
from mammoth.engine.context import build_context
from mammoth.errors import ConfigError
from mammoth.models import build_model
from reference_tasks import PairTasks, reference_script

REPO = Path(__file__).resolve().parents[2]
REFERENCE_FILE = REPO / "tests" / "models" / "data" / "importance_methods_reference.json"


@lru_cache(maxsize=1)
def script() -> ModuleType:
    """scripts/reference_importance_methods.py as a module (its top level needs only torch)."""
    return reference_script('reference_importance_methods')


@lru_cache(maxsize=1)
def reference() -> dict[str, Any]:
    """The reference implementations' numbers (written by the script)."""
    return json.loads(REFERENCE_FILE.read_text())


class Config:
    batch_size = 4
    n_epochs = 2


class TinyDataset(PairTasks):
    """The script's benchmark: 3 class-IL tasks of 2 classes, 1x4x4 inputs, no transforms."""

    name, setting, n_classes, n_tasks, input_shape = "reference-tiny", "class-il", 6, 3, (1, 4, 4)
    config = Config()

    def task_source(self, task: int) -> DataSource:
        return InMemorySource(*script().task_data(task))


def tiny_model(name: str, dataset: Any = None, **values: Any) -> Any:
    """``name`` on the script's tiny network (its initial weights), lr 0.1, attached to a CPU context
    (``dataset``: a TinyDataset by default)."""
    net = MNISTMLP(num_classes=6, input_shape=(1, 4, 4), hidden_sizes=(8,))
    with torch.no_grad():
        for parameter, value in zip(net.parameters(), script().initial_weights()):
            parameter.copy_(value)
    dataset = TinyDataset() if dataset is None else dataset
    model = build_model(name, net=net, dataset=dataset, lr=0.1, **values)
    model.attach(build_context(dataset, "cpu", torch.Generator().manual_seed(0)))
    return model


def train_task(model: Any, task: int) -> list[float]:
    """``task`` as the script trains it: its epochs' batches in ``train_order``; returns each step's loss."""
    inputs, labels = script().task_data(task)
    model.begin_task(task)
    model.train()
    losses = []
    for epoch in range(script().EPOCHS):
        for index in script().train_order(task, epoch):
            losses.append(model.observe(inputs[index], labels[index], inputs[index]))
        model.end_epoch(epoch)
    return losses


def probe_logits(model: Any) -> Tensor:
    model.eval()
    with torch.no_grad():
        return model(script().probe_inputs())


def close(ours: Tensor | list, theirs: list, floor: float) -> None:
    """``ours`` equals ``theirs`` to a relative 1e-5 plus ``floor``."""
    ours = torch.as_tensor(ours, dtype=torch.float32).detach().flatten()
    theirs = torch.as_tensor(theirs, dtype=torch.float32).flatten()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=floor)


# ---- mas ----


def test_mas_matches_avalanches_mas_plugin_step_by_step() -> None:
    expected = reference()["avalanche"]["mas"]
    assert expected["settings"] == {"lambda_reg": 1.0, "alpha": 0.5}  # Avalanche's defaults, ours too
    model = tiny_model("mas")
    assert (model.lambda_reg, model.alpha) == (1.0, 0.5)
    for task in range(3):
        losses = train_task(model, task)
        close(losses, expected["losses"][task], 1e-6)  # CE + lambda_reg * penalty, every step
        assert (model.penalty().item() > 1e-4) == (task > 0)  # the penalty pulled the later tasks' steps
        model.end_task(task, model.context.task_data(task))
        close(model.importance, expected["importance"][task], 1e-7)
        close(model.anchor, expected["anchor"][task], 1e-7)
        close(model.net.get_params(), expected["weights"][task], 1e-6)
        close(probe_logits(model), expected["logits"][task], 1e-5)


def test_mas_importance_merges_with_alpha() -> None:
    model = tiny_model("mas", alpha=0.25)
    train_task(model, 0)
    model.end_task(0, model.context.task_data(0))
    first = model.importance.clone()
    train_task(model, 1)
    this_task = model.output_sensitivity(model.context.task_data(1))
    model.end_task(1, model.context.task_data(1))
    torch.testing.assert_close(model.importance, 0.25 * first + 0.75 * this_task)
    assert torch.equal(model.anchor, model.net.get_params())


@pytest.mark.parametrize(("values", "message"), [
    ({"alpha": 1.5}, r"^model\.alpha=1\.5 is not in \[0, 1\]; allowed: 0 <= alpha <= 1$"),
    ({"lambda_reg": -1.0}, r"^model\.lambda_reg=-1\.0 is negative"),
])
def test_mas_refuses_bad_values(values, message) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny_model("mas", **values)


# ---- presets ----

#: preset -> {our dotted key: the source's value} (each preset's comment names its source file)
PRESETS = {
    "mas-seq-tinyimg": {"dataset.name": "seq-tinyimg", "dataset.batch_size": 200, "dataset.n_epochs": 70,
                        "model.lambda_reg": 2.0, "model.alpha": 0.5, "model.lr": 0.005, "model.momentum": 0.9},
    "rwalk-seq-mnist": {"dataset.name": "seq-mnist", "dataset.batch_size": 64, "dataset.n_epochs": 10,
                        "backbone.hidden_sizes": [256, 256], "model.ewc_lambda": 0.1, "model.ewc_alpha": 0.9,
                        "model.delta_t": 10, "model.optimizer": "adam", "model.lr": 0.001},
    "ewc-seq-cifar100": {"dataset.name": "seq-cifar100", "dataset.batch_size": 128, "dataset.n_epochs": 180,
                         "model.lr": 0.1, "model.lr_milestones": [70, 120, 150], "model.sched_multistep_lr_gamma": 0.1,
                         "model.lamda": 1000.0, "model.momentum": 0.9, "model.weight_decay": 0.0002,
                         "model.init_weight_decay": 0.0005, "model.fishermax": 0.0001},
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_holds_its_sources_settings_and_builds(name: str) -> None:
    from omegaconf import OmegaConf

    from composing import compose_mammoth
    from mammoth.datasets import build_dataset

    cfg = compose_mammoth(f"experiment={name}")
    selected = {key: OmegaConf.select(cfg, key) for key in PRESETS[name]}
    assert {key: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for key, v in selected.items()} == PRESETS[name]
    dataset = build_dataset(cfg.dataset)  # reads no data
    net = MNISTMLP(num_classes=dataset.n_classes, input_shape=(1, 4, 4), hidden_sizes=(8,))
    model = build_model(cfg.model, net=net, dataset=dataset)
    assert model.lr == PRESETS[name]["model.lr"]


# ---- rwalk ----


def test_rwalk_matches_avalanches_rwalk_plugin_step_by_step() -> None:
    expected = reference()["avalanche"]["rwalk"]
    settings = expected["settings"]
    assert (settings["ewc_lambda"], settings["ewc_alpha"]) == (0.1, 0.9)  # Avalanche's defaults, ours too
    model = tiny_model("rwalk", delta_t=settings["delta_t"])
    assert (model.ewc_lambda, model.ewc_alpha, tiny_model("rwalk").delta_t) == (0.1, 0.9, 10)
    for task in range(3):
        losses = train_task(model, task)
        close(losses, expected["losses"][task], 1e-6)  # CE + ewc_lambda * penalty, every step
        assert (model.penalty().item() > 1e-4) == (task > 0)
        model.end_task(task, model.context.task_data(task))
        close(model.fisher, expected["importance"][task], 1e-7)
        # the scores divide by (0.5 * fisher * step**2 + eps): large where the weights hardly moved
        scale = max(abs(value) for value in expected["scores"][task])
        close(model.task_scores, expected["scores"][task], 1e-6 * scale)
        close(model.penalties, expected["penalties"][task], 1e-6)
        close(model.anchor, expected["anchor"][task], 1e-7)
        close(model.net.get_params(), expected["weights"][task], 1e-6)
        close(probe_logits(model), expected["logits"][task], 1e-5)
    assert model.iterations == 18
    # the penalties are normalised: the Fisher's part and the positive scores' part each at most 1
    assert 1.0 < model.penalties.max().item() <= 2.0 and model.penalties.min().item() >= 0


def test_rwalk_resumes_its_step_count_and_importances() -> None:
    model = tiny_model("rwalk", delta_t=4)
    train_task(model, 0)
    model.end_task(0, model.context.task_data(0))
    resumed = tiny_model("rwalk", delta_t=4)
    resumed.net.load_state_dict(model.net.state_dict())
    resumed.load_extra_state(model.extra_state())
    assert resumed.iterations == 6
    for each in (model, resumed):
        train_task(each, 1)
        each.end_task(1, each.context.task_data(1))
    for name in ("fisher", "task_scores", "anchor", "penalties"):
        assert torch.equal(getattr(resumed, name), getattr(model, name)), name


@pytest.mark.parametrize(("values", "message"), [
    ({"ewc_alpha": -0.1}, r"^model\.ewc_alpha=-0\.1 is not in \[0, 1\]; allowed: 0 <= ewc_alpha <= 1$"),
    ({"delta_t": 0}, r"^model\.delta_t=0 is not a positive integer; allowed: delta_t >= 1$"),
])
def test_rwalk_refuses_bad_values(values, message) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny_model("rwalk", **values)


# ---- ewc (PyCIL) ----


def per_parameter(model: Any, values: Tensor, total: int) -> dict[str, list[float]]:
    """A flat vector of the tiny network as PyCIL's parameter names, the head cut to its first ``total`` rows."""
    hidden, bias, head, head_bias = values.split([128, 8, 48, 6])
    return {"backbone.weight": hidden.tolist(), "backbone.bias": bias.tolist(),
            "fc.weight": head[: total * 8].tolist(), "fc.bias": head_bias[:total].tolist()}


def test_ewc_matches_pycils_ewc_step_by_step() -> None:
    expected = reference()["pycil"]["ewc"]
    settings = expected["settings"]
    assert (settings["lamda"], settings["fishermax"]) == (1000, 0.0001)  # PyCIL's, our defaults too
    model = tiny_model("ewc", weight_decay=0.0, init_weight_decay=0.0)  # the script runs PyCIL without weight decay
    assert (model.lamda, model.fishermax, model.momentum) == (1000.0, 0.0001, 0.9)
    penalties: list[float] = []
    penalty = model.penalty
    model.penalty = lambda: penalties.append(penalty()) or penalties[-1]  # records each step's term
    for task in range(3):
        penalties.clear()
        losses = train_task(model, task)
        total = 2 * (task + 1)
        close([value.item() for value in penalties], expected["ewc"][task], 1e-12)  # the EWC term of every step (before lamda)
        ce = torch.tensor(expected["ce"][task], dtype=torch.float64)
        close(losses, ce + 1000 * torch.tensor(expected["ewc"][task] or [0.0] * len(ce), dtype=torch.float64), 1e-6)
        # the Fisher pass over PyCIL's shuffled loader's next pass (the script's order)
        inputs, labels = script().task_data(task)
        order = script().train_order(task, script().EPOCHS)
        model.context.batches = lambda source, **_: (Batch(inputs[i], labels[i], inputs[i], i) for i in order)
        model.end_task(task, model.context.task_data(task))
        ours = per_parameter(model, model.fisher, total)
        for name, values in expected["fisher"][task].items():
            close(ours[name], values, 1e-11)
        assert not model.fisher[128 + 8 + total * 8 : 184].any() and not model.fisher[184 + total :].any()
        for name, values in expected["anchor"][task].items():
            close(per_parameter(model, model.anchor, total)[name], values, 1e-6)
        for name, values in expected["weights"][task].items():
            close(per_parameter(model, model.net.get_params(), total)[name], values, 1e-6)
        close(probe_logits(model)[:, :total], expected["logits"][task], 1e-5)


class FirstTaskOfFour(TinyDataset):
    """Uneven tasks (B4 Inc2): 4 classes first, then 2."""

    n_tasks = 2

    def task_classes(self, task: int) -> range:
        return range(0, 4) if task == 0 else range(4, 6)

    def task_source(self, task: int) -> DataSource:
        inputs, labels = script().task_data(task)  # the script's task 1 (classes 2, 3) as classes 4, 5
        return InMemorySource(inputs, labels + 2 if task == 1 else labels)


@pytest.mark.parametrize(("dataset", "alpha", "new_classes"), [(TinyDataset(), 2 / 4, range(2, 4)),
                                                               (FirstTaskOfFour(), 4 / 6, range(4, 6))])
def test_ewc_merges_the_fisher_by_classes_seen_and_keeps_new_head_rows(dataset, alpha, new_classes) -> None:
    model = tiny_model("ewc", dataset=dataset)
    model.fisher = torch.full((190,), 8e-5)
    model.anchor = model.net.get_params()
    model.begin_task(1)
    in_order = type(model.context).batches  # the pass in order, so that this test can repeat it
    model.context.batches = lambda source, **_: in_order(model.context, source, shuffle=False)
    new = model.fisher_diagonal(model.context.batches(model.context.task_data(1)), new_classes.stop)
    model.end_task(1, model.context.task_data(1))
    expected = alpha * torch.full((190,), 8e-5) + (1 - alpha) * new  # alpha = classes before / classes seen
    head_rows = torch.arange(136 + 8 * new_classes.start, 136 + 8 * new_classes.stop)  # the head's weight rows
    rows = torch.cat([head_rows, 184 + torch.tensor(list(new_classes))])  # and its bias
    expected[rows] = new[rows]
    torch.testing.assert_close(model.fisher, expected)
    assert model.fisher.max() <= 1e-4 and new[rows].abs().sum() > 0


def test_ewc_starts_with_pycils_first_task_weight_decay() -> None:
    model = tiny_model("ewc")
    model.begin_task(0)
    assert model.optimizer.param_groups[0]["weight_decay"] == 0.0005
    model.begin_task(1)
    assert model.optimizer.param_groups[0]["weight_decay"] == 0.0002


def test_ewc_refuses_domain_il() -> None:
    class Domain(TinyDataset):
        setting = "domain-il"

    with pytest.raises(ConfigError, match=r"^model=ewc does not support domain-il datasets"):
        build_model("ewc", net=MNISTMLP(num_classes=6, input_shape=(1, 4, 4), hidden_sizes=(8,)), dataset=Domain())
