"""Sweeps through Hydra's launchers give the same jobs as a sequential sweep, and resume in place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_warm_python

SWEEP = ["-m", "mammoth", "-m", "seed=0,1", "dataset.n_epochs=1", "model=er", "model.buffer_size=50", "threads=1"]


def job_results(sweep: Path) -> dict[str, dict]:
    """Each job's results.json by the job's overrides."""
    found = {}
    for path in sorted(sweep.glob("*/results.json")):
        results = json.loads(path.read_text())
        overrides = (path.parent / ".hydra" / "overrides.yaml").read_text()
        found[overrides] = results
    return found


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_launchers_run_the_same_jobs_as_a_sequential_sweep(workdir: Path, launcher: str):
    sequential = run_warm_python([*SWEEP, "hydra.sweep.dir=basic"], workdir)
    assert sequential.returncode == 0, sequential.stderr
    parallel = run_warm_python([*SWEEP, f"hydra/launcher={launcher}", "hydra.sweep.dir=other"], workdir)
    assert parallel.returncode == 0, parallel.stderr
    expected, got = job_results(workdir / "basic"), job_results(workdir / "other")
    assert len(expected) == 2 and sorted(expected) == sorted(got)
    for overrides, results in expected.items():
        assert got[overrides]["config"] == results["config"]
        assert got[overrides]["class_il"]["matrix"] == results["class_il"]["matrix"]
        assert got[overrides]["task_il"]["matrix"] == results["task_il"]["matrix"]
    assert expected[sorted(expected)[0]]["class_il"]["matrix"] != expected[sorted(expected)[1]]["class_il"]["matrix"]


@pytest.mark.slow
def test_a_stopped_sweep_resumes_in_place(workdir: Path):
    by_overrides = "hydra.sweep.subdir=${hydra.job.override_dirname}"
    common = ["-m", "mammoth", "-m", "seed=0,1", "dataset.n_epochs=1", "threads=1", "hydra.sweep.dir=sweep", by_overrides]
    stopped = run_warm_python([*common, "stop_after_task=2"], workdir)
    assert stopped.returncode == 0, stopped.stderr
    jobs = sorted(path.name for path in (workdir / "sweep").iterdir() if path.is_dir())
    assert jobs == ["dataset.n_epochs=1,seed=0", "dataset.n_epochs=1,seed=1"]  # stop_after_task is not in the name
    job = workdir / "sweep" / jobs[0]
    assert not (job / "results.json").exists()
    hint = f"continue with: python -m mammoth seed=0 dataset.n_epochs=1 threads=1 resume=true hydra.run.dir={job}"
    assert hint in (job / "mammoth.log").read_text()
    resumed = run_warm_python([*common, "resume=true"], workdir)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(path.name for path in (workdir / "sweep").iterdir() if path.is_dir()) == jobs
    whole = run_warm_python(["-m", "mammoth", "seed=0", "dataset.n_epochs=1", "threads=1", "hydra.run.dir=whole"], workdir)
    assert whole.returncode == 0, whole.stderr
    expected = json.loads((workdir / "whole" / "results.json").read_text())
    assert json.loads((job / "results.json").read_text())["class_il"]["matrix"] == expected["class_il"]["matrix"]


@pytest.mark.slow
def test_a_resumed_sweep_starts_the_jobs_that_never_ran(workdir: Path):
    result = run_warm_python(["-m", "mammoth", "-m", "seed=0,1", "dataset.n_epochs=1", "threads=1", "resume=true",
                         "hydra.sweep.dir=sweep"], workdir)
    assert result.returncode == 0, result.stderr
    for job in ("0", "1"):
        assert "has no checkpoint: this job of the sweep starts from the first task" in (workdir / "sweep" / job / "mammoth.log").read_text()
        assert json.loads((workdir / "sweep" / job / "results.json").read_text())["status"] == "complete"
    single = run_warm_python(["-m", "mammoth", "resume=true", "hydra.run.dir=nowhere"], workdir)
    assert single.returncode == 1 and "resume=true but there is no checkpoint" in single.stderr
