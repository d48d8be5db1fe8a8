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
    """Average forgetting (Chaudhry et al., 2018); 0.0 for a single task.

    For every task ``j < T-1``: the best accuracy it had after training tasks ``j..T-2``, minus
    its final accuracy ``A[T-1][j]``; averaged over those tasks.
    """
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
