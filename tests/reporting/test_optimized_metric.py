"""optimized_metric: what mammoth.run returns (what a sweeper optimises), and its refusal."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

import mammoth
from mammoth.errors import ConfigError
from mammoth.reporting.optimized_metric import METRIC_DIRECTIONS, check_optimized_metric, optimized_metric_names, optimized_value
import composing

CLASS_IL = SimpleNamespace(name="seq-digits", setting="class-il")
DOMAIN_IL = SimpleNamespace(name="perm-mnist", setting="domain-il")


def compose_run(output_dir: Path, *overrides: str):
    return composing.compose_run(output_dir, "threads=1", "dataset.n_epochs=1", "~logger", *overrides)


def test_allowed_names_per_setting():
    assert optimized_metric_names("class-il") == [
        "class_il.average", "class_il.forgetting", "class_il.bwt",
        "task_il.average", "task_il.forgetting", "task_il.bwt",
    ]
    assert optimized_metric_names("domain-il") == ["domain_il.average", "domain_il.forgetting", "domain_il.bwt"]


def test_directions_are_documented():
    assert METRIC_DIRECTIONS == {"average": "maximize", "forgetting": "minimize", "bwt": "maximize"}


def test_default_is_the_settings_first_average():
    assert check_optimized_metric(None, CLASS_IL) == "class_il.average"
    assert check_optimized_metric(None, DOMAIN_IL) == "domain_il.average"
    assert check_optimized_metric("task_il.bwt", CLASS_IL) == "task_il.bwt"


@pytest.mark.parametrize(
    ("name", "dataset", "allowed"),
    [
        ("class_il.average", DOMAIN_IL, "domain_il.average, domain_il.forgetting, domain_il.bwt"),
        ("domain_il.bwt", CLASS_IL, "class_il.average, class_il.forgetting, class_il.bwt, "
                                    "task_il.average, task_il.forgetting, task_il.bwt"),
        ("class_il.accuracy", CLASS_IL, "class_il.average, class_il.forgetting"),
        ("average", CLASS_IL, "class_il.average"),
    ],
)
def test_a_metric_the_setting_lacks_is_refused_with_the_allowed_ones(name, dataset, allowed):
    with pytest.raises(ConfigError) as error:
        check_optimized_metric(name, dataset)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"optimized_metric={name!r} is not reported for {dataset.name} ({dataset.setting}); allowed: ")
    assert allowed in message


def test_value_is_read_from_the_results_block():
    results = {"class_il": {"average": 41.5, "forgetting": 12.25, "bwt": -3.0}, "task_il": {"average": 90.0}}
    assert optimized_value(results, "class_il.forgetting") == 12.25
    assert optimized_value(results, "class_il.bwt") == -3.0
    assert optimized_value(results, "task_il.average") == 90.0


@pytest.mark.parametrize(("metric", "kind", "field"), [(None, "class_il", "average"),
                                                       ("task_il.forgetting", "task_il", "forgetting"),
                                                       ("class_il.bwt", "class_il", "bwt")])
def test_run_returns_the_optimized_metric_of_its_results(tmp_path, metric, kind, field):
    overrides = [] if metric is None else [f"optimized_metric={metric}"]
    value = mammoth.run(compose_run(tmp_path, *overrides))
    results = json.loads((tmp_path / "results.json").read_text())
    assert value == results[kind][field]


def test_domain_il_run_refuses_class_il_before_training_and_defaults_to_domain_il(tmp_path):
    from fake_datasets import write_mnist

    write_mnist(tmp_path / "data", folder="MNIST", n_train=40, n_test=20)
    domain = ["dataset=perm-mnist", f"dataset.root={tmp_path / 'data'}", "dataset.n_tasks=2"]
    with pytest.raises(ConfigError, match=r"optimized_metric='class_il.average' is not reported for perm-mnist "
                                          r"\(domain-il\); allowed: domain_il.average, domain_il.forgetting, domain_il.bwt$"):
        mammoth.run(compose_run(tmp_path / "refused", *domain, "optimized_metric=class_il.average"))
    assert not (tmp_path / "refused" / "checkpoint.pt").exists()  # no task was trained
    assert not (tmp_path / "refused" / "results.json").exists()

    value = mammoth.run(compose_run(tmp_path / "run", *domain))
    assert value == json.loads((tmp_path / "run" / "results.json").read_text())["domain_il"]["average"]


def test_a_run_stopped_early_returns_nan(tmp_path):
    assert math.isnan(mammoth.run(compose_run(tmp_path, "stop_after_task=1", "optimized_metric=task_il.average")))
