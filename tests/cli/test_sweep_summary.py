"""The sweep summary written by the default SweepSummaryCallback, in real multiruns."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
from conftest import run_warm_python

from mammoth.reporting.sweep_tables import markdown_text


def summary_rows(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "summary.csv", newline="") as file:
        return list(csv.DictReader(file))


def configuration_cells(sweep: Path) -> dict[str, list[str]]:
    """The Configurations table of summary.md: configuration -> its other cells."""
    text = (sweep / "summary.md").read_text()
    table = text.split("## Configurations\n\n", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    return {line[0]: line[1:] for line in cells}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])  # joblib: the jobs end in other processes
def test_a_sweep_leaves_a_summary_of_every_job_and_configuration(workdir: Path, launcher: str):
    result = run_warm_python(
        ["-m", "mammoth", "-m", f"hydra/launcher={launcher}", "seed=0,1", "model.lr=0.05,0.1",
         "dataset.n_epochs=1", "hydra.sweep.dir=sweep"],
        workdir,
    )
    assert result.returncode == 0, result.stderr
    sweep = workdir / "sweep"
    rows = summary_rows(sweep)
    assert len(rows) == 4 and {row["status"] for row in rows} == {"complete"}
    assert sorted(row["overrides"] for row in rows) == sorted(
        f"seed={seed} model.lr={lr} dataset.n_epochs=1" for seed in (0, 1) for lr in ("0.05", "0.1"))
    averages: dict[str, list[float]] = {"0.05": [], "0.1": []}
    for row in rows:
        results = json.loads((sweep / row["job"] / "results.json").read_text())
        assert float(row["class_il_average"]) == results["class_il"]["average"]
        assert float(row["task_il_bwt"]) == results["task_il"]["bwt"]
        assert json.loads((sweep / row["job"] / "job.json").read_text())["status"] == "complete"
        averages[str(results["config"]["model"]["lr"])].append(results["class_il"]["average"])
    configurations = configuration_cells(sweep)
    assert sorted(configurations) == ["model.lr=0.05 dataset.n_epochs=1", "model.lr=0.1 dataset.n_epochs=1"]
    for lr, values in averages.items():
        n, jobs, class_il = configurations[f"model.lr={lr} dataset.n_epochs=1"][:3]
        assert (n, jobs) == ("2", "2")
        assert class_il == f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"
    assert (sweep / "summary.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_the_summary_can_be_turned_off(workdir: Path):
    result = run_warm_python(
        ["-m", "mammoth", "-m", "~hydra.callbacks.sweep_summary", "dataset.n_epochs=1", "hydra.sweep.dir=sweep"],
        workdir,
    )
    assert result.returncode == 0, result.stderr
    assert (workdir / "sweep" / "0" / "results.json").exists()
    assert not (workdir / "sweep" / "summary.csv").exists() and not (workdir / "sweep" / "0" / "job.json").exists()


@pytest.mark.slow
def test_a_failed_job_is_failed_in_the_summary_and_the_other_complete(workdir: Path):
    result = run_warm_python(
        ["-m", "mammoth", "-m", "model.lr=0.1,-1", "dataset.n_epochs=1", "hydra.sweep.dir=sweep"], workdir)
    assert result.returncode != 0  # the sweep had a failed job
    sweep = workdir / "sweep"
    complete, failed = summary_rows(sweep)
    assert (complete["overrides"], complete["status"]) == ("model.lr=0.1 dataset.n_epochs=1", "complete")
    assert float(complete["class_il_average"]) == json.loads((sweep / "0" / "results.json").read_text())["class_il"]["average"]
    assert (failed["overrides"], failed["status"], failed["class_il_average"]) == ("model.lr=-1 dataset.n_epochs=1", "failed", "")
    assert failed["error"].startswith("ConfigError: model.lr=-1.0 is not positive")
    assert not (sweep / "1" / "results.json").exists()
    assert f"- 1 (model.lr=-1 dataset.n_epochs=1): {markdown_text(failed['error'])}" in (sweep / "summary.md").read_text()
