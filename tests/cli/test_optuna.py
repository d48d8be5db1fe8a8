"""The Optuna presets (conf/hparams_search/): a real study on seq-digits, the presets' composition,
and max_failure_rate: a failed trial is a failed job, not a dead sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hydra.types import RunMode

from conftest import run_warm_python
from composing import compose_mammoth


def job_results(sweep: Path) -> dict[str, dict]:
    """results.json of every job directory of ``sweep`` that has one, by directory name."""
    return {job.name: json.loads((job / "results.json").read_text())
            for job in sorted(sweep.iterdir()) if (job / "results.json").is_file()}


@pytest.mark.slow
def test_three_trial_study_on_seq_digits_reports_a_real_runs_value(workdir):
    done = run_warm_python(["-m", "mammoth", "-m", "hparams_search=seq-digits-optuna", "hydra.sweeper.n_trials=3",
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
    lr_search = compose_mammoth("hparams_search=seq-digits-optuna", return_hydra_config=True)
    der_search = compose_mammoth("hparams_search=der-optuna", return_hydra_config=True)
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

    tolerant = run_warm_python([*common, "hydra.sweep.dir=tolerant"], cwd=workdir)
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

    strict = run_warm_python([*common, "hydra.sweep.dir=strict", "hydra.sweeper.max_failure_rate=0.0"], cwd=workdir)
    assert strict.returncode == 1
    assert "Error: model.lr=-1.0 is not positive; allowed: lr > 0" in strict.stderr
    assert not (workdir / "strict" / "optimization_results.yaml").exists()
    assert sorted(path.name for path in (workdir / "strict").iterdir() if path.is_dir()) == ["0", "1"]  # stopped at trial 1


# --- one study per sweep directory: a second one is refused, resume=true continues the same study ---------


def planted_study(sweep: Path, storage: str | None, study_name: str | None) -> None:
    """A sweep directory as an Optuna search leaves it: job 0 with its recorded overrides and sweeper."""
    hydra_dir = sweep / "0" / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "overrides.yaml").write_text("- model.lr=0.05\n")
    (hydra_dir / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"sweeper": {
        "_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
        "storage": storage, "study_name": study_name}}}))


def study_refused(*args: str) -> str:
    from mammoth.__main__ import hydra_main
    from mammoth.app.preflight import prepare_arguments
    from mammoth.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        prepare_arguments(list(args), hydra_main)
    return str(error.value).splitlines()[0]


SEARCH = ("-m", "hydra/sweeper=optuna", "model.lr=interval(0.01,0.1)")


def test_a_second_study_into_a_directory_that_holds_one_is_refused_and_memory_cannot_resume(workdir: Path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = workdir / "sweep"
    planted_study(sweep, storage=None, study_name=None)
    assert study_refused(*SEARCH, f"hydra.sweep.dir={sweep}") == (
        f"hydra.sweep.dir={sweep} already holds a sweep (job directory 0); allowed: resume=true to continue that "
        "sweep, or another hydra.sweep.dir")
    (sweep / "optimization_results.yaml").write_text("name: optuna\n")  # an ended study says so by its results
    assert "already holds a sweep (optimization_results.yaml)" in study_refused(*SEARCH, f"hydra.sweep.dir={sweep}")
    assert study_refused(*SEARCH, f"hydra.sweep.dir={sweep}", "resume=true") == (
        f"resume=true cannot continue the Optuna study in hydra.sweep.dir={sweep}: hydra.sweeper.storage is null, so the "
        "study lived in memory and ended with its sweep; allowed: another hydra.sweep.dir (to keep a study to continue, "
        "start it with hydra.sweeper.storage=sqlite:///NAME.db hydra.sweeper.study_name=NAME)")
    stored = workdir / "o.db"
    assert study_refused(*SEARCH, f"hydra.sweep.dir={sweep}", "resume=true", f"hydra.sweeper.storage=sqlite:///{stored}",
                         "hydra.sweeper.study_name=s") == (
        f"resume=true cannot continue the Optuna study in hydra.sweep.dir={sweep}: it was kept in memory (its "
        "hydra.sweeper.storage was null) and ended with its sweep; allowed: another hydra.sweep.dir")
    assert not stored.exists()  # the check opened no storage


def test_resuming_continues_the_directorys_own_stored_study_in_a_folder_of_its_own(workdir: Path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import optuna

    from mammoth.__main__ import hydra_main
    from mammoth.app.preflight import prepare_arguments

    storage = f"sqlite:///{workdir / 'o.db'}"
    optuna.create_study(storage=storage, study_name="s").add_trial(
        optuna.trial.create_trial(params={"model.lr": 0.05}, distributions={
            "model.lr": optuna.distributions.UniformDistribution(0.01, 0.1)}, value=50.0))
    sweep = workdir / "sweep"
    stored = (*SEARCH, f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=s")
    # the stored study into a new directory: refused without resume=true (the summary would hold part of it)
    assert study_refused(*stored, f"hydra.sweep.dir={workdir / 'new'}") == (
        f"hydra.sweeper.storage={storage!r} already holds the Optuna study 's'; a new sweep directory would summarise "
        "only part of it; allowed: resume=true to continue that study (its trials so far stay in its own "
        "hydra.sweep.dir), or another hydra.sweeper.study_name")
    planted_study(sweep, storage=storage, study_name="s")
    assert study_refused(*SEARCH, f"hydra.sweep.dir={sweep}", "resume=true", f"hydra.sweeper.storage={storage}",
                         "hydra.sweeper.study_name=other") == (
        f"hydra.sweep.dir={sweep} holds the Optuna study 's' of hydra.sweeper.storage={storage!r}; this search names "
        f"'other' of {storage!r}; allowed: resume=true with hydra.sweeper.storage={storage} hydra.sweeper.study_name=s, "
        "or another hydra.sweep.dir")
    command = prepare_arguments([*stored, f"hydra.sweep.dir={sweep}", "resume=true"], hydra_main)
    assert command.subdir == "resume-1/${hydra.job.num}"  # the new trials never write over the earlier ones
    assert command.hydra_arguments()[-2:] == [f"hydra.sweep.dir='{sweep}'", "hydra.sweep.subdir='resume-1/${hydra.job.num}'"]
    (sweep / "resume-1").mkdir()
    (sweep / "resume-4").mkdir()
    assert prepare_arguments([*stored, f"hydra.sweep.dir={sweep}", "resume=true"], hydra_main).subdir == \
        "resume-5/${hydra.job.num}"
    # a storage without the study (an empty one, or another study's name) cannot be continued
    planted_study(workdir / "sweep2", storage=storage, study_name="gone")
    assert study_refused(*SEARCH, f"hydra.sweep.dir={workdir / 'sweep2'}", "resume=true", f"hydra.sweeper.storage={storage}",
                         "hydra.sweeper.study_name=gone") == (
        f"resume=true cannot continue the Optuna study in hydra.sweep.dir={workdir / 'sweep2'}: hydra.sweeper.storage="
        f"{storage!r} holds no study named 'gone'; allowed: the storage and study_name the study started with")


@pytest.mark.slow
def test_a_continued_study_keeps_every_trial_and_its_summary_agrees_with_optuna(workdir: Path):
    common = ["-m", "mammoth", "hparams_search=seq-digits-optuna", "hydra.sweeper.n_trials=1", "dataset.n_epochs=1",
              "hydra.sweep.dir=sweep", "threads=1", "hydra.sweeper.storage=sqlite:///study.db", "hydra.sweeper.study_name=lr"]
    first = run_warm_python(common, cwd=workdir)
    assert first.returncode == 0, first.stderr[-3000:]
    before = job_results(workdir / "sweep")
    again = run_warm_python(common, cwd=workdir)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1] == (
        f"Error: hydra.sweep.dir={workdir / 'sweep'} already holds a sweep (optimization_results.yaml); allowed: "
        "resume=true to continue that sweep, or another hydra.sweep.dir")
    assert job_results(workdir / "sweep") == before
    continued = run_warm_python([*common, "resume=true", "hydra.sweeper.sampler.seed=7"], cwd=workdir)
    assert continued.returncode == 0, continued.stderr[-3000:]
    assert job_results(workdir / "sweep") == before  # trial 0 untouched
    second = json.loads((workdir / "sweep" / "resume-1" / "0" / "results.json").read_text())
    import optuna

    study = optuna.load_study(study_name="lr", storage=f"sqlite:///{workdir / 'study.db'}")
    averages = [before["0"]["class_il"]["average"], second["class_il"]["average"]]
    assert sorted(trial.value for trial in study.trials) == sorted(averages)
    best = yaml.safe_load((workdir / "sweep" / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(averages) == study.best_value
    summary = (workdir / "sweep" / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and any(line.startswith("resume-1/0,") for line in summary)  # header and both trials
