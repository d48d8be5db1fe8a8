"""The summary picture, checked on the matplotlib figure before it is saved: failed
configurations marked, job counts, the dataset's name, values on the bars over an axis that
shows their differences, short numbers in labels, and an Optuna study's trials per parameter."""

from __future__ import annotations

from pathlib import Path

import pytest

from mammoth.reporting.run_records import gather
from mammoth.reporting.sweep_plan import planned_jobs, read_study, sweep_config
from mammoth.reporting.figures import short_floats, summary_figure
from test_summary import complete, write_job


def with_dataset(results: dict, name: str = "seq-digits") -> dict:
    return {**results, "dataset": {"name": name, "n_tasks": 5}}


def texts(axes) -> list[str]:
    return [text.get_text() for text in axes.texts]


def title(figure) -> str:
    """The figure's title (its one figure-level text, ``Figure.texts``: public since matplotlib 1.x)."""
    (text,) = figure.texts
    return text.get_text()


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """lr=0.05 (seeds 0, 1: complete, Class-IL 40 and 44), lr=0.10000000001 (seed 0 complete,
    seed 1 failed), lr=1e30 (both seeds failed): all with dataset.n_epochs=1."""
    root = tmp_path / "outputs" / "2026-01-01" / "sweep"
    write_job(root / "0", ["seed=0", "model.lr=0.05", "dataset.n_epochs=1"], with_dataset(complete((40, 50, -50), (80, 10, -10), 10)))
    write_job(root / "1", ["seed=1", "model.lr=0.05", "dataset.n_epochs=1"], with_dataset(complete((44, 46, -46), (84, 8, -8), 14)))
    write_job(root / "2", ["seed=0", "model.lr=0.10000000001", "dataset.n_epochs=1"], with_dataset(complete((50, 30, -30), (90, 5, -5), 20)))
    write_job(root / "3", ["seed=1", "model.lr=0.10000000001", "dataset.n_epochs=1"], status={"status": "failed", "error": "boom"})
    for seed in (0, 1):
        write_job(root / str(4 + seed), [f"seed={seed}", "model.lr=1e30", "dataset.n_epochs=1"],
                  status={"status": "failed", "error": "TrainingError: the loss became nan"})
    return root


def test_the_bars_name_the_dataset_count_the_jobs_and_mark_failed_configurations(sweep: Path):
    figure = summary_figure(gather([sweep]), sweep.name, ended=True)
    (axes,) = figure.axes
    assert title(figure) == "seq-digits\n3 complete, 3 failed\nall: dataset.n_epochs=1"
    labels = [label.get_text() for label in axes.get_yticklabels()]
    assert labels == ["model.lr=0.05  (n=2)", "model.lr=0.1  (n=1, 1 failed)", "model.lr=1e+30  (2 failed)"]
    assert [label.get_color() for label in axes.get_yticklabels()][2] == "tab:red"
    assert "✗ no complete job (2 failed)" in texts(axes)
    assert str(sweep.parent) not in title(figure)


def test_the_values_are_on_the_bars_and_the_axis_shows_their_differences(sweep: Path):
    (axes,) = summary_figure(gather([sweep]), sweep.name, ended=True).axes
    # Class-IL 42 ± 2.83 and 50, Task-IL 82 ± 2.83 and 90: values 39.17 .. 90, padded by a quarter
    # of that span (12.7) -> from floor(26.46) = 26 to 100 at most
    assert axes.get_xlim() == (26, 100)
    assert axes.get_xlabel() == "final average accuracy (%), mean ± std over seeds; the axis starts at 26"
    assert [text for text in texts(axes) if text[0].isdigit()] == ["42.0 ± 2.8", "50.0", "82.0 ± 2.8", "90.0"]


def test_a_close_race_gets_a_narrow_axis(tmp_path: Path):
    for lr, value in (("0.1", 91.2), ("0.2", 91.8)):
        write_job(tmp_path / lr, ["seed=0", f"model.lr={lr}"], with_dataset(complete((value, 0, 0), (99, 0, 0), 1)))
    (axes,) = summary_figure(gather([tmp_path]), "x", ended=True).axes
    low, high = axes.get_xlim()
    assert (low, high) == (89, 100)  # pad max(0.25 * (99 - 91.2), 2) = 2 -> floor(89.25), ceil(100.95) capped at 100


def test_a_sweep_in_progress_says_so(sweep: Path):
    import os
    import socket

    write_job(sweep / "6", ["seed=2", "model.lr=0.05", "dataset.n_epochs=1"],
              status={"status": "running", "host": socket.gethostname(), "pid": os.getpid()})
    rows = gather([sweep])
    assert title(summary_figure(rows, sweep.name)).splitlines()[1] == "in progress: 3 complete, 3 failed, 1 running"
    assert title(summary_figure(rows[:3], sweep.name)).splitlines()[1] == "3 complete, 0 failed"  # none running


def test_without_a_complete_run_the_heading_falls_back_to_the_directory_name(tmp_path: Path):
    write_job(tmp_path / "sweep" / "0", ["seed=0"], status={"status": "failed", "error": "boom"})
    figure = summary_figure(gather([tmp_path / "sweep"]), "sweep", ended=True)
    assert title(figure) == "sweep\n0 complete, 1 failed"
    assert [label.get_text() for label in figure.axes[0].get_yticklabels()] == ["(none)  (1 failed)"]


@pytest.mark.parametrize(("text", "short"), [
    ("model.lr=0.10000000001", "model.lr=0.1"),
    ("model.lr=-0.30000000000000004", "model.lr=-0.3"),
    ("model.lr=1e-05", "model.lr=1e-05"),
    ("model.lr=0.000123456789", "model.lr=0.000123457"),
    ("seed=3 backbone.widths=[64,128]", "seed=3 backbone.widths=[64,128]"),
    ("tag=v1.2.3 model=er-ace", "tag=v1.2.3 model=er-ace"),
])
def test_short_floats(text: str, short: str):
    assert short_floats(text) == short


MULTIRUN_YAML = """\
hydra:
  sweeper:
    _target_: hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper
    direction: {direction}
    params:
      model.lr: tag(log, interval(0.001, 0.5))
      model.name: choice(sgd, er)
optimized_metric: {metric}
"""


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """Four trials on two parameters: lr 0.001 / sgd -> 40 (forgetting 30), lr 0.01 / er -> 60
    (forgetting 20), lr 0.1 / sgd -> 55 (forgetting 10), lr 0.5 / er failed."""
    root = tmp_path / "study"
    trials = [("0.001", "sgd", 40, 30), ("0.01", "er", 60, 20), ("0.1", "sgd", 55, 10)]
    for number, (lr, name, average, forgetting) in enumerate(trials):
        write_job(root / str(number), [f"model.lr={lr}", f"model.name={name}"],
                  with_dataset(complete((average, forgetting, -forgetting), (90, 0, 0), 1)))
    write_job(root / "3", ["model.lr=0.5", "model.name=er"], status={"status": "failed", "error": "diverged"})
    return root


def offsets(axes, label: str) -> list[tuple[float, float]]:
    """The points of the scatter whose legend label is ``label`` (or starts with it and a space)."""
    (collection,) = [c for c in axes.collections if c.get_label() == label or c.get_label().startswith(label + " ")]
    return [tuple(point) for point in collection.get_offsets().tolist()]


def test_an_optuna_study_plots_the_metric_against_each_parameter_with_the_best_trial(study: Path):
    (study / "multirun.yaml").write_text(MULTIRUN_YAML.format(direction="maximize", metric="class_il.average"))
    figure = summary_figure(gather([study]), study.name, ended=True, study=read_study(sweep_config(study)))
    lr, name = figure.axes[:2]
    assert title(figure) == "seq-digits\n3 complete, 1 failed\nOptuna study: Class-IL average accuracy (%), maximize"
    assert (lr.get_title(), lr.get_xscale(), lr.get_ylabel()) == ("model.lr", "log", "Class-IL average accuracy (%)")
    assert offsets(lr, "trial") == [(0.001, 40), (0.01, 60), (0.1, 55)]
    assert offsets(lr, "best") == [(0.01, 60)]
    assert offsets(lr, "failed or unfinished") == [(0.5, pytest.approx(38.4))]  # 8% of 40..60 below the lowest
    assert [text.get_text() for text in lr.get_legend().get_texts()] == [
        "trial", "failed or unfinished", "best 60.00 (model.lr=0.01)"]
    assert [tick.get_text() for tick in name.get_xticklabels()] == ["sgd", "er"]
    assert offsets(name, "best") == [(1, 60)]


def test_a_minimised_metric_marks_the_lowest_trial(study: Path):
    (study / "multirun.yaml").write_text(MULTIRUN_YAML.format(direction="minimize", metric="class_il.forgetting"))
    figure = summary_figure(gather([study]), study.name, ended=True, study=read_study(sweep_config(study)))
    assert offsets(figure.axes[0], "best") == [(0.1, 10)]
    assert figure.axes[0].get_ylabel() == "Class-IL forgetting"


def test_a_plain_sweep_or_an_unreadable_multirun_yaml_is_no_study(tmp_path: Path):
    (tmp_path / "multirun.yaml").write_text("hydra:\n  sweeper:\n    _target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper\n")
    assert read_study(sweep_config(tmp_path)) is None
    (tmp_path / "multirun.yaml").write_text("- &a [x]\n- *a\n")
    assert sweep_config(tmp_path) == {} and read_study(sweep_config(tmp_path)) is None
    assert sweep_config(tmp_path / "missing") == {}


def test_without_multirun_yaml_the_study_comes_from_a_trials_hydra_config(study: Path):
    # the Optuna sweeper writes no multirun.yaml; every trial has .hydra/hydra.yaml and config.yaml
    trial = study / "0" / ".hydra"
    sweeper = MULTIRUN_YAML.format(direction="minimize", metric="x").split("optimized_metric")[0]
    (trial / "hydra.yaml").write_text(sweeper.replace("params:", "n_trials: 4\n    params:"))
    (trial / "config.yaml").write_text("seed: 1\noptimized_metric: class_il.forgetting\n")
    rows = gather([study])
    found = read_study(sweep_config(study, rows))
    assert (found.params, found.direction, found.metric) == (
        {"model.lr": "tag(log, interval(0.001, 0.5))", "model.name": "choice(sgd, er)"}, "minimize", "class_il_forgetting")
    assert planned_jobs(sweep_config(study, rows)) == 4


BASIC_MULTIRUN_YAML = """\
hydra:
  sweeper:
    _target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper
    max_batch_size: null
    params: {params}
  overrides:
    task:
    - model.lr=0.05,0.1,-1
    - seed=0,1
    - dataset.n_epochs=1
"""


@pytest.mark.parametrize(("params", "planned"), [("null", 6), ("{model.name: 'sgd,er'}", 12)])
def test_the_planned_jobs_come_from_the_sweeps_multirun_yaml(tmp_path: Path, params: str, planned: int):
    (tmp_path / "multirun.yaml").write_text(BASIC_MULTIRUN_YAML.format(params=params))
    assert planned_jobs(sweep_config(tmp_path)) == planned
    (tmp_path / "multirun.yaml").write_text(MULTIRUN_YAML.format(direction="maximize", metric="null")
                                            .replace("params:", "n_trials: 20\n    params:"))
    assert planned_jobs(sweep_config(tmp_path)) == 20
    assert planned_jobs(sweep_config(tmp_path / "missing")) is None


def test_a_sequential_sweep_half_way_is_in_progress_and_says_of_how_many(sweep: Path, monkeypatch: pytest.MonkeyPatch):
    import mammoth.reporting.figures
    import mammoth.reporting.summary_files

    (sweep / "multirun.yaml").write_text(BASIC_MULTIRUN_YAML.format(params="null").replace(
        "model.lr=0.05,0.1,-1", "model.lr=0.05,0.10000000001,1e30,2e30"))  # 8 jobs, 6 have ended
    rows = gather([sweep])
    assert title(summary_figure(rows, "sweep", planned=8)).splitlines()[1] == (
        "in progress: 3 complete, 3 failed of 8 jobs")
    assert title(summary_figure(rows, "sweep", planned=6)).splitlines()[1] == "3 complete, 3 failed"
    figures = []
    build = mammoth.reporting.figures.summary_figure
    monkeypatch.setattr(mammoth.reporting.figures, "summary_figure", lambda *args: figures.append(build(*args)) or figures[-1])
    mammoth.reporting.summary_files.update_summary(sweep)  # the callback after a job: planned jobs read from multirun.yaml
    mammoth.reporting.summary_files.update_summary(sweep, ended=True)  # the callback when the sweep ends
    assert [title(figure).splitlines()[:2] for figure in figures] == [
        ["seq-digits", "in progress: 3 complete, 3 failed of 8 jobs"], ["seq-digits", "3 complete, 3 failed"]]
