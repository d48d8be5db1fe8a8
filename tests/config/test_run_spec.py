"""resolve_run: one composed config becomes one checked, frozen run specification."""

from __future__ import annotations

import dataclasses
import os

import pytest

import composing
from mammoth.app.run_spec import resolve_run
from mammoth.errors import ConfigError, MammothError


def test_a_composed_config_resolves_to_its_entries_settings_and_plain_config():
    spec = resolve_run(composing.compose_mammoth("model=er", "model.buffer_size=50", "backbone=resnet",
                                                 "backbone.depth=34", "seed=7", "threads=1", "stop_after_task=2"))
    assert (spec.dataset.name, spec.backbone.name, spec.model.name) == ("seq-digits", "resnet", "er")
    assert spec.model.values["buffer_size"] == 50 and spec.backbone.values["depth"] == 34
    assert spec.backbone.values["num_classes"] == "???"  # the data fills it when the run builds the backbone
    assert (spec.seed, spec.device, spec.threads, spec.resume, spec.stop_after_task) == (7, "auto", 1, False, 2)
    assert spec.config["model"]["buffer_size"] == 50 and "hydra" not in spec.config
    assert spec.loggers == spec.config["logger"] and set(spec.loggers) == {"csv"}
    assert "threads" not in spec.comparable and "logger" not in spec.comparable
    assert spec.comparable["seed"] == 7 and spec.comparable["model"] == spec.config["model"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 3  # type: ignore[misc]


def test_the_dataset_default_backbone_stays_unresolved_until_the_data_is_known():
    cfg = composing.compose_mammoth()
    cfg.backbone = None
    assert resolve_run(cfg).backbone is None


def test_the_values_are_checked_when_the_run_resolves():
    spec = resolve_run(composing.compose_mammoth("model.lr=0.5"))
    assert spec.model.checked_values()["lr"] == 0.5
    # a type or allowed set is checked before anything is built (the pre-flight: exit status 2)
    for overrides, message in [(("model.optimizer=rmsprop",), "model.optimizer: invalid value 'rmsprop' for argument "
                                "'optimizer': allowed values: 'sgd', 'adam'"),
                               (("backbone=resnet", "backbone.depth=19"), "backbone.depth: invalid value 19 for "
                                "argument 'depth': allowed values: 18, 34, 50, 101, 152")]:
        with pytest.raises(MammothError) as error:
            resolve_run(composing.compose_mammoth(*overrides))
        assert str(error.value) == message
    # the data's arguments are filled by the run, not checked here
    assert resolve_run(composing.compose_mammoth("backbone=resnet")).backbone.values["num_classes"] == "???"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("+seeed=3",), "unknown setting 'seeed'"),
        (("seed=-1",), "seed=-1 is outside 64 bits; allowed: an integer from 0 to 18446744073709551615"),
        (("threads=0",), "threads=0 is not positive; allowed: null (torch's default) or an integer >= 1"),
        ((f"threads={(os.cpu_count() or 1) + 1}",), f"is more than the {os.cpu_count() or 1} CPU(s) of this machine"),
        (("model=sgd", "++model.buffer_size=3"), "unknown argument 'buffer_size' for model 'sgd'"),
        (("model=er",), "missing value for model.buffer_size or model.memory_per_class (model 'er')"),
        (("model=er", "model.buffer_size=5", "model.memory_per_class=2"),
         "model.buffer_size=5 and model.memory_per_class=2 are both set (model 'er')"),
    ],
)
def test_bad_settings_are_refused_with_one_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        resolve_run(composing.compose_mammoth(*overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_value_read_from_the_environment_is_used_but_recorded_as_written(monkeypatch):
    monkeypatch.setenv("MAMMOTH_TEST_SECRET", "s3cr3t")
    spec = resolve_run(composing.compose_mammoth("dataset.root=data-${oc.env:MAMMOTH_TEST_SECRET}",
                                                 "optimized_metric=${oc.env:MAMMOTH_TEST_METRIC,class_il.average}",
                                                 "logger.csv.filename=${dataset.root}.csv"))
    assert spec.dataset.values["root"] == "data-s3cr3t"  # what the run builds with
    assert spec.loggers["csv"]["filename"] == "data-s3cr3t.csv"  # what the run writes with
    # what results.json, the checkpoint and the loggers' config uploads record: the text as written,
    # also for a value that reads the environment through another key
    assert spec.config["dataset"]["root"] == "data-${oc.env:MAMMOTH_TEST_SECRET}"
    assert spec.config["logger"]["csv"]["filename"] == "${dataset.root}.csv"
    assert spec.config["optimized_metric"] == "${oc.env:MAMMOTH_TEST_METRIC,class_il.average}"
    assert "s3cr3t" not in repr(spec.config) and "s3cr3t" not in repr(spec.comparable)
    assert spec.config["seed"] == spec.seed and spec.config["model"] == {**spec.config["model"]}  # the rest resolved


def test_the_tasks_are_checked_by_name_too_and_for_registered_benchmarks():
    from omegaconf import OmegaConf

    from mammoth.config.options import served_registries

    # a dataset config that names its benchmark (no _target_) is checked as a composed one
    cfg = composing.compose_mammoth()
    cfg.dataset = OmegaConf.create({"name": "seq-cifar100", "base_classes": 50, "increment": 10, "n_tasks": 5})
    with pytest.raises(ConfigError, match=r"^dataset.n_tasks=5 contradicts dataset.base_classes=50 dataset.increment=10"):
        resolve_run(cfg)
    # the pre-flight's registries (the manifest's facts, no torch) and the built-ins' refuse the same
    overrides = ("dataset=seq-cifar100", "dataset.base_classes=50", "dataset.increment=10", "dataset.n_tasks=5")
    messages = []
    for registries in (served_registries(), None):
        with pytest.raises(ConfigError) as error:
            resolve_run(composing.compose_mammoth(*overrides), registries)
        messages.append(str(error.value))
    assert messages[0] == messages[1]
    spec = resolve_run(composing.compose_mammoth("dataset=seq-cifar100", "dataset.base_classes=50", "dataset.increment=10"))
    assert spec.config["dataset"]["base_classes"] == 50 and spec.config["dataset"]["n_tasks"] is None
