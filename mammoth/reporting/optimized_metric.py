"""``optimized_metric``: the value of results.json that a run returns to a sweeper (e.g. Optuna)."""

from __future__ import annotations

import math
from typing import Any

from mammoth.errors import ConfigError

#: What ``optimized_metric`` can name in each accuracy block (``KIND.FIELD``), and the direction a
#: sweeper should optimise it in: accuracies and transfers up, forgetting down. ``top5`` is
#: Class-IL only, where every task has more than 5 classes; the averages over examples only with
#: tasks of unequal size (:data:`WEIGHTED`).
METRIC_DIRECTIONS = {
    "average": "maximize", "forgetting": "minimize", "bwt": "maximize", "forward_transfer": "maximize",
    "average_incremental": "maximize", "old_accuracy": "maximize", "new_accuracy": "maximize", "top5": "maximize",
    "average_weighted": "maximize", "average_incremental_weighted": "maximize",
}
#: The fields reported only when the tasks have different numbers of classes (``dataset.base_classes``).
WEIGHTED = ("average_weighted", "average_incremental_weighted")
#: What ``optimized_metric`` can name in the ``resources`` section (``peak_cuda_mb`` on CUDA only).
RESOURCE_DIRECTIONS = {"train_seconds": "minimize", "peak_rss_mb": "minimize", "peak_cuda_mb": "minimize"}
#: What ``optimized_metric`` can name in the ``online`` section (``dataset.stream=online`` only).
ONLINE_DIRECTIONS = {"accuracy": "maximize", "anytime_accuracy": "maximize", "forgetting": "minimize",
                     "throughput": "maximize"}
#: The fields a method that trains only after the last task does not report (:data:`mammoth.reporting.results.ONLY_AT_END_NOTE`).
NOT_FOR_ONLY_AT_END = ("forgetting", "bwt", "forward_transfer")


def optimized_metric_names(setting: str, top5: bool = False, cuda: bool = False, weighted: bool = False,
                           nme: bool = False) -> list[str]:
    """The ``optimized_metric`` values of a setting: ``class_il.average`` ... ``task_il.new_accuracy``
    for class-il (``class_il.top5`` with ``top5``; ``KIND.average_weighted`` and
    ``KIND.average_incremental_weighted`` with ``weighted``: tasks of unequal size), ``domain_il.*``
    for domain-il; with ``nme`` (a class-il method with a memory) the nearest-mean accuracy's
    ``nme_class_il.*``; then ``resources.train_seconds``, ``resources.peak_rss_mb`` (and
    ``resources.peak_cuda_mb`` with ``cuda``)."""
    from mammoth.engine.evaluation import NME_KIND, SETTING_METRICS  # lazy: imports torch, kept off reproduce --list

    kinds = (*SETTING_METRICS[setting], *((NME_KIND,) if nme and setting == "class-il" else ()))
    names = [f"{kind}.{field}" for kind in kinds for field in METRIC_DIRECTIONS
             if (field != "top5" or (top5 and kind in ("class_il", NME_KIND))) and (field not in WEIGHTED or weighted)]
    return names + [f"resources.{field}" for field in RESOURCE_DIRECTIONS if field != "peak_cuda_mb" or cuda]


def metric_direction(name: str) -> str:
    """``maximize`` or ``minimize``: how a sweeper should optimise ``KIND.FIELD``."""
    kind, field = name.split(".", 1)
    if kind == "online":
        return ONLINE_DIRECTIONS[field]
    return RESOURCE_DIRECTIONS[field] if kind == "resources" else METRIC_DIRECTIONS[field]


def check_optimized_metric(name: str | None, dataset: Any, eval_future: bool = False, model: Any = None,
                           device: Any = None) -> str:
    """The metric the run returns: ``name``, or for None the setting's first average
    (``class_il.average``, ``domain_il.average``). A name the run will not report raises a one-line
    ConfigError: one the dataset's setting lacks (listing the allowed ones), ``nme_class_il.*`` of a
    ``model`` without a memory, ``forward_transfer``
    without ``eval_future``, forgetting or a transfer of a ``model`` that trains only at the end."""
    top5 = _reports_top5(dataset)
    cuda = getattr(device, "type", device) == "cuda"
    allowed = optimized_metric_names(dataset.setting, top5=top5, cuda=cuda, weighted=bool(getattr(dataset, "uneven_tasks", False)),
                                     nme=bool(getattr(model, "has_memory", False)))
    if getattr(dataset, "online", False):
        allowed += [f"online.{field}" for field in ONLINE_DIRECTIONS]
    if name is None:
        return allowed[0]
    field = name.split(".", 1)[-1]
    if name not in allowed:
        why = {"top5": ": top5 needs more than 5 classes per task", "peak_cuda_mb": ": the run is not on CUDA",
               **dict.fromkeys(WEIGHTED, ": it is reported for tasks of unequal size (dataset.base_classes)")}.get(field, "")
        if name.startswith("nme_class_il.") and not why:
            why = (f": the nearest-mean accuracy needs a class-il method with a memory, not {type(model).__name__}"
                   if dataset.setting == "class-il" else ": the nearest-mean accuracy is class-il only")
        raise ConfigError(
            f"optimized_metric={name!r} is not reported for {dataset.name} ({dataset.setting}){why}; "
            f"allowed: {', '.join(allowed)}"
        )
    if field == "forward_transfer" and not eval_future:
        raise ConfigError(
            f"optimized_metric={name!r} needs eval_future=true (the accuracies of the tasks not trained yet); "
            "allowed: eval_future=true, or another metric"
        )
    if field in NOT_FOR_ONLY_AT_END and getattr(model, "trains_only_at_end", False):
        raise ConfigError(
            f"optimized_metric={name!r} is not computed for {type(model).__name__}, which trains only after the last "
            f"task; allowed: any metric but {', '.join(NOT_FOR_ONLY_AT_END)}"
        )
    return name


def _reports_top5(dataset: Any) -> bool:
    """Whether ``dataset`` (a class-IL benchmark with ``task_classes``) has more than 5 classes in every task."""
    if dataset.setting != "class-il" or not hasattr(dataset, "task_classes"):
        return False
    return all(len(dataset.task_classes(task)) > 5 for task in range(dataset.n_tasks))


def optimized_value(results: dict[str, Any], name: str) -> float:
    """The value of ``KIND.FIELD`` in a results document (``class_il.average`` -> results["class_il"]["average"]);
    NaN where the document holds null."""
    kind, field = name.split(".", 1)
    value = results[kind][field]
    return math.nan if value is None else float(value)
