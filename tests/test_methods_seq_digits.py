"""Every CL method end to end on seq-digits: where each lands against sgd and joint, and the results
file's layout. (Each method's
bit-exact resume: tests/models/test_method_checkpoints.py; through mammoth.run: tests/engine/test_harness.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import composing
import mammoth

SEED = 1
BUFFER = ("model.buffer_size=200",)
#: name -> (model, overrides): the original's best arguments for seq-mnist where a method has no
#: default (si's c scaled up: seq-digits tasks last ~45 steps, not ~1200, so its path integral is
#: that much smaller), and sgd at ewc_on's learning rate to compare it with.
METHODS = {
    "sgd": ("sgd", ()),
    "sgd_lr003": ("sgd", ("model.lr=0.03",)),
    "joint": ("joint", ()),
    "lwf": ("lwf", ()),
    "ewc_on": ("ewc-on", ("model.e_lambda=90", "model.gamma=1.0", "model.lr=0.03")),
    "si": ("si", ("model.c=10", "model.xi=0.9")),
    "er": ("er", BUFFER),
    "der": ("der", BUFFER),
    "derpp": ("derpp", BUFFER),
    "agem": ("agem", BUFFER),
    "gem": ("gem", BUFFER),
    "icarl": ("icarl", BUFFER),
    "er_ace": ("er-ace", BUFFER),
    "gdumb": ("gdumb", BUFFER),
    "bic": ("bic", BUFFER),
    "mer": ("mer", (*BUFFER, "model.beta=1", "model.gamma=1")),
    "xder": ("xder", (*BUFFER, "model.alpha=0.3", "model.beta=0.8")),
}
REPLAY = ("er", "der", "derpp", "gem", "icarl", "er_ace", "gdumb", "bic", "mer", "xder")
#: The sgd run each regularisation method is compared with (the same learning rate).
SGD_AT_SAME_LR = {"lwf": "sgd", "ewc_on": "sgd_lr003", "si": "sgd"}


def run_method(output_dir: Path, name: str) -> dict:
    model, method_overrides = METHODS[name]
    mammoth.run(composing.compose_run(output_dir, "threads=1", f"model={model}", *method_overrides, seed=SEED))
    return json.loads((output_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
    """Every method once with the dataset's defaults (5 epochs per task), seed 1."""
    root = tmp_path_factory.mktemp("methods")
    return {name: run_method(root / name, name) for name in METHODS}


def average(results: dict, name: str, kind: str) -> float:
    return results[name][kind]["average"]


# Measured with seed 1 (Class-IL / Task-IL): sgd 20.0 / 94.7, joint 98.3, er 94.2, gem 95.3,
# icarl 78.8, er_ace 93.9, gdumb 94.4, bic 93.6, mer 96.4, xder 82.0, agem 26.7; lwf 20.3 / 97.8,
# ewc_on 20.0 / 99.2 (sgd at lr 0.03: 20.0 / 98.9), si 20.8 / 98.3.


def test_sgd_forgets_down_to_the_last_task_share(results) -> None:
    sgd = results["sgd"]["class_il"]
    # 5 tasks of 2 classes: a model that only knows the last task scores about 1/5 = 20 %.
    assert sgd["average"] < 30.0
    assert sgd["matrix"][-1][-1] > 90.0  # the last task itself is learnt
    assert sgd["forgetting"] > 70.0


@pytest.mark.slow
@pytest.mark.parametrize("name", REPLAY)
def test_replay_methods_beat_sgd_in_class_il_by_40_points(results, name) -> None:
    assert average(results, name, "class_il") > average(results, "sgd", "class_il") + 40.0
    if name in ("er", "der", "derpp"):  # and forget 40 points less
        assert results[name]["class_il"]["forgetting"] < results["sgd"]["class_il"]["forgetting"] - 40.0


@pytest.mark.slow
def test_agem_beats_sgd_in_class_il_by_3_points(results) -> None:
    # A-GEM only keeps the replayed loss from rising; in Class-IL it stays far below ER
    # (Mammoth's paper: 45.7 vs 72.5 on seq-mnist with 200 examples).
    assert average(results, "agem", "class_il") > average(results, "sgd", "class_il") + 3.0
    assert average(results, "agem", "class_il") < average(results, "er", "class_il") - 30.0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lwf", "ewc_on", "si"])
def test_regularisation_methods_land_near_sgd_in_class_il_and_above_it_in_task_il(results, name) -> None:
    sgd = SGD_AT_SAME_LR[name]
    assert abs(average(results, name, "class_il") - average(results, sgd, "class_il")) < 5.0
    assert average(results, name, "task_il") > average(results, sgd, "task_il")


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in METHODS if name != "joint"])
def test_joint_stays_on_top(results, name) -> None:
    assert average(results, "joint", "class_il") > 90.0
    assert average(results, "joint", "class_il") >= average(results, name, "class_il") - 1.0


@pytest.mark.parametrize("name", ["sgd", "joint", "er", "der", "derpp"])
def test_task_il_is_at_least_class_il(results, name) -> None:
    for class_row, task_row in zip(results[name]["class_il"]["matrix"], results[name]["task_il"]["matrix"]):
        for class_il, task_il in zip(class_row, task_row):
            if class_il is not None:
                assert task_il >= class_il


def test_results_file_layout(results) -> None:
    er = results["er"]
    assert er["status"] == "complete"
    matrix = er["class_il"]["matrix"]
    assert len(matrix) == 5 and all(len(row) == 5 for row in matrix)
    assert all(matrix[i][j] is None for i in range(5) for j in range(i + 1, 5))
    assert all(0.0 <= matrix[i][j] <= 100.0 for i in range(5) for j in range(i + 1))
    assert er["class_il"]["average"] == pytest.approx(sum(matrix[-1]) / 5)
    assert set(er["class_il"]) >= {"matrix", "average", "forgetting", "bwt"}
    assert er["config"]["model"]["buffer_size"] == 200
    assert er["dataset"]["name"] == "seq-digits" and er["dataset"]["n_tasks"] == 5
    assert er["versions"]["torch"] == torch.__version__
    assert len(er["timings"]["train_seconds"]) == 5
