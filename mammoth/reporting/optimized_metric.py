"""``optimized_metric``: the value of results.json that a run returns to a sweeper (e.g. Optuna)."""

from __future__ import annotations

from typing import Any

from mammoth.errors import ConfigError

#: What ``optimized_metric`` can name in each results block (``KIND.FIELD``), and the direction
#: a sweeper should optimise it in: accuracy and backward transfer up, forgetting down.
METRIC_DIRECTIONS = {"average": "maximize", "forgetting": "minimize", "bwt": "maximize"}


def optimized_metric_names(setting: str) -> list[str]:
    """The ``optimized_metric`` values of a setting: ``class_il.average`` ... ``task_il.bwt`` for
    class-il, ``domain_il.average``, ``domain_il.forgetting``, ``domain_il.bwt`` for domain-il."""
    from mammoth.engine.evaluation import SETTING_METRICS

    return [f"{kind}.{field}" for kind in SETTING_METRICS[setting] for field in METRIC_DIRECTIONS]


def check_optimized_metric(name: str | None, dataset: Any) -> str:
    """The metric the run returns: ``name``, or for None the setting's first average
    (``class_il.average``, ``domain_il.average``). A name the dataset's setting does not report
    raises a ConfigError listing the allowed ones."""
    allowed = optimized_metric_names(dataset.setting)
    if name is None:
        return allowed[0]
    if name not in allowed:
        raise ConfigError(
            f"optimized_metric={name!r} is not reported for {dataset.name} ({dataset.setting}); "
            f"allowed: {', '.join(allowed)}"
        )
    return name


def optimized_value(results: dict[str, Any], name: str) -> float:
    """The value of ``KIND.FIELD`` in a results document (``class_il.average`` -> results["class_il"]["average"])."""
    kind, field = name.split(".")
    return float(results[kind][field])
