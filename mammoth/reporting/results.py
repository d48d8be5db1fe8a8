"""Results of a run: results.json, the printed table and the accuracy plot."""

from __future__ import annotations

import io
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import omegaconf

import mammoth
from mammoth.files import write_atomic
from mammoth.reporting.metrics import (
    average_incremental_accuracy, forward_transfer, old_and_new_accuracy, summarise, weighted_average_accuracy,
)

RESULTS_NAME = "results.json"
PLOT_NAME = "accuracy.png"
#: The accuracy kinds of results.json and their titles; ``nme_class_il`` is the Class-IL accuracy of
#: the nearest mean of a memory's exemplars (:data:`mammoth.engine.evaluation.NME_KIND`), reported
#: beside the classifier's by every method with a memory.
KIND_TITLES = {"class_il": "Class-IL", "task_il": "Task-IL", "domain_il": "Domain-IL", "nme_class_il": "NME Class-IL"}


def square_matrix(rows: list[list[float]], n_tasks: int) -> list[list[float | None]]:
    """Rows of accuracies on the tasks seen so far -> an ``n_tasks`` square matrix, ``None`` where unseen."""
    return [row + [None] * (n_tasks - len(row)) for row in rows]


def build_results(accuracies: dict[str, list[list[float]]], n_tasks: int, *, measured: Measurements | None = None,
                  **sections: Any) -> dict[str, Any]:
    """The results document: one block per accuracy kind plus the given ``sections``; with a
    validation split the blocks are of the validation data (``evaluated_on``) and ``test`` holds
    the test accuracies after the last task.

    Each block is ``{"matrix": [[...]], "average": ..., "forgetting": ..., "bwt": ...,
    "average_per_task": [...], ...}`` with accuracies in percent; ``matrix[i][j]`` is the accuracy
    on task ``j`` after training task ``i`` (``null`` for tasks not seen yet). ``measured`` adds
    the metrics of :func:`kind_metrics` to each block and a ``resources`` section.
    """
    measured = measured or Measurements()
    results: dict[str, Any] = {"status": "complete" if all(len(r) == n_tasks for r in accuracies.values()) else "partial"}
    for kind, rows in accuracies.items():
        block = summarise(rows)
        block["matrix"] = square_matrix(rows, n_tasks)
        block["average_per_task"] = [sum(row) / len(row) for row in rows]
        block.update(kind_metrics(kind, rows, measured))
        if measured.future.get(kind):
            block["matrix"] = [row + future for row, future in zip(rows, measured.future[kind])]
        results[kind] = block
    if measured.test_sizes:
        results["test_sizes"] = list(measured.test_sizes)
    results["evaluated_on"] = "validation" if measured.validation else "test"
    if measured.final_test:
        results["test"] = {kind: {"accuracies": row, "average": sum(row) / len(row)} for kind, row in measured.final_test.items()}
    results["resources"] = resources_section(measured)
    results.update(sections)
    return results


@dataclass
class Measurements:
    """What a run measured beside the accuracy rows (:class:`mammoth.engine.checkpoint.TrainingState`'s
    other fields), and what decides how the metrics are computed."""

    random_init: dict[str, list[float]] = field(default_factory=dict)
    future: dict[str, list[list[float]]] = field(default_factory=dict)
    top5: list[list[float]] = field(default_factory=list)
    nme_top5: list[list[float]] = field(default_factory=list)
    test_sizes: list[int] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)
    peak_cuda_mb: list[float] = field(default_factory=list)
    #: The method trains only after the last task (``trains_only_at_end``: joint, gdumb).
    trains_only_at_end: bool = False
    #: The accuracy blocks are of a validation split (``dataset.validation``), not of the test set.
    validation: bool = False
    #: With ``validation``: each kind's accuracy on the test data of every task after the last task.
    final_test: dict[str, list[float]] = field(default_factory=dict)
    #: The tasks have different numbers of classes (``dataset.base_classes`` / ``increment``): the
    #: blocks also report the averages weighted by the tasks' test examples.
    uneven_tasks: bool = False

    @classmethod
    def of_run(cls, state: Any, dataset: Any, model: Any) -> "Measurements":
        """The measurements of a finished run: its loop ``state``, the test sizes of ``dataset``'s
        tasks, and whether ``model`` trains only at the end."""
        return cls(
            random_init=state.random_init, future=state.future, top5=state.top5, nme_top5=state.nme_top5,
            test_sizes=[len(dataset.test_source(task)) for task in range(dataset.n_tasks)],
            train_seconds=state.train_seconds, peak_rss_mb=state.peak_rss_mb, peak_cuda_mb=state.peak_cuda_mb,
            trains_only_at_end=bool(getattr(model, "trains_only_at_end", False)),
            validation=getattr(dataset.config, "validation", None) is not None, final_test=state.final_test,
            uneven_tasks=bool(getattr(dataset, "uneven_tasks", False)),
        )


#: What forgetting, backward transfer and forward transfer are computed over, for a method that
#: trains only after the last task: nothing (its earlier rows score an untrained network).
ONLY_AT_END_NOTE = ("not computed: the method trains only after the last task, so every row before the last "
                    "scores an untrained network")


def kind_metrics(kind: str, rows: list[list[float]], measured: Measurements) -> dict[str, Any]:
    """The metrics of one accuracy kind beside average, forgetting and bwt: ``average_incremental``,
    ``forward_transfer`` (null without ``eval_future``) and its ``random_init`` accuracies,
    ``old_accuracy`` / ``new_accuracy`` after the last task and ``_per_task``, Class-IL ``top5``
    (the classifier's, and the nearest mean's in the ``nme_class_il`` block) where reported, and for
    tasks of unequal size ``average_weighted`` (the accuracy on every test example of the tasks seen,
    after the last task), its ``_per_task`` and ``average_incremental_weighted`` (their mean: PyCIL's
    average accuracy); for a method that trains only at the end, ``forgetting``, ``bwt`` and
    ``forward_transfer`` are null and ``forgetting_over`` says why."""
    block: dict[str, Any] = {"average_incremental": average_incremental_accuracy(rows)}
    random_init = measured.random_init.get(kind)
    future = measured.future.get(kind)
    full = [row + after for row, after in zip(rows, future)] if future else None
    block["forward_transfer"] = forward_transfer(full, random_init) if random_init and full else None
    block["random_init"] = random_init
    if measured.test_sizes:
        old, new = old_and_new_accuracy(rows, measured.test_sizes)
        block.update(old_accuracy=old[-1], new_accuracy=new[-1], old_accuracy_per_task=old, new_accuracy_per_task=new)
        if measured.uneven_tasks:
            weighted = weighted_average_accuracy(rows, measured.test_sizes)
            block.update(average_weighted=weighted[-1], average_weighted_per_task=weighted,
                         average_incremental_weighted=sum(weighted) / len(weighted))
    top5 = {"class_il": measured.top5, "nme_class_il": measured.nme_top5}.get(kind)
    if top5:
        block.update(top5=sum(top5[-1]) / len(top5[-1]), top5_per_task=[sum(row) / len(row) for row in top5])
    if measured.trains_only_at_end and len(rows) > 1:
        block.update(forgetting=None, bwt=None, forward_transfer=None, forgetting_over=ONLY_AT_END_NOTE)
    else:
        block["forgetting_over"] = "every task but the last, from the rows after each task"
    return block


def resources_section(measured: Measurements) -> dict[str, Any]:
    """``{"train_seconds": total, "peak_rss_mb": max, "peak_cuda_mb": max or null, ..._per_task}``:
    the training time and peak memory of each task (RSS: the process's lifetime peak so far)."""
    return {
        "train_seconds": sum(measured.train_seconds),
        "train_seconds_per_task": list(measured.train_seconds),
        "peak_rss_mb": max(measured.peak_rss_mb, default=None),
        "peak_rss_mb_per_task": list(measured.peak_rss_mb),
        "peak_cuda_mb": max(measured.peak_cuda_mb, default=None),
        "peak_cuda_mb_per_task": list(measured.peak_cuda_mb) or None,
    }


def write_json_atomic(path: Path, document: dict[str, Any]) -> Path:
    """Write ``document`` to ``path`` via a temporary file, so readers never see half a file; a
    failed write (disk full) is a one-line ConfigError and leaves no temporary file."""
    return write_atomic(path, (json.dumps(document, indent=2) + "\n").encode(), "results file")


def environment_versions() -> dict[str, str]:
    """Versions of Python and the libraries that decide the numbers."""
    import torch  # lazy: torch, only to record its version (the summary and reproduce read this module)

    return {
        "mammoth": mammoth.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "hydra": hydra.__version__,
        "omegaconf": omegaconf.__version__,
    }


def format_table(accuracies: dict[str, list[list[float]]], n_tasks: int, measured: Measurements | None = None) -> str:
    """A text table: one line per task trained, the first kind's accuracy on each task, and the
    average of every kind; then the final averages, forgetting and backward transfer (and, from
    ``measured``, forward transfer; ``-`` where :func:`kind_metrics` computes none)."""
    kinds = list(accuracies)
    first = kinds[0]
    header = "after task | " + " ".join(f"{'T' + str(j + 1):>6}" for j in range(n_tasks))
    widths = {kind: max(9, len(KIND_TITLES[kind])) for kind in kinds}
    header += " | " + " ".join(f"{KIND_TITLES[kind]:>{widths[kind]}}" for kind in kinds)
    lines = [f"Accuracy (%) on each task ({KIND_TITLES[first]}) and averages", header, "-" * len(header)]
    for i, row in enumerate(accuracies[first]):
        cells = " ".join(f"{value:6.1f}" for value in row) + " " * 7 * (n_tasks - len(row))
        averages = " ".join(f"{sum(accuracies[kind][i]) / len(accuracies[kind][i]):{widths[kind]}.1f}" for kind in kinds)
        lines.append(f"{i + 1:>10} | {cells} | {averages}")
    for kind in kinds:
        summary = {**summarise(accuracies[kind]), **kind_metrics(kind, accuracies[kind], measured or Measurements())}
        line = f"{KIND_TITLES[kind]:>9}: average {summary['average']:.2f}  forgetting {_number(summary['forgetting'])}  " \
               f"bwt {_number(summary['bwt'])}"
        if summary["forward_transfer"] is not None:
            line += f"  fwt {summary['forward_transfer']:.2f}"
        if "average_weighted" in summary:
            line += f"  over examples {summary['average_weighted']:.2f}"
        lines.append(line)
    if measured is not None and measured.final_test:
        lines[0] = lines[0].replace("Accuracy (%)", "Validation accuracy (%)")
        lines.append("     Test: " + "  ".join(f"{KIND_TITLES[kind]} {sum(row) / len(row):.2f}"
                                            for kind, row in measured.final_test.items()) + " (after the last task)")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def plot_results(results: dict[str, Any], path: Path) -> Path:
    """Save a PNG to ``path`` (atomically, never through a symlink planted there): the accuracy
    matrix of the first kind as a heatmap, and the average accuracy of every kind after each
    task as curves."""
    buffer = io.BytesIO()
    results_figure(results).savefig(buffer, format="png", dpi=100)
    return write_atomic(path, buffer.getvalue(), "plot")


def metrics_line(block: dict[str, Any]) -> str:
    """``forgetting 12.3  BWT -4.5  FWT 1.2  avg incr. 67.8`` for the metrics of ``block`` that are numbers."""
    names = {"forgetting": "forgetting", "bwt": "BWT", "forward_transfer": "FWT", "average_incremental": "avg incr.",
             "top5": "top-5", "average_weighted": "over examples"}
    return "  ".join(f"{title} {block[key]:.1f}" for key, title in names.items() if isinstance(block.get(key), (int, float)))


def _stream_curve(axes: Any, online: dict[str, Any], title: str) -> None:
    """An online run's accuracy on the tasks seen so far at each evaluation point, over the samples."""
    means = [sum(row) / len(row) for row in online["eval_accuracies"]]
    axes.plot(online["eval_points"], means, marker=".", label=title)
    axes.set(title=f"anytime accuracy {online['anytime_accuracy']:.1f}", xlabel="samples of the stream",
             ylabel="accuracy (%)", ylim=(0, 102))
    axes.grid(alpha=0.3)


def results_figure(results: dict[str, Any]) -> Any:
    """The matplotlib Figure of :func:`plot_results` (not saved)."""
    import numpy as np  # lazy: numpy, with matplotlib, only where the plot is drawn
    from matplotlib.figure import Figure  # lazy: matplotlib (heavy), only where the plot is drawn; no pyplot

    kinds = [kind for kind in KIND_TITLES if kind in results]
    matrix = np.array(results[kinds[0]]["matrix"], dtype=float)
    online = results.get("online")
    figure = Figure(figsize=(16 if online else 11, 4.5))
    heat, curves, *stream = figure.subplots(1, 3 if online else 2)
    image = heat.imshow(matrix, vmin=0, vmax=100, cmap="viridis")
    heat.set(title=f"{KIND_TITLES[kinds[0]]} accuracy (%)", xlabel="evaluated on task", ylabel="after training task")
    ticks = range(matrix.shape[0])
    sizes = (results.get("dataset") or {}).get("classes_per_task")  # tasks of unequal size: each one's classes
    heat.set_xticks(ticks, [f"{t + 1}\n({sizes[t]})" if sizes and t < len(sizes) else str(t + 1) for t in ticks])
    heat.set_yticks(ticks, [str(t + 1) for t in ticks])
    for (i, j), value in np.ndenumerate(matrix):
        if not np.isnan(value) and matrix.shape[0] <= 10:
            heat.text(j, i, f"{value:.0f}", ha="center", va="center", color="white" if value < 60 else "black", fontsize=8)
    figure.colorbar(image, ax=heat)
    for kind in kinds:
        averages = results[kind]["average_per_task"]
        curves.plot(range(1, len(averages) + 1), averages, marker="o", label=KIND_TITLES[kind])
    first = results[kinds[0]]
    for key, style, words in (("old_accuracy_per_task", "--", "old classes"), ("new_accuracy_per_task", ":", "new classes"),
                              ("average_weighted_per_task", "-.", "over examples")):
        values = first.get(key)
        if values:
            points = [(task + 1, value) for task, value in enumerate(values) if value is not None]
            curves.plot(*zip(*points), linestyle=style, color="gray", label=f"{KIND_TITLES[kinds[0]]} {words}")
    heat.set_xlabel(f"evaluated on task{' (its classes)' if sizes else ''}\n{metrics_line(first)}")
    curves.set(title="average accuracy on tasks seen so far", xlabel="after training task", ylabel="accuracy (%)", ylim=(0, 102))
    curves.set_xticks(range(1, matrix.shape[0] + 1))
    curves.grid(alpha=0.3)
    curves.legend(loc="lower left")
    if online:
        _stream_curve(stream[0], online, KIND_TITLES[kinds[0]])
    if "title" in results:
        figure.suptitle(results["title"])
    figure.tight_layout()
    return figure
