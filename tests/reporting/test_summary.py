"""Run summaries (mammoth.reporting's run_records, sweep_tables, figures and summary_files, and
mammoth.app.summary_command) and the sweep callback (mammoth.app.callbacks) on job directories written by the tests with known numbers; expected means and deviations are worked out by hand."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from mammoth.app.callbacks import SweepSummaryCallback, sweep_root
from mammoth.errors import ConfigError
from mammoth.reporting.run_records import find_job_dirs, gather
from mammoth.reporting.sweep_tables import format_summary, group_rows
from mammoth.app.summary_command import main
from mammoth.reporting.figures import plot_summary, plotted_configurations
from mammoth.reporting.summary_files import update_summary

REPO = Path(__file__).resolve().parents[2]


def write_job(directory: Path, overrides: list[str] | None = None, results: dict | None = None,
              status: dict | None = None, checkpoint: bool = False) -> Path:
    """A fake job directory: .hydra/overrides.yaml, results.json, job.json, checkpoint.pt as asked."""
    directory.mkdir(parents=True)
    if overrides is not None:
        (directory / ".hydra").mkdir()
        (directory / ".hydra" / "overrides.yaml").write_text("".join(f"- {item}\n" for item in overrides))
    if results is not None:
        (directory / "results.json").write_text(json.dumps(results))
    if status is not None:
        (directory / "job.json").write_text(json.dumps(status))
    if checkpoint:
        (directory / "checkpoint.pt").write_bytes(b"not a pickle: never opened")
    return directory


def complete(cil: tuple[float, float, float], til: tuple[float, float, float], seconds: float) -> dict:
    """results.json content: (average, forgetting, bwt) per kind and the total time."""
    return {
        "status": "complete",
        "class_il": dict(zip(("average", "forgetting", "bwt"), cil)),
        "task_il": dict(zip(("average", "forgetting", "bwt"), til)),
        "timings": {"total_seconds": seconds},
        "title": "seq-digits · sgd · mnistmlp",
    }


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Five jobs: lr=0.05 with seeds 0, 1 (complete; seed 1 also sets threads); lr=0.1 with seed 0
    (complete), seed 1 (failed, job.json) and seed 2 (stopped early: a checkpoint only)."""
    root = tmp_path / "sweep"
    write_job(root / "0", ["seed=0", "model.lr=0.05", "dataset.n_epochs=1"], complete((40, 50, -50), (80, 10, -10), 10))
    write_job(root / "1", ["seed=1", "model.lr=0.05", "dataset.n_epochs=1", "threads=1"],
              complete((44, 46, -46), (84, 8, -8), 14))
    write_job(root / "2", ["seed=0", "model.lr=0.1", "dataset.n_epochs=1"], complete((50, 30, -30), (90, 5, -5), 20))
    write_job(root / "3", ["seed=1", "model.lr=0.1", "dataset.n_epochs=1"],
              status={"status": "failed", "error": "ConfigError: model.lr=0.1 is refused", "wall_seconds": 1.5})
    write_job(root / "4", ["seed=2", "model.lr=0.1", "dataset.n_epochs=1"], checkpoint=True)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_one_row_per_job_with_status_metrics_and_wall_time(sweep: Path):
    rows = gather([sweep])
    assert [row.name for row in rows] == ["0", "1", "2", "3", "4"]
    assert [row.status for row in rows] == ["complete", "complete", "complete", "failed", "stopped early"]
    assert rows[1].overrides == ["seed=1", "model.lr=0.05", "dataset.n_epochs=1", "threads=1"]
    assert rows[0].metrics == {"class_il_average": 40, "class_il_forgetting": 50, "class_il_bwt": -50,
                               "task_il_average": 80, "task_il_forgetting": 10, "task_il_bwt": -10}
    assert rows[3].error == "ConfigError: model.lr=0.1 is refused" and rows[3].metrics == {}
    assert [row.wall_seconds for row in rows] == [10, 14, 20, 1.5, None]


def test_configurations_group_seeds_and_run_control_settings(sweep: Path):
    groups = group_rows(gather([sweep]))
    assert [group.overrides for group in groups] == [["model.lr=0.05", "dataset.n_epochs=1"],
                                                     ["model.lr=0.1", "dataset.n_epochs=1"]]
    first, second = groups
    assert (first.jobs, first.complete, second.jobs, second.complete) == (2, 2, 3, 1)
    # lr=0.05: Class-IL 40 and 44 -> mean 42, sample std sqrt(((40-42)^2 + (44-42)^2) / 1) = sqrt(8)
    assert first.means["class_il_average"] == pytest.approx(42)
    assert first.stds["class_il_average"] == pytest.approx(math.sqrt(8))
    assert first.means["task_il_forgetting"] == pytest.approx(9)  # (10 + 8) / 2
    assert first.stds["task_il_forgetting"] == pytest.approx(math.sqrt(2))  # ((1)^2 + (1)^2) / 1
    assert first.means["wall_seconds"] == pytest.approx(12)
    # lr=0.1: only job 2 is complete -> its values, no deviation
    assert second.means["class_il_bwt"] == pytest.approx(-30) and second.stds["class_il_bwt"] is None


def test_markdown_has_both_tables_and_the_errors(sweep: Path):
    text = format_summary(gather([sweep]), "sweep")
    assert text.startswith("# Summary of sweep\n")
    assert "5 jobs: 3 complete, 1 failed, 1 stopped early." in text
    configuration_line = next(line for line in text.splitlines() if line.startswith("| model.lr=0.05 dataset.n_epochs=1"))
    cells = [cell.strip() for cell in configuration_line.strip("|").split("|")]
    # configuration, n, jobs, Class-IL (avg, forgetting, BWT), Task-IL (avg, forgetting, BWT), wall
    assert cells == ["model.lr=0.05 dataset.n_epochs=1", "2", "2", "42.00 ± 2.83", "48.00 ± 2.83", "-48.00 ± 2.83",
                     "82.00 ± 2.83", "9.00 ± 1.41", "-9.00 ± 1.41", "12.0 ± 2.8"]
    job_line = next(line for line in text.splitlines() if line.startswith("| 4 "))
    assert [cell.strip() for cell in job_line.strip("|").split("|")] == [
        "4", "seed=2 model.lr=0.1 dataset.n_epochs=1", "stopped early", "-", "-", "-", "-", "-", "-", "-"]
    assert "- 3 (seed=1 model.lr=0.1 dataset.n_epochs=1): ConfigError: model.lr=0.1 is refused" in text


def test_update_writes_csv_markdown_and_png(sweep: Path):
    update_summary(sweep)
    lines = list(csv.DictReader(io.StringIO((sweep / "summary.csv").read_text())))
    assert [line["job"] for line in lines] == ["0", "1", "2", "3", "4"]
    assert lines[1]["overrides"] == "seed=1 model.lr=0.05 dataset.n_epochs=1 threads=1"
    assert float(lines[2]["class_il_average"]) == 50 and float(lines[2]["task_il_bwt"]) == -5
    assert lines[3]["status"] == "failed" and lines[3]["class_il_average"] == "" and lines[3]["wall_seconds"] == "1.5"
    assert lines[3]["error"] == "ConfigError: model.lr=0.1 is refused"
    assert "## Configurations" in (sweep / "summary.md").read_text()
    assert (sweep / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(sweep.glob("*.tmp")) and not list(sweep.glob(".*.tmp"))


def test_domain_il_runs_get_domain_il_columns(tmp_path: Path):
    results = {"status": "complete", "domain_il": {"average": 70.0, "forgetting": 3.0, "bwt": -2.0}}
    write_job(tmp_path / "run", ["dataset=perm-mnist"], results)
    (row,) = gather([tmp_path / "run"])
    assert row.name == "run" and row.metrics == {"domain_il_average": 70, "domain_il_forgetting": 3, "domain_il_bwt": -2}
    header = next(line for line in format_summary([row], "run").splitlines() if line.startswith("| job"))
    assert "Domain-IL BWT" in header and "Class-IL" not in header


def test_runs_are_found_nested_in_natural_order_and_hidden_folders_skipped(tmp_path: Path):
    for name in ("day/10", "day/2", "day/1/sub", ".hidden/0"):
        write_job(tmp_path / name, results=complete((1, 2, 3), (4, 5, 6), 1))
    assert [path.relative_to(tmp_path).as_posix() for path in find_job_dirs(tmp_path)] == ["day/1/sub", "day/2", "day/10"]
    assert [row.name for row in gather([tmp_path / "day"])] == ["1/sub", "2", "10"]
    assert [row.name for row in gather([tmp_path / "day" / "2"])] == ["2"]
    day = (tmp_path / "day").as_posix()
    assert [row.name for row in gather([tmp_path / "day" / "10", tmp_path / "day" / "2"])] == [f"{day}/10", f"{day}/2"]


def test_status_comes_from_the_files(tmp_path: Path):
    finished = subprocess.Popen([sys.executable, "-c", ""])
    finished.wait()
    here = {"host": socket.gethostname()}
    write_job(tmp_path / "done", results=complete((1, 2, 3), (4, 5, 6), 1), status={"status": "running", **here, "pid": os.getpid()})
    write_job(tmp_path / "timed", results=complete((1, 2, 3), (4, 5, 6), 1), status={"status": "complete", "wall_seconds": 7})
    write_job(tmp_path / "live", status={"status": "running", **here, "pid": os.getpid(), "overrides": ["seed=3"]})
    write_job(tmp_path / "killed", status={"status": "running", **here, "pid": finished.pid})
    write_job(tmp_path / "killed_late", status={"status": "running", **here, "pid": finished.pid}, checkpoint=True)
    write_job(tmp_path / "elsewhere", status={"status": "running", "host": "another-machine", "pid": finished.pid})
    write_job(tmp_path / "stopped", status={"status": "stopped early"}, checkpoint=True)
    write_job(tmp_path / "empty", overrides=["seed=0"])
    rows = {row.name: row for row in gather([tmp_path])}
    assert {name: row.status for name, row in rows.items()} == {
        "done": "complete", "timed": "complete", "live": "running", "killed": "failed", "killed_late": "stopped early",
        "elsewhere": "running", "stopped": "stopped early", "empty": "failed"}
    assert (rows["done"].wall_seconds, rows["timed"].wall_seconds) == (1, 7)  # the job's wall time wins over the run's
    assert rows["live"].overrides == ["seed=3"]  # from job.json when there is no .hydra/overrides.yaml
    assert rows["killed"].error == "ended without recording a result (killed or crashed)"
    assert rows["empty"].error == "no results.json and no checkpoint"


def test_command_line_prints_and_writes(sweep: Path):
    result = subprocess.run([sys.executable, "-m", "mammoth.summary", str(sweep), "--write"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"# Summary of {sweep}\n")
    assert "| model.lr=0.1 dataset.n_epochs=1" in result.stdout
    assert result.stdout.rstrip().endswith(f"Wrote {sweep / 'summary.csv'}, {sweep / 'summary.md'}, {sweep / 'summary.png'}")
    assert (sweep / "summary.md").read_text() == result.stdout[: result.stdout.index("Wrote ")]
    assert len((sweep / "summary.csv").read_text().splitlines()) == 6


def test_command_line_refuses_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main([str(tmp_path / "nope"), "--write"]) == 2
    output = capsys.readouterr()
    assert output.out == ""
    assert output.err == f"Error: directory {str(tmp_path / 'nope')!r} does not exist; allowed: a run or sweep directory\n"
    assert not (tmp_path / "nope").exists()


def test_command_line_reports_a_summary_it_cannot_write(sweep: Path, capsys: pytest.CaptureFixture):
    (sweep / "summary.csv").mkdir()  # a directory where the file should go
    assert main([str(sweep), "--write"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"Error: cannot write the summary into {str(sweep)!r}: ") and "summary.csv" in error


def test_command_line_refuses_a_directory_without_runs(tmp_path: Path, capsys: pytest.CaptureFixture):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert main([str(tmp_path / "empty")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"Error: no runs under {str(tmp_path / 'empty')!r}; allowed: a directory with runs")
    assert len(error.splitlines()) == 1
    with pytest.raises(SystemExit) as usage:
        main([])
    assert usage.value.code == 2


# --- the callback, with the config and JobReturn Hydra would pass ---------------------------


def job_config(root: Path, subdir: str, overrides: list[str], mode: RunMode = RunMode.MULTIRUN):
    return OmegaConf.create({
        "seed": 0, "output_dir": None,
        "hydra": {"mode": mode, "runtime": {"output_dir": str(root / subdir)},
                  "sweep": {"dir": "relative/elsewhere", "subdir": subdir}, "overrides": {"task": overrides}},
    })


def run_job(callback: SweepSummaryCallback, config, status: JobStatus, value=None, results: dict | None = None) -> dict:
    """What Hydra's run_job does around the task function: create the directory, start, end."""
    directory = Path(config.hydra.runtime.output_dir)
    directory.mkdir(parents=True)
    callback.on_job_start(config=config, task_function=None)
    started = json.loads((directory / "job.json").read_text())
    assert started["status"] == "running" and started["pid"] == os.getpid()
    if results is not None:
        (directory / "results.json").write_text(json.dumps(results))
    callback.on_job_end(config=config, job_return=JobReturn(status=status, _return_value=value))
    return json.loads((directory / "job.json").read_text())


def test_callback_records_each_job_and_updates_the_sweep_summary(tmp_path: Path):
    callback = SweepSummaryCallback()
    root = tmp_path / "sweep"
    ok = run_job(callback, job_config(root, "0", ["seed=0", "model.lr=0.1"]), JobStatus.COMPLETED, 42.0,
                 results=complete((42, 1, -1), (90, 0, 0), 3))
    assert ok["status"] == "complete" and ok["overrides"] == ["seed=0", "model.lr=0.1"] and ok["wall_seconds"] >= 0
    error = ConfigError("model.lr=-1.0 is not positive; allowed: a number > 0\nsecond line")
    failed = run_job(callback, job_config(root, "1", ["seed=0", "model.lr=-1"]), JobStatus.FAILED, error)
    assert failed["status"] == "failed"
    assert failed["error"] == "ConfigError: model.lr=-1.0 is not positive; allowed: a number > 0"
    stopped = run_job(callback, job_config(root, "2", ["seed=0", "stop_after_task=1"]), JobStatus.COMPLETED, float("nan"))
    assert stopped["status"] == "stopped early"
    lines = list(csv.DictReader(io.StringIO((root / "summary.csv").read_text())))
    assert [(line["job"], line["status"]) for line in lines] == [("0", "complete"), ("1", "failed"), ("2", "stopped early")]
    assert lines[0]["class_il_average"] == "42.0"
    assert (root / "summary.png").read_bytes()[:4] == b"\x89PNG" and (root / ".summary.lock").exists()
    assert not (tmp_path / "relative").exists()  # the root comes from the job's directory, not the relative sweep.dir


def test_callback_in_a_single_run_writes_only_the_status(tmp_path: Path):
    done = run_job(SweepSummaryCallback(), job_config(tmp_path, "run", ["seed=0"], RunMode.RUN), JobStatus.COMPLETED, 1.0,
                   results=complete((1, 2, 3), (4, 5, 6), 1))
    assert done["status"] == "complete"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]


def test_callback_never_fails_the_sweep(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    root = tmp_path / "sweep"
    (root / "summary.md").mkdir(parents=True)  # the summary cannot be replaced by a file
    with caplog.at_level(logging.WARNING, logger="mammoth"):
        done = run_job(SweepSummaryCallback(), job_config(root, "0", ["seed=0"]), JobStatus.COMPLETED, 1.0,
                       results=complete((1, 2, 3), (4, 5, 6), 1))
        SweepSummaryCallback().on_multirun_end(config=OmegaConf.create({"hydra": {"sweep": {"dir": str(root)}}}))
    assert done["status"] == "complete"
    warnings = [record.getMessage() for record in caplog.records if "could not write the sweep summary" in record.getMessage()]
    assert len(warnings) == 2 and "summary.md" in warnings[0]


def test_sweep_root_strips_a_nested_subdir(tmp_path: Path):
    config = job_config(tmp_path / "sweep", "lr=0.1/seed=0", [])
    assert sweep_root(config) == tmp_path / "sweep"


def test_the_plot_shows_at_most_the_40_best_configurations(tmp_path: Path):
    for lr in range(45):  # Class-IL average = lr, so the best 40 are lr 44 down to 5
        write_job(tmp_path / str(lr), ["seed=0", f"model.lr={lr}"], complete((lr, 0, 0), (50, 0, 0), 1))
    groups = group_rows(gather([tmp_path]))
    assert [group.overrides for group in plotted_configurations(groups)] == [[f"model.lr={lr}"] for lr in range(44, 4, -1)]
    png = plot_summary(gather([tmp_path]), "many")
    # height in the PNG header: (1.6 + 0.45 inch per bar * 40 configurations * 2 kinds) * 100 dpi
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (900, 3760)
    assert plotted_configurations(groups[:3]) == groups[:3]


def test_callback_writes_job_json_into_a_relative_output_dir_inside_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    config = job_config(tmp_path / "sweep", "0", ["seed=0", "output_dir=out"])
    config.output_dir = "out"  # the runner puts a relative output_dir inside the job's Hydra directory
    (tmp_path / "sweep" / "0" / "out").mkdir(parents=True)
    SweepSummaryCallback().on_job_start(config=config, task_function=None)
    assert json.loads((tmp_path / "sweep" / "0" / "out" / "job.json").read_text())["status"] == "running"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sweep"]  # nothing beside the sweep
