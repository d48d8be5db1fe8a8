"""Whole runs on seq-digits with the original's schedules: joint's single training at the last task,
and the multi-step learning rate across a stop and a resume."""

from __future__ import annotations

import json
from pathlib import Path

import mammoth
from composing import compose_run


def _run(output_dir: Path, *overrides: str) -> dict:
    mammoth.run(compose_run(output_dir, *overrides, seed=2))
    path = output_dir / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_joint_evaluates_the_untrained_network_until_the_last_task(tmp_path: Path) -> None:
    results = _run(tmp_path, "model=joint", "dataset.n_epochs=2")
    matrix = results["task_il"]["matrix"]
    # tasks 1..4 only collect data: the same untrained network is evaluated after each of them,
    # so a task's Task-IL accuracy (among its own 2 classes) is the same in every row before the last
    assert [row[0] for row in matrix[:-1]] == [matrix[0][0]] * 4
    assert [row[1] for row in matrix[1:-1]] == [matrix[1][1]] * 3
    # after the last task, one training on all 5 tasks' data has learnt every task
    assert min(results["class_il"]["matrix"][-1]) > 70.0


def test_joint_cumulative_trains_after_every_task(tmp_path: Path) -> None:
    matrix = _run(tmp_path, "model=joint-cumulative", "dataset.n_epochs=2")["class_il"]["matrix"]
    assert all(row[0] > 70.0 for row in matrix)  # task 1 is learnt from the first task on


def test_resume_with_a_learning_rate_schedule_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    overrides = ("model=er", "model.buffer_size=50", "dataset.n_epochs=2", "model.lr_milestones=[1]",
                 "model.sched_multistep_lr_gamma=0.5")
    expected = _run(tmp_path / "whole", *overrides)
    assert _run(tmp_path / "part", *overrides, "stop_after_task=2") == {}
    resumed = _run(tmp_path / "part", *overrides, "resume=true")
    for kind in ("class_il", "task_il"):
        assert resumed[kind]["matrix"] == expected[kind]["matrix"]
    # the schedule changes the results: the same run without it differs
    constant = _run(tmp_path / "constant", *overrides[:-2])
    assert constant["class_il"]["matrix"] != expected["class_il"]["matrix"]
