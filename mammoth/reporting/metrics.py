"""Continual-learning metrics computed from an accuracy matrix.

``A[i][j]`` is the accuracy (percent) on task ``j`` after training task ``i``; there is one row
per task trained so far (``T`` rows). Row ``i`` must hold at least ``i + 1`` entries (tasks
``0..i``); entries for tasks not yet trained (``j > i``) may be present and are ignored.
The matrix can be a list of lists, a tensor or a NumPy array.
"""

from __future__ import annotations

from statistics import fmean
from typing import Any, Sequence

AccuracyMatrix = Any  # Sequence[Sequence[float]], torch.Tensor or numpy.ndarray


def accuracy_rows(matrix: AccuracyMatrix) -> list[list[float]]:
    """The matrix as a list of rows of floats, checked: at least one row, row ``i`` with >= ``i + 1`` entries."""
    rows = matrix.tolist() if hasattr(matrix, "tolist") else matrix
    if not isinstance(rows, Sequence) or len(rows) == 0:
        raise ValueError(f"accuracy matrix {rows!r} has no rows; allowed: one row per task trained so far")
    rows = [[float(value) for value in row] for row in rows]
    for i, row in enumerate(rows):
        if len(row) < i + 1:
            raise ValueError(
                f"accuracy matrix row {i} has {len(row)} entries; allowed: at least {i + 1} (tasks 0..{i})"
            )
    return rows


def average_accuracy(matrix: AccuracyMatrix) -> float:
    """Mean accuracy over the ``T`` tasks trained so far, after the last one (mean of the last row)."""
    rows = accuracy_rows(matrix)
    return fmean(rows[-1][: len(rows)])


def forgetting(matrix: AccuracyMatrix) -> float:
    """Average forgetting as the original Mammoth computes it (``utils/metrics.py``); 0.0 for a single task.

    For every task ``j < T-1``: the best accuracy it had after training tasks ``j..T-1`` (the
    last row included), minus its final accuracy ``A[T-1][j]``; averaged over those tasks. A task
    never counts below 0. Chaudhry et al. (2018) take the best over ``j..T-2`` only, so a task
    that ends above its earlier best counts negatively there (:func:`forgetting_chaudhry`).
    """
    rows = accuracy_rows(matrix)
    last = len(rows) - 1
    if last == 0:
        return 0.0
    return fmean(max(rows[i][j] for i in range(j, last + 1)) - rows[last][j] for j in range(last))


def forgetting_chaudhry(matrix: AccuracyMatrix) -> float:
    """Average forgetting as Chaudhry et al. (2018) define it; 0.0 for a single task: for every
    task ``j < T-1``, the best accuracy after training tasks ``j..T-2`` minus ``A[T-1][j]``."""
    rows = accuracy_rows(matrix)
    last = len(rows) - 1
    if last == 0:
        return 0.0
    return fmean(max(rows[i][j] for i in range(j, last)) - rows[last][j] for j in range(last))


def backward_transfer(matrix: AccuracyMatrix) -> float:
    """Backward transfer (Lopez-Paz & Ranzato, 2017): mean of ``A[T-1][j] - A[j][j]`` over ``j < T-1``.

    0.0 for a single task.
    """
    rows = accuracy_rows(matrix)
    last = len(rows) - 1
    if last == 0:
        return 0.0
    return fmean(rows[last][j] - rows[j][j] for j in range(last))


def summarise(matrix: AccuracyMatrix) -> dict[str, Any]:
    """``{"matrix": rows as floats, "average": ..., "forgetting": ..., "bwt": ...}``."""
    return {
        "matrix": accuracy_rows(matrix),
        "average": average_accuracy(matrix),
        "forgetting": forgetting(matrix),
        "bwt": backward_transfer(matrix),
    }


def average_incremental_accuracy(matrix: AccuracyMatrix) -> float:
    """Average incremental accuracy (Rebuffi et al., 2017): the mean, over the ``T`` rows, of the
    mean accuracy on the tasks trained so far (row ``i``: tasks ``0..i``)."""
    rows = accuracy_rows(matrix)
    return fmean(fmean(row[: i + 1]) for i, row in enumerate(rows))


def forward_transfer(matrix: AccuracyMatrix, random_init: Sequence[float]) -> float:
    """Forward transfer (Lopez-Paz & Ranzato, 2017, as the original Mammoth's ``forward_transfer``):
    the mean over ``i = 1..T-1`` of ``A[i-1][i] - random_init[i]``, the accuracy on task ``i``
    just before training it minus that of the randomly initialised network; 0.0 for a single task.

    Row ``i - 1`` must hold the entry of task ``i`` (a run with ``eval_future=true``).
    """
    rows = accuracy_rows(matrix)
    if len(random_init) < len(rows):
        raise ValueError(f"random_init has {len(random_init)} accuracies; allowed: one per task ({len(rows)})")
    for i in range(1, len(rows)):
        if len(rows[i - 1]) <= i:
            raise ValueError(f"accuracy matrix row {i - 1} has no entry for task {i}; allowed: rows evaluated with eval_future=true")
    if len(rows) == 1:
        return 0.0
    return fmean(rows[i - 1][i] - float(random_init[i]) for i in range(1, len(rows)))


def old_and_new_accuracy(matrix: AccuracyMatrix, test_sizes: Sequence[int]) -> tuple[list[float | None], list[float]]:
    """After each task ``i``: the accuracy on the test examples of the earlier tasks ``0..i-1``
    together (each task weighted by its number of test examples; None after the first task) and
    on those of task ``i`` itself (its new classes, in class-IL)."""
    rows = accuracy_rows(matrix)
    if len(test_sizes) < len(rows):
        raise ValueError(f"test_sizes has {len(test_sizes)} entries; allowed: one per task ({len(rows)})")
    old: list[float | None] = []
    for i, row in enumerate(rows):
        examples = sum(test_sizes[:i])
        old.append(sum(row[j] * test_sizes[j] for j in range(i)) / examples if examples else None)
    return old, [row[i] for i, row in enumerate(rows)]


def weighted_average_accuracy(matrix: AccuracyMatrix, test_sizes: Sequence[int]) -> list[float]:
    """After each task ``i``: the accuracy on the test examples of tasks ``0..i`` together, each task
    weighted by its number of test examples: the fraction of all those examples classified right
    (PyCIL's and LAMDA-PILOT's top-1 accuracy; with tasks of unequal size it differs from the mean
    over tasks, :func:`average_accuracy`, which weighs a task of 50 classes as one of 10)."""
    rows = accuracy_rows(matrix)
    if len(test_sizes) < len(rows):
        raise ValueError(f"test_sizes has {len(test_sizes)} entries; allowed: one per task ({len(rows)})")
    averages = []
    for i, row in enumerate(rows):
        examples = sum(test_sizes[: i + 1])
        averages.append(sum(row[j] * test_sizes[j] for j in range(i + 1)) / examples if examples else 0.0)
    return averages


def stream_metrics(points: list[int], rows: list[list[float]], samples: int, seconds: float) -> dict[str, Any]:
    """The ``online`` section of results.json (docs/online.md) from a stream's evaluation points:
    ``points[i]`` samples trained on when ``rows[i]`` (the accuracy on each task seen then) was measured.

    - ``accuracy``: the mean of the last row (accuracy after the stream);
    - ``anytime_accuracy``: the area under the curve of the rows' means, over the samples, divided by
      the samples: ``sum_i mean(rows[i]) * (points[i] - points[i-1]) / points[-1]`` (``points[-1]`` = 0);
    - ``forgetting``: over the tasks of the last row but its last one, the mean of the best accuracy
      on the task at an earlier point minus its last (0 where it never drops);
    - ``throughput``: ``samples`` per second of training (``seconds``, evaluations left out).
    """
    means = [sum(row) / len(row) for row in rows]
    widths = [point - before for point, before in zip(points, [0, *points[:-1]])]
    last = rows[-1]
    drops = [max(row[task] for row in rows[:-1] if len(row) > task) - last[task]
             for task in range(len(last) - 1) if any(len(row) > task for row in rows[:-1])]
    return {
        "accuracy": means[-1],
        "anytime_accuracy": sum(mean * width for mean, width in zip(means, widths)) / points[-1],
        "forgetting": sum(max(drop, 0.0) for drop in drops) / len(drops) if drops else 0.0,
        "throughput": samples / seconds if seconds > 0 else None,
        "samples": samples,
        "eval_points": points,
        "eval_accuracies": rows,
    }
