"""The online setting (docs/online.md): the stream's segments, its refusals, a run's ``online``
section, task-free hooks and resume at a segment's end."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch

import mammoth
from mammoth.backbones import build_backbone
from mammoth.config.stream import blurry_leaks, check_stream
from mammoth.datasets import build_dataset
from mammoth.engine.checkpoint import load_checkpoint
from mammoth.engine.loop import run_tasks
from mammoth.files import CHECKPOINT_NAME
from mammoth.errors import ConfigError, DatasetError
from mammoth.models import build_model
from mammoth.models.sgd import SGD
from mammoth.reporting.metrics import stream_metrics
import composing


def test_blurry_leaks_on_a_hand_case() -> None:
    # floor(0.25 * n): 10 -> 2, 7 -> 1, 4 -> 1; task t leaks to t + 1, the last task to t - 1
    assert blurry_leaks([10, 7, 4], 0.25) == [(2, 1), (1, 2), (1, 1)]
    assert blurry_leaks([10], 0.5) == [(0, -1)]
    assert blurry_leaks([100], 0.0) == [(0, -1)]
    assert blurry_leaks([100, 100], 0.29) == [(29, 1), (29, 0)]


def _segments(seed: int, **settings) -> tuple[object, list]:
    dataset = build_dataset({"name": "seq-digits", "stream": "online", **settings}, seed=seed)
    return dataset, dataset.stream_segments()


def test_sharp_segments_are_the_tasks_and_blurry_ones_leak_the_stated_fraction_seeded() -> None:
    dataset, sharp = _segments(3)
    sizes = [len(dataset.task_source(task)) for task in range(dataset.n_tasks)]
    assert [len(segment) for segment in sharp] == sizes
    _, blurry = _segments(3, boundaries="blurry", blurry_fraction=0.2)
    leaks = [int(0.2 * size) for size in sizes]
    assert sum(len(segment) for segment in blurry) == sum(sizes)  # every example once
    for segment, source in enumerate(blurry):
        labels = source.labels
        own = torch.isin(labels, torch.tensor(list(dataset.task_classes(segment))))
        assert int(own.sum()) == sizes[segment] - leaks[segment]
        previous = torch.isin(labels, torch.tensor(list(dataset.task_classes(segment - 1)))) if segment else None
        if 0 < segment:
            expected = leaks[segment - 1] + (leaks[segment + 1] if segment + 1 == dataset.n_tasks - 1 else 0)
            assert int(previous.sum()) + int((~own & ~previous).sum()) == expected
    _, again = _segments(3, boundaries="blurry", blurry_fraction=0.2)
    _, other = _segments(4, boundaries="blurry", blurry_fraction=0.2)
    assert all(torch.equal(a.labels, b.labels) for a, b in zip(blurry, again))
    first = [a.read(torch.arange(len(a)), "cpu") for a in blurry]
    assert all(torch.equal(x, b.read(torch.arange(len(b)), "cpu")) for x, b in zip(first, again))
    assert not all(torch.equal(x, b.read(torch.arange(len(b)), "cpu")) for x, b in zip(first, other) if len(x) == len(b))


@pytest.mark.parametrize("values, line", [
    ({"stream": "online", "n_epochs": 3}, "dataset.n_epochs=3 is not allowed with dataset.stream=online for seq-digits: "
                                          "a stream is a single pass; allowed: 1, or leave dataset.n_epochs out"),
    ({"task_free": True}, "dataset.task_free=true is not allowed with dataset.stream=tasks; allowed: with dataset.stream=online"),
    ({"boundaries": "blurry"}, "dataset.boundaries=blurry is not allowed with dataset.stream=tasks; allowed: with dataset.stream=online"),
    ({"stream": "river"}, "dataset.stream='river' is not allowed; allowed: tasks, online"),
    ({"stream": "online", "blurry_fraction": 1.0}, "dataset.blurry_fraction=1.0 is not allowed; allowed: a number in [0, 1)"),
    ({"stream": "online", "fitting_mode": "iters", "n_iters": 3},
     "dataset.fitting_mode=iters is not allowed with dataset.stream=online (a single pass); allowed: epochs (the default)"),
])
def test_refusals_are_one_line(values: dict, line: str) -> None:
    with pytest.raises(ConfigError) as error:
        check_stream("seq-digits", {"n_epochs": 5, **values}, 5)
    assert str(error.value) == line
    with pytest.raises(DatasetError, match=line.split(";")[0].replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        build_dataset({"name": "seq-digits", **values})


def test_the_benchmark_default_n_epochs_is_not_a_given_one() -> None:
    assert check_stream("seq-digits", {"stream": "online", "n_epochs": 5}, 5)["stream"] == "online"
    assert check_stream("seq-digits", {"stream": "online", "n_epochs": 1}, 5)["stream"] == "online"  # as results.json records it


def test_stream_metrics_on_a_hand_case() -> None:
    # points at 10, 20 (end of segment 1), 30; anytime = (50*10 + 60*10 + 40*10) / 30 = 50
    metrics = stream_metrics([10, 20, 30], [[50.0], [80.0, 40.0], [20.0, 60.0]], 30, 2.0)
    assert metrics["accuracy"] == 40.0
    assert metrics["anytime_accuracy"] == pytest.approx(50.0)
    assert metrics["forgetting"] == 60.0  # task 0: best 80 at an earlier point, 20 at the end
    assert metrics["throughput"] == 15.0


@pytest.fixture(scope="module")
def er_stream(tmp_path_factory: pytest.TempPathFactory) -> dict:
    directory = tmp_path_factory.mktemp("er_stream")
    mammoth.run(composing.compose_run(directory, "threads=1", "~logger", "model=er", "model.buffer_size=50",
                                      "dataset.stream=online", "dataset.eval_every=300",
                                      "optimized_metric=online.anytime_accuracy"))
    return json.loads((directory / "results.json").read_text())


def test_an_online_run_reports_its_stream_metrics_from_its_evaluation_points(er_stream: dict) -> None:
    online = er_stream["online"]
    assert er_stream["dataset"]["stream"] == "online"
    assert er_stream["config"]["dataset"]["n_epochs"] == 1  # one pass, not seq-digits' default 5
    assert online["samples"] == online["eval_points"][-1] == 1797 - sum(er_stream["test_sizes"])  # the training set, read once
    points, rows = online["eval_points"], online["eval_accuracies"]
    assert all(b > a for a, b in zip(points, points[1:]))
    means = [sum(row) / len(row) for row in rows]
    by_hand = sum(mean * (p - q) for mean, p, q in zip(means, points, [0, *points[:-1]])) / points[-1]
    assert online["anytime_accuracy"] == pytest.approx(by_hand, abs=1e-9)
    assert online["accuracy"] == pytest.approx(er_stream["class_il"]["average"], abs=1e-9)
    assert rows[-1] == pytest.approx(er_stream["class_il"]["matrix"][-1], abs=1e-9)
    assert online["throughput"] > 0
    # at the end of the step (32 samples) that passes each multiple of 300, and at the five segments' ends
    assert all(any(k <= p < k + 32 for p in points) for k in range(300, points[-1] + 1, 300))
    assert len(points) <= 5 + points[-1] // 300


class Spy(SGD):
    supports_task_free = True
    calls: list[str]

    def begin_task(self, task: int) -> None:
        self.calls.append(f"begin {task}")
        super().begin_task(task)

    def end_task(self, task: int, data) -> None:
        self.calls.append(f"end {task}")


def _stream_run(run_dir: Path, name: str, stop: int, resume: bool = False, **settings):
    dataset = build_dataset({"name": "seq-digits", "stream": "online", "batch_size": 32, **settings}, seed=7)
    torch.manual_seed(7)
    net = build_backbone("mnistmlp", num_classes=dataset.n_classes, input_shape=dataset.input_shape, hidden_sizes=[32])
    model = Spy(net=net, dataset=dataset) if name == "spy" else build_model(name, net=net, dataset=dataset, buffer_size=40,
                                                                              **({"task_free": True} if name == "er_ace" else {}))
    model.calls = []
    state = run_tasks(model, dataset, torch.device("cpu"), run_dir, 7, {"model": name}, resume=resume, stop_after_task=stop)
    return model, state


@pytest.mark.parametrize("task_free, calls", [(True, []), (False, ["begin 0", "end 0", "begin 1", "end 1"])])
def test_task_free_calls_no_task_hook(tmp_path: Path, task_free: bool, calls: list[str]) -> None:
    model, state = _stream_run(tmp_path, "spy", 2, task_free=task_free)
    assert model.calls == calls
    assert state.next_task == 2 and state.stream_samples == sum(len(build_dataset("seq-digits").task_source(t)) for t in range(2))


@pytest.mark.parametrize("name", ["er", "er_ace", "gss"])
def test_a_blurry_task_free_stream_resumed_at_a_segment_end_is_bit_exact(tmp_path: Path, name: str) -> None:
    settings = {"boundaries": "blurry", "task_free": True, "eval_every": 100}
    (tmp_path / "whole").mkdir(), (tmp_path / "resumed").mkdir()
    whole, whole_state = _stream_run(tmp_path / "whole", name, 3, **settings)
    _stream_run(tmp_path / "resumed", name, 1, **settings)
    torch.manual_seed(12345)
    resumed, resumed_state = _stream_run(tmp_path / "resumed", name, 3, resume=True, **settings)
    assert resumed_state.stream_points == whole_state.stream_points
    assert resumed_state.stream_accuracies == whole_state.stream_accuracies
    assert resumed_state.accuracies == whole_state.accuracies
    for (key, value), (_, other) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(value, other), key


def test_a_method_that_needs_task_changes_refuses_task_free() -> None:
    from mammoth.app.runner import check_task_free
    from mammoth.models.agem import AGem as AGEM

    dataset = build_dataset({"name": "seq-digits", "stream": "online", "task_free": True})
    with pytest.raises(ConfigError) as error:
        check_task_free("agem", AGEM, dataset)
    assert str(error.value) == ("model=agem does not support dataset.task_free=true (its begin_task/end_task do work at "
                                "task changes); allowed: dataset.task_free=false, or one of der, derpp, er, er-ace, gss, mer, sgd")
    check_task_free("agem", AGEM, build_dataset({"name": "seq-digits", "stream": "online"}))  # told where tasks change: runs


def test_er_ace_refuses_a_task_free_stream_without_its_task_free_option() -> None:
    dataset = build_dataset({"name": "seq-digits", "stream": "online", "task_free": True})
    net = build_backbone("mnistmlp", num_classes=dataset.n_classes, input_shape=dataset.input_shape, hidden_sizes=[8])
    model = build_model("er_ace", net=net, dataset=dataset, buffer_size=10)
    with pytest.raises(ConfigError, match=r"^model.task_free=false is not allowed for er_ace with dataset.task_free=true "):
        model.begin_stream()
    assert model.optimizer is None


def test_the_methods_declaring_task_free_are_those_whose_hooks_ignore_task_changes() -> None:
    from mammoth.models import MODELS
    from mammoth.models.base import ContinualModel, ReplayModel

    def task_hooks(cls: type) -> list[str]:
        return [hook for hook in ("begin_task", "end_task", "training_data", "trains_after") for owner in cls.__mro__
                if owner not in (ContinualModel, ReplayModel, object) and hook in owner.__dict__]

    for name in MODELS.names():
        method = MODELS.get(name).target
        # l2p reads current_task (its task's classes), which a task-free stream never advances; er_ace
        # reads it too, and refuses a task-free stream without its own task_free option (tested above)
        own = [owner for owner in method.__mro__ if owner.__module__.startswith("mammoth.models.")
               and owner not in (ContinualModel, ReplayModel)]
        expected = not task_hooks(method) and (name == "er-ace" or not any(
            "current_task" in inspect.getsource(owner) for owner in own))
        assert method.supports_task_free == expected, name
    assert sorted(name for name in MODELS.names() if MODELS.get(name).target.supports_task_free) == [
        "der", "derpp", "er", "er-ace", "gss", "mer", "sgd"]


class Interrupted(Exception):
    """What stops the run inside a segment, as a killed job would."""


@pytest.mark.parametrize("task_free", [True, False])
def test_a_stream_interrupted_inside_a_segment_resumes_bit_exact(tmp_path: Path, task_free: bool) -> None:
    settings = {"boundaries": "blurry", "task_free": task_free, "eval_every": 100}
    (tmp_path / "whole").mkdir(), (tmp_path / "resumed").mkdir()
    whole, whole_state = _stream_run(tmp_path / "whole", "er", 3, **settings)

    dataset = build_dataset({"name": "seq-digits", "stream": "online", "batch_size": 32, **settings}, seed=7)
    torch.manual_seed(7)
    net = build_backbone("mnistmlp", num_classes=dataset.n_classes, input_shape=dataset.input_shape, hidden_sizes=[32])
    model = build_model("er", net=net, dataset=dataset, buffer_size=40)
    observe, steps = model.observe, []

    def observe_until_the_twentieth_step(*args):
        if len(steps) == 20:  # 640 samples: inside segment 3 (segments of about 288), after the point at 608
            raise Interrupted
        steps.append(1)
        return observe(*args)

    model.observe = observe_until_the_twentieth_step
    with pytest.raises(Interrupted):
        run_tasks(model, dataset, torch.device("cpu"), tmp_path / "resumed", 7, {"model": "er"}, stop_after_task=3)
    saved = load_checkpoint(tmp_path / "resumed" / CHECKPOINT_NAME, model, torch.Generator(), {"model": "er"}, dataset=dataset)
    assert saved.next_task == 2 and saved.segment_steps > 0 and saved.segment_rng is not None  # inside segment 3
    assert saved.stream_points[-1] == saved.stream_samples < 640
    torch.manual_seed(12345)
    resumed, resumed_state = _stream_run(tmp_path / "resumed", "er", 3, resume=True, **settings)
    assert resumed_state.stream_points == whole_state.stream_points
    assert resumed_state.stream_accuracies == whole_state.stream_accuracies
    assert resumed_state.accuracies == whole_state.accuracies
    assert resumed_state.segment_steps == 0 and resumed_state.segment_rng is None
    for (key, value), (_, other) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(value, other), key
