"""Results of a run: results.json, the printed table and the accuracy plot."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from mammoth.reporting.metrics import summarise

RESULTS_NAME = "results.json"
PLOT_NAME = "accuracy.png"
KIND_TITLES = {"class_il": "Class-IL", "task_il": "Task-IL", "domain_il": "Domain-IL"}


def square_matrix(rows: list[list[float]], n_tasks: int) -> list[list[float | None]]:
    """Rows of accuracies on the tasks seen so far -> an ``n_tasks`` square matrix, ``None`` where unseen."""
    return [row + [None] * (n_tasks - len(row)) for row in rows]


def build_results(accuracies: dict[str, list[list[float]]], n_tasks: int, **sections: Any) -> dict[str, Any]:
    """The results document: one block per accuracy kind plus the given ``sections``.

    Each block is ``{"matrix": [[...]], "average": ..., "forgetting": ..., "bwt": ...,
    "average_per_task": [...]}`` with accuracies in percent; ``matrix[i][j]`` is the accuracy
    on task ``j`` after training task ``i`` (``null`` for tasks not seen yet).
    """
    results: dict[str, Any] = {"status": "complete" if all(len(r) == n_tasks for r in accuracies.values()) else "partial"}
    for kind, rows in accuracies.items():
        block = summarise(rows)
        block["matrix"] = square_matrix(rows, n_tasks)
        block["average_per_task"] = [sum(row) / len(row) for row in rows]
        results[kind] = block
    results.update(sections)
    return results


def write_json_atomic(path: Path, document: dict[str, Any]) -> Path:
    """Write ``document`` to ``path`` via a temporary file, so readers never see half a file; a
    failed write (disk full) is a one-line ConfigError and leaves no temporary file."""
    from mammoth.engine.rundir import write_atomic

    return write_atomic(path, (json.dumps(document, indent=2) + "\n").encode(), "results file")


def environment_versions() -> dict[str, str]:
    """Versions of Python and the libraries that decide the numbers."""
    import hydra
    import omegaconf
    import torch

    import mammoth

    return {
        "mammoth": mammoth.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "hydra": hydra.__version__,
        "omegaconf": omegaconf.__version__,
    }


def format_table(accuracies: dict[str, list[list[float]]], n_tasks: int) -> str:
    """A text table: one line per task trained, the first kind's accuracy on each task, and the
    average of every kind; then the final averages, forgetting and backward transfer."""
    kinds = list(accuracies)
    first = kinds[0]
    header = "after task | " + " ".join(f"{'T' + str(j + 1):>6}" for j in range(n_tasks))
    header += " | " + " ".join(f"{KIND_TITLES[kind]:>9}" for kind in kinds)
    lines = [f"Accuracy (%) on each task ({KIND_TITLES[first]}) and averages", header, "-" * len(header)]
    for i, row in enumerate(accuracies[first]):
        cells = " ".join(f"{value:6.1f}" for value in row) + " " * 7 * (n_tasks - len(row))
        averages = " ".join(f"{sum(accuracies[kind][i]) / len(accuracies[kind][i]):9.1f}" for kind in kinds)
        lines.append(f"{i + 1:>10} | {cells} | {averages}")
    for kind in kinds:
        summary = summarise(accuracies[kind])
        lines.append(
            f"{KIND_TITLES[kind]:>9}: average {summary['average']:.2f}  "
            f"forgetting {summary['forgetting']:.2f}  bwt {summary['bwt']:.2f}"
        )
    return "\n".join(lines)


def plot_results(results: dict[str, Any], path: Path) -> Path:
    """Save a PNG to ``path`` (atomically, never through a symlink planted there): the accuracy
    matrix of the first kind as a heatmap, and the average accuracy of every kind after each
    task as curves."""
    import io

    from mammoth.engine.rundir import write_atomic

    buffer = io.BytesIO()
    results_figure(results).savefig(buffer, format="png", dpi=100)
    return write_atomic(path, buffer.getvalue(), "plot")


def results_figure(results: dict[str, Any]) -> Any:
    """The matplotlib Figure of :func:`plot_results` (not saved)."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    kinds = [kind for kind in KIND_TITLES if kind in results]
    matrix = np.array(results[kinds[0]]["matrix"], dtype=float)
    figure = Figure(figsize=(11, 4.5))
    heat, curves = figure.subplots(1, 2)
    image = heat.imshow(matrix, vmin=0, vmax=100, cmap="viridis")
    heat.set(title=f"{KIND_TITLES[kinds[0]]} accuracy (%)", xlabel="evaluated on task", ylabel="after training task")
    ticks = range(matrix.shape[0])
    heat.set_xticks(ticks, [str(t + 1) for t in ticks])
    heat.set_yticks(ticks, [str(t + 1) for t in ticks])
    for (i, j), value in np.ndenumerate(matrix):
        if not np.isnan(value) and matrix.shape[0] <= 10:
            heat.text(j, i, f"{value:.0f}", ha="center", va="center", color="white" if value < 60 else "black", fontsize=8)
    figure.colorbar(image, ax=heat)
    for kind in kinds:
        averages = results[kind]["average_per_task"]
        curves.plot(range(1, len(averages) + 1), averages, marker="o", label=KIND_TITLES[kind])
    curves.set(title="average accuracy on tasks seen so far", xlabel="after training task", ylabel="accuracy (%)", ylim=(0, 102))
    curves.set_xticks(range(1, matrix.shape[0] + 1))
    curves.grid(alpha=0.3)
    curves.legend(loc="lower left")
    if "title" in results:
        figure.suptitle(results["title"])
    figure.tight_layout()
    return figure
