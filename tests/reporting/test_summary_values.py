"""The summary of runs that diverged or were tampered with: NaN, infinities and numbers near the
float limit are shown as such (never an exception that leaves a sweep without its summary), and
the search for runs reaches any depth without Python's recursion limit and never follows a
symbolic link."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from hydra.core.utils import JobStatus

from mammoth.app.callbacks import SweepSummaryCallback
from mammoth.reporting.run_records import find_job_dirs, gather
from mammoth.reporting.sweep_tables import group_rows, mean_and_std
from mammoth.reporting.figures import plotted_configurations
from test_summary import REPO, complete, job_config, run_job, write_job

NAN, INF = float("nan"), float("inf")


def raw_results(average: str, forgetting: str = "1", seconds: str = "2") -> str:
    """A results.json as json.dumps writes non-finite floats (``NaN``, ``Infinity``): the text as given."""
    return ('{"status": "complete", "class_il": {"average": %s, "forgetting": %s, "bwt": -1},'
            ' "task_il": {"average": 90, "forgetting": 0, "bwt": 0}, "timings": {"total_seconds": %s}}'
            % (average, forgetting, seconds))


def raw_job(directory: Path, overrides: list[str], results: str) -> None:
    write_job(directory, overrides)
    (directory / "results.json").write_text(results)


def summary_command(*arguments: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "mammoth.summary", *arguments], capture_output=True, text=True,
                          env=environment, timeout=300)


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The cells of the table under ``## heading`` (header and rule left out)."""
    lines = markdown.split(f"## {heading}\n\n", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_the_command_line_shows_nan_and_infinities_as_such_and_writes_the_files(tmp_path: Path):
    root = tmp_path / "sweep"
    raw_job(root / "0", ["seed=0", "model.lr=1"], raw_results("NaN", "Infinity", "1e308"))
    raw_job(root / "1", ["seed=1", "model.lr=1"], raw_results("50", "-Infinity", "1e308"))
    raw_job(root / "2", ["seed=0", "model.lr=2"], raw_results("1e308", "3"))
    raw_job(root / "3", ["seed=1", "model.lr=2"], raw_results("1e308", "5"))
    done = summary_command(str(root), "--write")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    jobs = {row[0]: row for row in table_rows(done.stdout, "Jobs")}
    # job, overrides, status, Class-IL average, forgetting, BWT, Task-IL ..., wall (s)
    assert jobs["0"][2:5] == ["complete", "nan", "inf"] and jobs["0"][-1] == "1e+308"
    assert jobs["1"][2:5] == ["complete", "50.00", "-inf"]
    assert jobs["2"][3:5] == ["1e+308", "3.00"]
    configurations = {row[0]: row for row in table_rows(done.stdout, "Configurations")}
    # configuration, n, jobs, Class-IL average, forgetting, ...: the mean of NaN and 50 is NaN, of inf and -inf NaN
    assert configurations["model.lr=1"][3:5] == ["nan ± nan", "nan ± nan"]
    assert configurations["model.lr=1"][-1] == "1e+308 ± 0.0"  # two 1e308 average to 1e308, no overflow
    assert configurations["model.lr=2"][3:5] == ["1e+308 ± 0.00", "4.00 ± 1.41"]
    lines = list(csv.DictReader(io.StringIO((root / "summary.csv").read_text())))
    assert [line["class_il_average"] for line in lines] == ["nan", "50.0", "1e+308", "1e+308"]
    assert [line["class_il_forgetting"] for line in lines] == ["inf", "-inf", "3.0", "5.0"]
    assert (root / "summary.md").read_text().startswith(f"# Summary of {root}")
    assert (root / "summary.png").read_bytes()[:4] == b"\x89PNG"


def test_a_sweep_callback_writes_the_summary_of_a_job_that_diverged(tmp_path: Path):
    root = tmp_path / "sweep"
    callback = SweepSummaryCallback()
    diverged = complete((NAN, INF, -INF), (1e308, 1e308, -1e308), 1e308)
    run_job(callback, job_config(root, "0", ["seed=0"]), JobStatus.COMPLETED, NAN, results=diverged)
    run_job(callback, job_config(root, "1", ["seed=1"]), JobStatus.COMPLETED, 40.0, results=complete((40, 1, -1), (80, 0, 0), 3))
    lines = list(csv.DictReader(io.StringIO((root / "summary.csv").read_text())))
    assert [(line["job"], line["class_il_average"], line["task_il_average"]) for line in lines] == [
        ("0", "nan", "1e+308"), ("1", "40.0", "80.0")]
    assert "| (none)        | 2 | 2    | nan ± nan |" in (root / "summary.md").read_text()


def test_mean_and_std_of_non_finite_and_huge_values():
    ordinary = [91.25, 90.5, 93.0]
    assert mean_and_std(ordinary) == (statistics.fmean(ordinary), statistics.stdev(ordinary))  # scaling is exact
    assert mean_and_std([5.0]) == (5.0, None)
    assert mean_and_std([1e308, 1e308]) == (1e308, 0.0)
    mean, std = mean_and_std([1.7e308, -1.7e308])
    assert mean == 0.0 and std == INF  # the deviation, 2.4e308, is beyond the float range
    assert mean_and_std([1e308, 1.0])[1] == pytest.approx(math.sqrt(2) / 2 * 1e308, rel=1e-12)
    for values, expected_mean in [([NAN, 1.0], NAN), ([INF, -INF], NAN), ([INF, 1e308], INF), ([-INF, 2.0], -INF)]:
        mean, std = mean_and_std(values)
        assert (mean == expected_mean or math.isnan(mean) and math.isnan(expected_mean)) and math.isnan(std)
    assert mean_and_std([NAN])[1] is None


def test_an_integer_beyond_the_float_range_is_an_infinity(tmp_path: Path):
    raw_job(tmp_path / "0", ["seed=0"], raw_results("1" + "0" * 400, "-" + "1" + "0" * 400))
    (row,) = gather([tmp_path])
    assert (row.status, row.metrics["class_il_average"], row.metrics["class_il_forgetting"]) == ("complete", INF, -INF)


def test_the_plot_sorts_nan_and_infinities_after_every_finite_average(tmp_path: Path):
    averages = [NAN, INF, -INF, *range(42)]  # 45 configurations: the 40 best are 41 down to 2
    for index, average in enumerate(averages):
        write_job(tmp_path / str(index), ["seed=0", f"model.lr={index}"])
        (tmp_path / str(index) / "results.json").write_text(json.dumps(complete((average, 0, 0), (50, 0, 0), 1)))
    plotted = plotted_configurations(group_rows(gather([tmp_path])))
    assert [group.means["class_il_average"] for group in plotted] == list(range(41, 1, -1))
    few = plotted_configurations(group_rows(gather([tmp_path / "0"]) + gather([tmp_path / "3"])))
    assert len(few) == 2  # 40 or fewer: all of them, NaN included


def remove_nested_tree(top: Path) -> None:
    """Remove a tree of any depth bottom-up without recursion: ``shutil.rmtree`` recurses once per
    level, and so does pytest's removal of old temporary directories, which a tree deeper than the
    recursion limit left behind would crash at the end of a later session."""
    levels = [top]
    while (levels[-1] / "d").is_dir():
        levels.append(levels[-1] / "d")
    for level in reversed(levels):
        for entry in level.iterdir():
            if entry.name != "d":
                shutil.rmtree(entry)  # a job directory: shallow
        level.rmdir()


@pytest.fixture
def nested_sweep(tmp_path: Path):
    """``tmp_path/sweep/d/d/.../d`` (1,100 levels), removed when the test ends."""
    deep = tmp_path / "sweep"
    deep.mkdir()
    for _ in range(1100):  # one mkdir per level: Path.mkdir(parents=True) itself recurses
        deep = deep / "d"
        os.mkdir(deep)
    yield deep
    remove_nested_tree(tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


def test_runs_nested_1100_directories_deep_are_found(tmp_path: Path, nested_sweep: Path):
    deep = nested_sweep
    write_job(deep / "job", ["seed=0"], complete((12, 1, -1), (34, 0, 0), 1))
    write_job(tmp_path / "sweep" / "top", ["seed=1"], complete((56, 1, -1), (78, 0, 0), 1))
    assert 1100 > sys.getrecursionlimit()
    assert find_job_dirs(tmp_path / "sweep") == [deep / "job", tmp_path / "sweep" / "top"]
    done = summary_command(str(tmp_path / "sweep"))
    assert done.returncode == 0, done.stderr
    assert [(row[0].count("d/"), row[3]) for row in table_rows(done.stdout, "Jobs")] == [(1100, "12.00"), (0, "56.00")]


def test_symbolic_links_to_directories_are_not_followed(tmp_path: Path):
    root = tmp_path / "sweep"
    write_job(root / "0", ["seed=0"], complete((1, 2, 3), (4, 5, 6), 1))
    write_job(tmp_path / "elsewhere" / "job", ["seed=9"], complete((9, 9, 9), (9, 9, 9), 1))
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)  # followed, it would never end
    (root / "job").symlink_to(tmp_path / "elsewhere" / "job", target_is_directory=True)
    assert find_job_dirs(root) == [root / "0"]


def test_an_optuna_picture_with_diverged_trials_marks_the_best_finite_one():
    from mammoth.reporting.run_records import JobRow
    from mammoth.reporting.sweep_plan import Study
    from mammoth.reporting.figures import summary_figure

    trials = {"0.1": 1e308, "0.01": -1e308, "0.001": NAN, "0.002": INF, "0.05": 40.0, "0.02": 30.0}
    rows = [JobRow(str(index), Path(str(index)), [f"model.lr={lr}"], "complete", metrics={"class_il_average": value})
            for index, (lr, value) in enumerate(trials.items())]
    rows.append(JobRow("9", Path("9"), ["model.lr=0.2"], "failed"))
    study = Study({"model.lr": "tag(log, interval(0.001, 0.2))"}, "maximize", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in matplotlib's transforms either
        figure = summary_figure(rows, "sweep", True, study)
        figure.canvas.draw()
    (axes, *_) = figure.axes
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert labels == ["trial", "failed or unfinished", "best 40.00 (model.lr=0.05)"]
    plotted = axes.collections[0].get_offsets()
    assert sorted(map(tuple, plotted.tolist())) == [(0.02, 30.0), (0.05, 40.0)]  # the diverged trials are not drawn
