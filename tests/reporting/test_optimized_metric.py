"""optimized_metric: what mammoth.run returns (what a sweeper optimises), and its refusal."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

import mammoth
from mammoth.errors import ConfigError
from mammoth.reporting.optimized_metric import (
    METRIC_DIRECTIONS, check_optimized_metric, metric_direction, optimized_metric_names, optimized_value,
)
import composing

CLASS_IL = SimpleNamespace(name="seq-digits", setting="class-il")
DOMAIN_IL = SimpleNamespace(name="perm-mnist", setting="domain-il")
TEN_PER_TASK = SimpleNamespace(name="seq-cifar100", setting="class-il", n_tasks=10,
                               task_classes=lambda task: range(10 * task, 10 * task + 10))


class OnlyAtEnd:
    trains_only_at_end = True


ONLY_AT_END = OnlyAtEnd()


def compose_run(output_dir: Path, *overrides: str):
    return composing.compose_run(output_dir, "threads=1", "dataset.n_epochs=1", "~logger", *overrides)


FIELDS = ["average", "forgetting", "bwt", "forward_transfer", "average_incremental", "old_accuracy", "new_accuracy"]
RESOURCES = ["resources.train_seconds", "resources.peak_rss_mb"]


def test_allowed_names_per_setting():
    assert optimized_metric_names("class-il") == [
        *(f"class_il.{field}" for field in FIELDS), *(f"task_il.{field}" for field in FIELDS), *RESOURCES,
    ]
    assert optimized_metric_names("domain-il") == [*(f"domain_il.{field}" for field in FIELDS), *RESOURCES]
    with_top5 = optimized_metric_names("class-il", top5=True, cuda=True)
    assert with_top5.index("class_il.top5") == len(FIELDS) and "task_il.top5" not in with_top5
    assert with_top5[-1] == "resources.peak_cuda_mb"
    weighted = optimized_metric_names("class-il", weighted=True)
    assert weighted[len(FIELDS):len(FIELDS) + 2] == ["class_il.average_weighted", "class_il.average_incremental_weighted"]
    assert "task_il.average_weighted" in weighted and len(weighted) == len(optimized_metric_names("class-il")) + 4


def test_the_averages_over_examples_are_for_tasks_of_unequal_size():
    uneven = SimpleNamespace(name="seq-cifar100", setting="class-il", n_tasks=2, uneven_tasks=True,
                             task_classes=lambda task: [range(0, 50), range(50, 60)][task])
    assert check_optimized_metric("class_il.average_weighted", uneven) == "class_il.average_weighted"
    with pytest.raises(ConfigError, match=r"^optimized_metric='class_il.average_weighted' is not reported for seq-cifar100 "
                                          r"\(class-il\): it is reported for tasks of unequal size \(dataset.base_classes\); allowed: "):
        check_optimized_metric("class_il.average_weighted", TEN_PER_TASK)


def test_directions_are_documented():
    assert METRIC_DIRECTIONS == {
        "average": "maximize", "forgetting": "minimize", "bwt": "maximize", "forward_transfer": "maximize",
        "average_incremental": "maximize", "old_accuracy": "maximize", "new_accuracy": "maximize", "top5": "maximize",
        "average_weighted": "maximize", "average_incremental_weighted": "maximize",
    }
    assert metric_direction("resources.peak_rss_mb") == "minimize"
    assert metric_direction("task_il.old_accuracy") == "maximize"


def test_default_is_the_settings_first_average():
    assert check_optimized_metric(None, CLASS_IL) == "class_il.average"
    assert check_optimized_metric(None, DOMAIN_IL) == "domain_il.average"
    assert check_optimized_metric("task_il.bwt", CLASS_IL) == "task_il.bwt"
    assert check_optimized_metric("class_il.forward_transfer", CLASS_IL, eval_future=True) == "class_il.forward_transfer"
    assert check_optimized_metric("class_il.top5", TEN_PER_TASK) == "class_il.top5"
    assert check_optimized_metric("resources.peak_cuda_mb", CLASS_IL, device="cuda") == "resources.peak_cuda_mb"


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("class_il.forward_transfer", {}, "optimized_metric='class_il.forward_transfer' needs eval_future=true "
                                          "(the accuracies of the tasks not trained yet); allowed: eval_future=true, or another metric"),
        ("task_il.bwt", {"model": ONLY_AT_END, "eval_future": True},
         "optimized_metric='task_il.bwt' is not computed for OnlyAtEnd, which trains only after the last task; "
         "allowed: any metric but forgetting, bwt, forward_transfer"),
        ("class_il.top5", {}, "optimized_metric='class_il.top5' is not reported for seq-digits (class-il): "
                              "top5 needs more than 5 classes per task; allowed: class_il.average"),
        ("resources.peak_cuda_mb", {"device": "cpu"}, "optimized_metric='resources.peak_cuda_mb' is not reported for "
                                                      "seq-digits (class-il): the run is not on CUDA; allowed: class_il.average"),
    ],
)
def test_a_metric_the_run_will_not_compute_is_refused_in_one_line(name, kwargs, message):
    with pytest.raises(ConfigError) as error:
        check_optimized_metric(name, CLASS_IL, **kwargs)
    assert "\n" not in str(error.value)
    assert str(error.value).startswith(message)
    if kwargs.get("model") is ONLY_AT_END:  # the metrics it does compute stay allowed
        assert check_optimized_metric("class_il.average_incremental", CLASS_IL, model=ONLY_AT_END) == "class_il.average_incremental"


def test_a_null_value_is_returned_as_nan():
    assert math.isnan(optimized_value({"class_il": {"forward_transfer": None}}, "class_il.forward_transfer"))
    assert optimized_value({"resources": {"peak_rss_mb": 812.5}}, "resources.peak_rss_mb") == 812.5


@pytest.mark.parametrize(
    ("name", "dataset", "allowed"),
    [
        ("class_il.average", DOMAIN_IL, "domain_il.average, domain_il.forgetting, domain_il.bwt, domain_il.forward_transfer"),
        ("domain_il.bwt", CLASS_IL, "class_il.average, class_il.forgetting, class_il.bwt, class_il.forward_transfer, "
                                    "class_il.average_incremental, class_il.old_accuracy, class_il.new_accuracy, "
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
                                          r"\(domain-il\); allowed: domain_il.average, domain_il.forgetting, domain_il.bwt, domain_il.forward_transfer, "
                                          r"domain_il.average_incremental, domain_il.old_accuracy, domain_il.new_accuracy, "
                                          r"resources.train_seconds, resources.peak_rss_mb$"):
        mammoth.run(compose_run(tmp_path / "refused", *domain, "optimized_metric=class_il.average"))
    assert not (tmp_path / "refused" / "checkpoint.pt").exists()  # no task was trained
    assert not (tmp_path / "refused" / "results.json").exists()

    value = mammoth.run(compose_run(tmp_path / "run", *domain))
    assert value == json.loads((tmp_path / "run" / "results.json").read_text())["domain_il"]["average"]


def test_a_run_stopped_early_returns_nan(tmp_path):
    assert math.isnan(mammoth.run(compose_run(tmp_path, "stop_after_task=1", "optimized_metric=task_il.average")))


class WithMemory:
    has_memory = True


def test_the_nearest_mean_accuracy_can_be_optimized_by_a_method_with_a_memory():
    names = optimized_metric_names("class-il", top5=True, nme=True)
    assert [name for name in names if name.startswith("nme_class_il.")] == [
        *(f"nme_class_il.{field}" for field in FIELDS), "nme_class_il.top5"]
    assert check_optimized_metric("nme_class_il.average", CLASS_IL, model=WithMemory()) == "nme_class_il.average"
    assert check_optimized_metric("nme_class_il.top5", TEN_PER_TASK, model=WithMemory()) == "nme_class_il.top5"
    assert metric_direction("nme_class_il.forgetting") == "minimize"
    assert optimized_value({"nme_class_il": {"average": 61.5}}, "nme_class_il.average") == 61.5
    with pytest.raises(ConfigError) as refused:
        check_optimized_metric("nme_class_il.average", CLASS_IL, model=OnlyAtEnd())
    assert str(refused.value).startswith(
        "optimized_metric='nme_class_il.average' is not reported for seq-digits (class-il): the nearest-mean "
        "accuracy needs a class-il method with a memory, not OnlyAtEnd; allowed: class_il.average, ")
    with pytest.raises(ConfigError, match=r"\(domain-il\): the nearest-mean accuracy is class-il only; allowed: domain_il"):
        check_optimized_metric("nme_class_il.average", DOMAIN_IL, model=WithMemory())
