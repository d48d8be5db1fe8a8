"""The Optuna presets (conf/hparams_search/): a real study on seq-digits, the presets' composition,
and max_failure_rate: a failed trial is a failed job, not a dead sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.types import RunMode

from conftest import run_python


def job_results(sweep: Path) -> dict[str, dict]:
    """results.json of every job directory of ``sweep`` that has one, by directory name."""
    return {job.name: json.loads((job / "results.json").read_text())
            for job in sorted(sweep.iterdir()) if (job / "results.json").is_file()}


@pytest.mark.slow
def test_three_trial_study_on_seq_digits_reports_a_real_runs_value(workdir):
    done = run_python(["-m", "mammoth", "-m", "hparams_search=seq-digits-optuna", "hydra.sweeper.n_trials=3",
                       "dataset.n_epochs=1", "hydra.sweep.dir=sweep", "threads=1"], cwd=workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    best = yaml.safe_load((workdir / "sweep" / "optimization_results.yaml").read_text())
    jobs = job_results(workdir / "sweep")
    assert sorted(jobs) == ["0", "1", "2"]
    averages = {name: results["class_il"]["average"] for name, results in jobs.items()}
    best_job = max(averages, key=averages.get)  # direction: maximize
    assert best["best_value"] == averages[best_job]
    assert best["best_params"] == {"model.lr": jobs[best_job]["config"]["model"]["lr"]}
    learning_rates = [results["config"]["model"]["lr"] for results in jobs.values()]
    assert len(set(learning_rates)) == 3 and all(0.001 <= lr <= 0.5 for lr in learning_rates)
    assert all(results["config"]["optimized_metric"] == "class_il.average" for results in jobs.values())
    # tuned on the validation split; the test accuracy is reported beside it, never optimised
    assert all(results["evaluated_on"] == "validation" and results["test"]["class_il"]["average"] >= 0
               for results in jobs.values())


def test_presets_compose_with_the_optuna_sweeper():
    with initialize_config_module(config_module="mammoth.app_conf", version_base="1.3"):
        lr_search = compose(config_name="config", overrides=["hparams_search=seq-digits-optuna"], return_hydra_config=True)
        der_search = compose(config_name="config", overrides=["hparams_search=der-optuna"], return_hydra_config=True)
    for cfg in (lr_search, der_search):
        assert cfg.optimized_metric == "class_il.average"
        assert cfg.dataset.validation == 0.1  # never tuned on the test set
        assert cfg.hydra.sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
        assert cfg.hydra.sweeper.direction == "maximize"
        assert cfg.hydra.sweeper.sampler._target_ == "optuna.samplers.TPESampler"
        assert cfg.hydra.sweeper.sampler.seed == 1234
        assert cfg.hydra.mode == RunMode.MULTIRUN
    assert dict(lr_search.hydra.sweeper.params) == {"model.lr": "tag(log, interval(0.001, 0.5))"}
    assert lr_search.hydra.runtime.choices["model"] == "sgd"
    assert der_search.hydra.runtime.choices["model"] == "der"
    assert dict(der_search.hydra.sweeper.params) == {
        "model.lr": "tag(log, interval(0.005, 0.3))",
        "model.buffer_size": "choice(50, 100, 200, 500)",
        "model.alpha": "choice(0.1, 0.2, 0.3, 0.5, 1.0)",
    }


FAILING_SEARCH = """\
# @package _global_
defaults:
  - override /hydra/sweeper: optuna
  - override /hydra/sweeper/sampler: random
optimized_metric: class_il.average
hydra:
  sweeper:
    direction: maximize
    n_trials: 4
    n_jobs: 1
    max_failure_rate: 1.0
    sampler:
      seed: 0  # draws lr 0.05, -1.0, 0.05, 0.05 with optuna 2.10
    params:
      model.lr: choice(-1.0, 0.05)
"""


@pytest.mark.slow
def test_max_failure_rate_decides_whether_a_failed_trial_stops_the_study(workdir):
    search = workdir / "conf" / "hparams_search"
    search.mkdir(parents=True)
    (search / "failing.yaml").write_text(FAILING_SEARCH)
    common = ["-m", "mammoth", "-m", "--config-dir", "conf", "hparams_search=failing", "dataset.n_epochs=1", "threads=1"]

    tolerant = run_python([*common, "hydra.sweep.dir=tolerant"], cwd=workdir)
    assert tolerant.returncode == 0, tolerant.stderr[-3000:]
    jobs = sorted(path for path in (workdir / "tolerant").iterdir() if path.is_dir())
    assert [job.name for job in jobs] == ["0", "1", "2", "3"]
    failed = [job for job in jobs if "- model.lr=-1.0" in (job / ".hydra" / "overrides.yaml").read_text()]
    complete = [job for job in jobs if job not in failed]
    assert failed and complete
    for job in failed:
        assert not (job / "results.json").exists()
        assert "Error: model.lr=-1.0 is not positive" in (job / "mammoth.log").read_text()
    best = yaml.safe_load((workdir / "tolerant" / "optimization_results.yaml").read_text())
    averages = [json.loads((job / "results.json").read_text())["class_il"]["average"] for job in complete]
    assert best["best_value"] == max(averages)
    assert best["best_params"] == {"model.lr": 0.05}

    strict = run_python([*common, "hydra.sweep.dir=strict", "hydra.sweeper.max_failure_rate=0.0"], cwd=workdir)
    assert strict.returncode == 1
    assert "Error: model.lr=-1.0 is not positive; allowed: lr > 0" in strict.stderr
    assert not (workdir / "strict" / "optimization_results.yaml").exists()
    assert sorted(path.name for path in (workdir / "strict").iterdir() if path.is_dir()) == ["0", "1"]  # stopped at trial 1
