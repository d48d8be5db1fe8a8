"""Tasks of unequal size (``dataset.base_classes`` / ``dataset.increment``) through whole runs on
seq-digits (10 classes, tasks of 4, 3 and 3): results.json, the averages over examples, a
resume, and the even case equal to ``dataset.n_tasks``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mammoth
from composing import compose_run
from mammoth.datasets import build_dataset
from mammoth.engine.checkpoint import read_checkpoint

UNEVEN = ("dataset.base_classes=4", "dataset.increment=3", "dataset.n_epochs=1", "threads=1")


def results_of(directory: Path) -> dict:
    return json.loads((directory / "results.json").read_text())


@pytest.mark.parametrize("model", [("model=xder", "model.buffer_size=40", "model.alpha=0.3", "model.beta=0.8"),
                                   ("model=icarl", "model.buffer_size=40")])
def test_a_run_of_tasks_of_4_3_and_3_classes(tmp_path: Path, model: tuple[str, ...]) -> None:
    mammoth.run(compose_run(tmp_path, *UNEVEN, *model))
    results = results_of(tmp_path)
    assert results["status"] == "complete"
    assert {key: results["dataset"][key] for key in ("n_tasks", "n_classes_per_task", "classes_per_task", "base_classes",
                                                     "increment")} == {
        "n_tasks": 3, "n_classes_per_task": None, "classes_per_task": [4, 3, 3], "base_classes": 4, "increment": 3}
    test_labels = build_dataset({"name": "seq-digits"}).sources()[1].labels
    sizes = [int(((test_labels >= low) & (test_labels < high)).sum()) for low, high in ((0, 4), (4, 7), (7, 10))]
    assert results["test_sizes"] == sizes
    for kind in ("class_il", "task_il"):
        block = results[kind]
        assert [len([value for value in row if value is not None]) for row in block["matrix"]] == [1, 2, 3]
        last = block["matrix"][-1]
        assert block["average_weighted"] == pytest.approx(sum(a * n for a, n in zip(last, sizes)) / sum(sizes))
        assert block["average"] == pytest.approx(sum(last) / 3)
    # Task-IL scores task 2 over its own classes 4..6 only: never below Class-IL on it
    assert all(t >= c for t, c in zip(results["task_il"]["matrix"][-1], results["class_il"]["matrix"][-1]))


def test_an_uneven_run_resumes_bit_for_bit(tmp_path: Path) -> None:
    overrides = (*UNEVEN, "model=xder", "model.buffer_size=40", "model.alpha=0.3", "model.beta=0.8")
    mammoth.run(compose_run(tmp_path / "whole", *overrides))
    mammoth.run(compose_run(tmp_path / "part", *overrides, "stop_after_task=2"))
    assert read_checkpoint(tmp_path / "part" / "checkpoint.pt")["state"]["next_task"] == 2
    mammoth.run(compose_run(tmp_path / "part", *overrides, "resume=true"))
    whole, resumed = results_of(tmp_path / "whole"), results_of(tmp_path / "part")
    for kind in ("class_il", "task_il"):
        assert resumed[kind]["matrix"] == whole[kind]["matrix"]
        assert resumed[kind]["average_weighted_per_task"] == whole[kind]["average_weighted_per_task"]
    final = [read_checkpoint(tmp_path / name / "checkpoint.pt")["model"] for name in ("whole", "part")]
    assert final[0].keys() == final[1].keys() and all(torch.equal(final[0][key], final[1][key]) for key in final[0])


def test_even_tasks_from_increment_give_the_results_of_n_tasks(tmp_path: Path) -> None:
    overrides = ("model=er", "model.buffer_size=20", "dataset.n_epochs=1", "threads=1")
    mammoth.run(compose_run(tmp_path / "n_tasks", *overrides, "dataset.n_tasks=5"))
    mammoth.run(compose_run(tmp_path / "increment", *overrides, "dataset.increment=2"))
    by_n_tasks, by_increment = results_of(tmp_path / "n_tasks"), results_of(tmp_path / "increment")
    for kind in ("class_il", "task_il"):
        assert by_increment[kind] == by_n_tasks[kind]  # every metric, bit for bit; no averages over examples
    assert "classes_per_task" not in by_n_tasks["dataset"] and by_increment["dataset"]["classes_per_task"] == [2] * 5
