"""Closed schemas end to end: typos refused where Hydra composes (an app that opted in, mammoth's
command line), sweeps across methods whose arguments differ, missing required values."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from conftest import run_python

TINY = ("dataset.n_epochs=1", "backbone.hidden_sizes=[16]", "threads=1")

APP = '''
import hydra


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def app(cfg):
    print("DEPTH", cfg.backbone.depth, "BUFFER", cfg.model.buffer_size)


if __name__ == "__main__":
    app()
'''


def test_an_app_that_opted_in_refuses_a_typo_at_composition(workdir: Path):
    (workdir / "conf").mkdir()
    (workdir / "conf" / "config.yaml").write_text(
        "defaults:\n  - backbone: resnet\n  - model: er\n  - _self_\n\nhydra:\n  searchpath: [pkg://mammoth.conf]\n")
    (workdir / "app.py").write_text(APP)
    ran = run_python(["app.py", "backbone.depth=34", "model.buffer_size=50", "hydra.run.dir=run"], workdir)
    assert ran.stdout.splitlines() == ["DEPTH 34 BUFFER 50"], ran.stderr
    for override, key, schema in [("backbone.deptth=34", "deptth", "ResnetBackboneConfig"),
                                  ("model.buffersize=50", "buffersize", "ErModelConfig")]:
        refused = run_python(["app.py", override, "hydra.run.dir=run"], workdir)
        assert refused.returncode == 1 and "DEPTH" not in refused.stdout
        assert f"Could not override '{override.split('=')[0]}'" in refused.stderr
        assert f"Key '{key}' not in '{schema}'" in refused.stderr and f"full_key: {override.split('=')[0]}" in refused.stderr


def sweep(workdir: Path, *overrides: str):
    return run_python(["-m", "mammoth", "-m", *overrides, *TINY, "hydra.sweep.dir=sweep"], workdir)


def job_overrides(workdir: Path) -> list[list[str]]:
    return [yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text())
            for path in sorted((workdir / "sweep").glob("[0-9]*"))]


def test_an_argument_every_swept_method_has_runs_as_written(workdir: Path):
    # Hydra composes the sweep's own config with the default sgd: mammoth hands it ++model.buffer_size
    result = sweep(workdir, "model=er,der", "model.buffer_size=20")
    assert result.returncode == 0, result.stderr
    assert [json.loads((workdir / "sweep" / job / "results.json").read_text())["config"]["model"]["buffer_size"]
            for job in ("0", "1")] == [20, 20]
    assert [overrides[:2] for overrides in job_overrides(workdir)] == [
        ["model=er", "++model.buffer_size=20"], ["model=der", "++model.buffer_size=20"]]


def test_plus_plus_sweeps_methods_whose_arguments_differ_and_only_their_jobs_fail(workdir: Path):
    result = sweep(workdir, "model=sgd,er", "++model.buffer_size=20")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: unknown argument 'buffer_size' for model 'sgd'")
    statuses = {json.loads((path / "job.json").read_text())["status"]: path for path in (workdir / "sweep").glob("[0-9]*")}
    assert sorted(statuses) == ["complete", "failed"]
    assert not (statuses["failed"] / "results.json").exists() and (statuses["complete"] / "results.json").exists()
    assert "unknown argument 'buffer_size' for model 'sgd' (model.buffer_size)" in (statuses["failed"] / "mammoth.log").read_text()


def test_without_plus_plus_the_sweep_is_refused_before_any_job(workdir: Path):
    result = sweep(workdir, "model=sgd,er", "model.buffer_size=20")
    assert result.returncode == 2 and not (workdir / "sweep").exists()
    assert result.stderr.strip().splitlines() == [
        "Error: model.buffer_size=20: model 'sgd' has no argument 'buffer_size' (er has); to sweep models whose "
        "arguments differ, use ++model.buffer_size=20 (the jobs of sgd then fail alone)"]


def test_missing_required_values_are_refused_before_anything_runs(workdir: Path):
    result = run_python(["-m", "mammoth", "model=ewc-on", "hydra.run.dir=run"], workdir)
    assert result.returncode == 2 and not (workdir / "run").exists()
    assert result.stderr.strip().splitlines() == [
        "Error: missing values for model.e_lambda, model.gamma (model 'ewc-on'); set them with model.e_lambda=... model.gamma=..."]
