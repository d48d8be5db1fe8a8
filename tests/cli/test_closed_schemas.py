"""Closed schemas end to end: typos refused where Hydra composes (an app that opted in, mammoth's
command line), sweeps across methods whose arguments differ, missing required values."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from composing import compose_mammoth
from conftest import run_warm_python
from mammoth.backbones.resnet import ResnetBackboneConfig

TINY = ("dataset.n_epochs=1", "backbone.hidden_sizes=[16]", "threads=1")

APP = '''
import hydra


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def app(cfg):
    print("DEPTH", cfg.backbone.depth, "BUFFER", cfg.model.buffer_size)


if __name__ == "__main__":
    app()
'''


#: An app's config that opts in to mammoth's groups and selects backbone=resnet and model=er.
OPTED_IN = {"defaults": [{"backbone": "resnet"}, {"model": "er"}, "_self_"], "hydra": {"searchpath": ["pkg://mammoth.conf"]}}


@dataclasses.dataclass
class WideResnet(ResnetBackboneConfig):
    """A user's dataclass that extends a schema."""

    width: int = 128


def _composed_or_refused(route: str, tmp_path: Path, *overrides: str) -> tuple[str, str]:
    """What ``route`` composes with ``overrides`` (backbone.depth, and model.buffer_size where a model is
    selected, as one line) and the whole text of its refusal (the error and its cause): one is empty."""
    if route == "an app's process":  # an app that opted in, as its users run it
        (tmp_path / "conf").mkdir(exist_ok=True)
        (tmp_path / "conf" / "config.yaml").write_text(yaml.safe_dump(OPTED_IN))
        (tmp_path / "app.py").write_text(APP)
        ran = run_warm_python(["app.py", *overrides, "hydra.run.dir=run"], tmp_path)
        assert ran.returncode == (0 if ran.stdout else 1), ran.stderr  # Hydra's exit status for a bad override
        return ran.stdout.strip(), ran.stderr
    try:
        if route in ("a user's dataclass", "OmegaConf.merge"):  # OmegaConf alone, no Hydra
            values = {override.split("=")[0].split(".", 1)[1]: int(override.split("=")[1]) for override in overrides}
            if route == "a user's dataclass":
                config = OmegaConf.structured(WideResnet)
                for key, value in values.items():
                    setattr(config, key, value)
            else:
                config = OmegaConf.merge(OmegaConf.structured(ResnetBackboneConfig), values)
            return f"DEPTH {config.depth}", ""
        if route == "mammoth's config":
            cfg = compose_mammoth("backbone=resnet", "model=er", *overrides)
        elif route == "hydra_zen":
            from hydra_zen import launch, make_config

            seen = []
            app = make_config(hydra_defaults=["_self_", {"backbone": "resnet"}, {"model": "er"}], backbone=None, model=None)
            job = launch(app, seen.append, overrides=["hydra.searchpath=[pkg://mammoth.conf]", *overrides,
                                                      f"hydra.run.dir={tmp_path}"], version_base="1.3")
            assert job.status.name == "COMPLETED"
            cfg = seen[0]
        elif route == "an app with a backbone=resnet of its own":  # mammoth's other options stay closed
            (tmp_path / "own" / "backbone").mkdir(parents=True, exist_ok=True)
            (tmp_path / "own" / "backbone" / "resnet.yaml").write_text("kind: mine\n")
            (tmp_path / "own" / "config.yaml").write_text(yaml.safe_dump(OPTED_IN))
            with initialize_config_dir(str(tmp_path / "own"), version_base="1.3"):
                cfg = compose(config_name="config", overrides=["backbone=vit", *overrides])
            return f"DEPTH {cfg.backbone.depth}", ""
        else:  # the compose API in an app with no YAML (a ConfigStore node)
            ConfigStore.instance().store(name="closed_schema_test_app", node=OPTED_IN)
            with initialize(version_base="1.3"):
                cfg = compose(config_name="closed_schema_test_app", overrides=list(overrides))
        return f"DEPTH {cfg.backbone.depth} BUFFER {cfg.model.buffer_size}", ""
    except (ConfigCompositionException, ConfigAttributeError, ConfigKeyError) as error:
        return "", f"{error}\n{error.__cause__}"


OMEGACONF_ROUTES = ("a user's dataclass", "OmegaConf.merge")


@pytest.mark.parametrize("route", [*OMEGACONF_ROUTES, "mammoth's config", "the compose API", "hydra_zen", "an app's process",
                                   "an app with a backbone=resnet of its own"])
def test_a_closed_schema_refuses_an_unknown_key_wherever_it_is_composed(tmp_path: Path, route: str):
    if route == "an app with a backbone=resnet of its own":
        assert _composed_or_refused(route, tmp_path, "backbone.depth=2") == ("DEPTH 2", "")
        typos = [("backbone.deptth=2", "VitBackboneConfig")]
    elif route in OMEGACONF_ROUTES:
        assert _composed_or_refused(route, tmp_path, "backbone.depth=34") == ("DEPTH 34", "")
        typos = [("backbone.deptth=34", "WideResnet" if route == "a user's dataclass" else "ResnetBackboneConfig")]
    else:
        assert _composed_or_refused(route, tmp_path, "backbone.depth=34", "model.buffer_size=50") == ("DEPTH 34 BUFFER 50", "")
        typos = [("backbone.deptth=34", "ResnetBackboneConfig"), ("model.buffersize=50", "ErModelConfig")]
        if route == "mammoth's config":
            typos.append(("dataset.rooot=/data", "SeqDigitsDatasetConfig"))
    for override, schema in typos:
        full_key = override.split("=")[0]
        key = full_key.split(".")[1]
        composed, refusal = _composed_or_refused(route, tmp_path, override)
        assert composed == "" and f"Key '{key}' not in '{schema}'" in refusal, refusal
        if route == "OmegaConf.merge":
            assert f"full_key: {key}" in refusal, refusal
        elif route != "a user's dataclass":
            assert f"Could not override '{full_key}'" in refusal and f"full_key: {full_key}" in refusal, refusal
    if route == "the compose API":  # Hydra's ++ still adds a key on purpose
        ConfigStore.instance().store(name="closed_schema_test_app", node=OPTED_IN)
        with initialize(version_base="1.3"):
            assert compose(config_name="closed_schema_test_app", overrides=["++model.extra=1"]).model.extra == 1


def sweep(workdir: Path, *overrides: str):
    return run_warm_python(["-m", "mammoth", "-m", *overrides, *TINY, "hydra.sweep.dir=sweep"], workdir)


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
    result = run_warm_python(["-m", "mammoth", "model=ewc-on", "hydra.run.dir=run"], workdir)
    assert result.returncode == 2 and not (workdir / "run").exists()
    assert result.stderr.strip().splitlines() == [
        "Error: missing values for model.e_lambda, model.gamma (model 'ewc-on'); set them with model.e_lambda=... model.gamma=..."]


def test_an_opted_in_app_composes_a_regularizer_and_its_schema_is_closed():
    ConfigStore.instance().store(name="closed_schema_regularizer_app", node=OPTED_IN)
    with initialize(version_base="1.3"):
        cfg = compose(config_name="closed_schema_regularizer_app",
                      overrides=["model=derpp", "+model/regularizer=lider", "model.regularizer.beta_lip_lambda=0.5"])
        assert cfg.model.regularizer.beta_lip_lambda == 0.5 and cfg.model.alpha == 0.1
        with pytest.raises(ConfigCompositionException) as error:
            compose(config_name="closed_schema_regularizer_app",
                    overrides=["model=derpp", "+model/regularizer=lider", "model.regularizer.beta_lip=0.5"])
    assert "Key 'beta_lip' not in 'LiderRegularizerConfig'" in f"{error.value}\n{error.value.__cause__}"


def test_a_memory_of_both_sizes_or_of_neither_is_refused_before_anything_runs(workdir: Path):
    both = run_warm_python(["-m", "mammoth", "model=er", "model.buffer_size=50", "model.memory_per_class=5",
                            "hydra.run.dir=run"], workdir)
    assert both.returncode == 2 and not (workdir / "run").exists()
    assert both.stderr.strip().splitlines() == [
        "Error: model.buffer_size=50 and model.memory_per_class=5 are both set (model 'er'); allowed: one of them "
        "(set the other to null, e.g. model.buffer_size=null)"]
    neither = run_warm_python(["-m", "mammoth", "model=icarl", "hydra.run.dir=run"], workdir)
    assert neither.returncode == 2 and not (workdir / "run").exists()
    assert neither.stderr.strip().splitlines() == [
        "Error: missing value for model.buffer_size or model.memory_per_class (model 'icarl'); set one with "
        "model.buffer_size=... or model.memory_per_class=..."]
