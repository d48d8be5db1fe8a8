"""The continual-learning harness end to end on seq-digits: determinism, the plot, resume after an
interruption, and the run-time errors. (Where each method lands and the results file's layout:
tests/test_methods_seq_digits.py.)"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import mammoth
from mammoth.errors import BackboneError, ConfigError
from mammoth.models.base import ContinualModel
from mammoth.engine.checkpoint import read_checkpoint
import composing
from registries import restored

SEED = 1


def compose_run(output_dir: Path, *overrides: str):
    return composing.compose_run(output_dir, *overrides, seed=SEED)


def run_method(tmp_path: Path, name: str, *overrides: str) -> dict:
    cfg = compose_run(tmp_path / name, f"model={name}", *overrides)
    mammoth.run(cfg)
    return json.loads((tmp_path / name / "results.json").read_text())


def test_plot_is_a_png_and_threads_are_recorded(tmp_path):
    results = run_method(tmp_path, "sgd", "dataset.n_epochs=1", "threads=1")
    assert results["threads"] == 1 and results["config"]["threads"] == 1
    png = (tmp_path / "sgd" / "accuracy.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_same_seed_repeats_bit_for_bit(tmp_path):
    first = run_method(tmp_path / "a", "der", "model.buffer_size=100", "dataset.n_epochs=1")
    second = run_method(tmp_path / "b", "der", "model.buffer_size=100", "dataset.n_epochs=1")
    assert first["class_il"]["matrix"] == second["class_il"]["matrix"]
    assert first["task_il"]["matrix"] == second["task_il"]["matrix"]
    other_seed = compose_run(tmp_path / "c", "model=der", "model.buffer_size=100", "dataset.n_epochs=1", "seed=7")
    mammoth.run(other_seed)
    third = json.loads((tmp_path / "c" / "results.json").read_text())
    assert third["class_il"]["matrix"] != first["class_il"]["matrix"]


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    overrides = ("model=derpp", "model.buffer_size=100", "dataset.n_epochs=1")
    mammoth.run(compose_run(tmp_path / "whole", *overrides))
    expected = json.loads((tmp_path / "whole" / "results.json").read_text())

    begin_task = ContinualModel.begin_task

    def crash_at_task_three(self, task):
        if task == 2:
            raise KeyboardInterrupt("simulated interruption")
        return begin_task(self, task)

    monkeypatch.setattr(ContinualModel, "begin_task", crash_at_task_three)
    with pytest.raises(KeyboardInterrupt):
        mammoth.run(compose_run(tmp_path / "broken", *overrides))
    assert not (tmp_path / "broken" / "results.json").exists()
    assert (tmp_path / "broken" / "checkpoint.pt").exists()
    monkeypatch.setattr(ContinualModel, "begin_task", begin_task)

    mammoth.run(compose_run(tmp_path / "broken", *overrides, "resume=true"))
    resumed = json.loads((tmp_path / "broken" / "results.json").read_text())
    for kind in ("class_il", "task_il"):
        assert resumed[kind]["matrix"] == expected[kind]["matrix"]


def test_stop_after_task_then_resume(tmp_path):
    overrides = ("model=er", "model.buffer_size=50", "dataset.n_epochs=1")
    mammoth.run(compose_run(tmp_path / "whole", *overrides))
    expected = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert math.isnan(mammoth.run(compose_run(tmp_path / "part", *overrides, "stop_after_task=2")))
    assert read_checkpoint(tmp_path / "part" / "checkpoint.pt")["state"]["next_task"] == 2
    assert not (tmp_path / "part" / "results.json").exists()
    mammoth.run(compose_run(tmp_path / "part", *overrides, "resume=true"))
    resumed = json.loads((tmp_path / "part" / "results.json").read_text())
    assert resumed["class_il"]["matrix"] == expected["class_il"]["matrix"]


def test_resume_refuses_a_different_config(tmp_path):
    mammoth.run(compose_run(tmp_path, "dataset.n_epochs=1", "stop_after_task=1"))
    with pytest.raises(ConfigError, match="differs from the checkpoint's in: model"):
        mammoth.run(compose_run(tmp_path, "dataset.n_epochs=1", "resume=true", "model.lr=0.5"))
    with pytest.raises(ConfigError, match="no checkpoint"):
        mammoth.run(compose_run(tmp_path / "empty", "resume=true"))


def test_failed_run_removes_a_stale_results_file(tmp_path):
    (tmp_path / "results.json").write_text('{"status": "complete"}')
    with pytest.raises(ConfigError, match="model.lr=-1.0 is not positive"):  # found when the model is built
        mammoth.run(compose_run(tmp_path, "model.lr=-1"))
    assert not (tmp_path / "results.json").exists()


def test_a_config_refused_before_the_run_leaves_the_directory_as_it_was(tmp_path):
    (tmp_path / "results.json").write_text('{"status": "complete"}')
    with pytest.raises(BackboneError, match="backbone.depth: invalid value 20"):
        mammoth.run(compose_run(tmp_path, "backbone=resnet", "backbone.depth=20"))
    assert (tmp_path / "results.json").read_text() == '{"status": "complete"}'


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("model.lr=-1",), "model.lr=-1.0 is not positive"),
        (("dataset.n_epochs=0",), "n_epochs"),
        (("dataset.batch_size=-5",), "batch_size"),
        (("model=er",), "model.buffer_size"),
        (("model=er", "model.buffer_size=5000"), "larger than the 1438 training examples of seq-digits"),
        (("model=gdumb", "model.buffer_size=5000"), "larger than the 1438 training examples of seq-digits"),
        (("device=tpu",), "allowed: auto, cpu, cuda, cuda:N"),
        (("threads=0",), "threads=0 is not positive"),
        (("backbone=mnistmlp", "backbone.num_classes=4"), "fewer than the 10 classes"),
    ],
)
def test_run_errors_name_the_bad_value(tmp_path, overrides, message):
    with pytest.raises(mammoth.MammothError, match=message):
        mammoth.run(compose_run(tmp_path, *overrides))
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "checkpoint.pt").exists()


def test_backbone_with_too_few_outputs_is_refused(tmp_path):
    from torch import nn

    from mammoth.backbones import BACKBONES

    with restored(BACKBONES):
        @mammoth.register_backbone("three-logits")
        class ThreeLogits(mammoth.MammothBackbone):
            def __init__(self, input_shape: tuple = (1, 8, 8)) -> None:
                super().__init__()
                self.stages = nn.ModuleList([nn.Flatten()])
                self.num_features, self.num_classes = 64, 3
                self.classifier = nn.Linear(64, 3)

        with pytest.raises(ConfigError, match=r"outputs logits of shape \(1, 3\); seq-digits needs \(batch, 10\)"):
            mammoth.run(compose_run(tmp_path, "backbone=three-logits"))


def test_domain_il_run_reports_domain_il_accuracy(tmp_path):
    from fake_datasets import write_mnist

    write_mnist(tmp_path / "data", folder="MNIST", n_train=60, n_test=30)
    cfg = compose_run(tmp_path / "run", "dataset=perm-mnist", f"dataset.root={tmp_path / 'data'}",
                      "dataset.n_tasks=3", "model=er", "model.buffer_size=20")
    mammoth.run(cfg)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results) & {"class_il", "task_il", "domain_il"} == {"domain_il"}
    matrix = results["domain_il"]["matrix"]
    assert len(matrix) == 3 and matrix[0][1] is None and matrix[2][2] is not None
    assert results["dataset"]["setting"] == "domain-il" and results["dataset"]["n_tasks"] == 3


def test_a_domain_il_memory_per_class_grows_by_the_classes_at_every_task_and_reports_no_nme(tmp_path):
    from fake_datasets import write_mnist
    from mammoth.engine.checkpoint import read_checkpoint

    write_mnist(tmp_path / "data", folder="MNIST", n_train=60, n_test=30)
    cfg = compose_run(tmp_path / "run", "dataset=perm-mnist", f"dataset.root={tmp_path / 'data'}",
                      "dataset.n_tasks=3", "model=er", "model.memory_per_class=1")
    mammoth.run(cfg)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results) & {"class_il", "task_il", "domain_il", "nme_class_il"} == {"domain_il"}  # NME: class-IL only
    buffer = read_checkpoint(tmp_path / "run" / "checkpoint.pt")["model_extra"]["buffer"]
    assert buffer["capacity"] == 1 * 10 * 3 and buffer["filled"] == 30  # 10 classes counted again at each of 3 tasks
