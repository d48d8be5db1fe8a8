"""Accuracy-matrix metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammoth.reporting.metrics import (
    accuracy_rows, average_accuracy, average_incremental_accuracy, backward_transfer, forgetting, forgetting_chaudhry, forward_transfer,
    old_and_new_accuracy, summarise, weighted_average_accuracy,
)

# A[i][j]: accuracy on task j after training task i. Entries above the diagonal (tasks not yet
# trained) are present but ignored.
THREE_TASKS = [
    [90.0, 10.0, 5.0],
    [95.0, 80.0, 12.0],
    [70.0, 50.0, 75.0],
]


def test_single_task() -> None:
    assert summarise([[80.0]]) == {"matrix": [[80.0]], "average": 80.0, "forgetting": 0.0, "bwt": 0.0}


def test_two_tasks() -> None:
    matrix = [[90.0, 0.0], [70.0, 85.0]]
    assert average_accuracy(matrix) == pytest.approx(77.5)
    assert forgetting(matrix) == pytest.approx(20.0)
    assert backward_transfer(matrix) == pytest.approx(-20.0)


def test_three_tasks() -> None:
    # average: (70 + 50 + 75) / 3 = 65
    # forgetting: task 0: max(90, 95) - 70 = 25; task 1: 80 - 50 = 30; mean 27.5
    # bwt: task 0: 70 - 90 = -20; task 1: 50 - 80 = -30; mean -25
    assert average_accuracy(THREE_TASKS) == pytest.approx(65.0)
    assert forgetting(THREE_TASKS) == pytest.approx(27.5)
    assert backward_transfer(THREE_TASKS) == pytest.approx(-25.0)


def test_positive_backward_transfer_counts_as_no_forgetting_as_in_the_original() -> None:
    matrix = [[50.0, 0.0], [60.0, 70.0]]
    assert backward_transfer(matrix) == pytest.approx(10.0)
    assert forgetting(matrix) == pytest.approx(0.0)  # the best, last row included, is the final accuracy
    assert forgetting_chaudhry(matrix) == pytest.approx(-10.0)  # Chaudhry et al.: the best before the last task


def _original_forgetting(results: list[list[float]]) -> float:
    """aimagelab/mammoth utils/metrics.py forgetting (commit e75a491c), copied as it is."""
    n_tasks = len(results)
    li = []
    for i in range(n_tasks - 1):
        results[i] += [0.0] * (n_tasks - len(results[i]))
    np_res = np.array(results)
    maxx = np.max(np_res, axis=0)
    for i in range(n_tasks - 1):
        li.append(maxx[i] - results[-1][i])
    return np.mean(li)


@pytest.mark.parametrize("seed", range(5))
def test_forgetting_is_the_originals_on_random_matrices(seed: int) -> None:
    generator = np.random.default_rng(seed)
    n_tasks = 2 + seed
    rows = [list(generator.uniform(0, 100, size=i + 1)) for i in range(n_tasks)]
    assert forgetting(rows) == pytest.approx(float(_original_forgetting([list(row) for row in rows])))
    assert forgetting(rows) >= max(forgetting_chaudhry(rows), 0.0) - 1e-9


def test_four_tasks_with_forgetting_measured_from_the_best_past_accuracy() -> None:
    matrix = [
        [60.0],
        [80.0, 90.0],
        [40.0, 95.0, 70.0],
        [50.0, 85.0, 70.0, 99.0],
    ]
    # forgetting: task 0: max(60, 80, 40) - 50 = 30; task 1: max(90, 95) - 85 = 10; task 2: 70 - 70 = 0
    # bwt: (50 - 60) + (85 - 90) + (70 - 70) = -15, / 3 = -5
    assert average_accuracy(matrix) == pytest.approx((50 + 85 + 70 + 99) / 4)
    assert forgetting(matrix) == pytest.approx(40.0 / 3)
    assert backward_transfer(matrix) == pytest.approx(-5.0)


def test_lower_triangular_rows_give_the_same_results_as_the_full_matrix() -> None:
    ragged = [row[: i + 1] for i, row in enumerate(THREE_TASKS)]
    assert summarise(ragged)["average"] == summarise(THREE_TASKS)["average"]
    assert summarise(ragged)["forgetting"] == summarise(THREE_TASKS)["forgetting"]
    assert summarise(ragged)["bwt"] == summarise(THREE_TASKS)["bwt"]


def test_rows_so_far_ignore_the_columns_of_tasks_not_trained_yet() -> None:
    after_two_of_three = [[90.0, 10.0, 5.0], [70.0, 80.0, 12.0]]
    assert average_accuracy(after_two_of_three) == pytest.approx(75.0)


@pytest.mark.parametrize("convert", [torch.tensor, np.array], ids=["tensor", "numpy"])
def test_accepts_tensors_and_arrays(convert) -> None:
    result = summarise(convert(THREE_TASKS))
    assert result == {"matrix": THREE_TASKS, "average": 65.0, "forgetting": 27.5, "bwt": -25.0}
    assert all(isinstance(value, float) for value in result["matrix"][0])


def test_summarise_keys_and_values() -> None:
    result = summarise(THREE_TASKS)
    assert set(result) == {"matrix", "average", "forgetting", "bwt"}
    assert result["matrix"] == THREE_TASKS
    assert result["average"] == pytest.approx(65.0)
    assert result["forgetting"] == pytest.approx(27.5)
    assert result["bwt"] == pytest.approx(-25.0)


def test_invalid_matrices() -> None:
    with pytest.raises(ValueError, match="has no rows; allowed: one row per task trained so far"):
        summarise([])
    with pytest.raises(ValueError, match=r"row 1 has 1 entries; allowed: at least 2 \(tasks 0..1\)"):
        forgetting([[1.0], [2.0]])
    assert accuracy_rows([[1, 2]]) == [[1.0, 2.0]]


def test_average_incremental_accuracy_is_the_mean_of_each_rows_seen_tasks() -> None:
    # rows seen: [90] -> 90; [95, 80] -> 87.5; [70, 50, 75] -> 65; mean (90 + 87.5 + 65) / 3
    assert average_incremental_accuracy(THREE_TASKS) == pytest.approx((90 + 87.5 + 65) / 3)
    assert average_incremental_accuracy([[42.0]]) == 42.0


def test_forward_transfer_is_the_accuracy_before_training_minus_the_random_networks() -> None:
    # the original's utils/metrics.py: mean over i >= 1 of A[i-1][i] - random[i]
    # task 1: 10 - 4 = 6; task 2: 12 - 20 = -8; mean -1
    assert forward_transfer(THREE_TASKS, [50.0, 4.0, 20.0]) == pytest.approx(-1.0)
    assert forward_transfer([[80.0]], [10.0]) == 0.0


def test_forward_transfer_needs_the_entries_above_the_diagonal() -> None:
    with pytest.raises(ValueError, match=r"row 0 has no entry for task 1; allowed: rows evaluated with eval_future=true"):
        forward_transfer([[90.0], [70.0, 85.0]], [10.0, 10.0])
    with pytest.raises(ValueError, match=r"random_init has 1 accuracies; allowed: one per task \(2\)"):
        forward_transfer([[90.0, 5.0], [70.0, 85.0]], [10.0])


def test_old_and_new_accuracy_weight_the_earlier_tasks_by_their_test_examples() -> None:
    # after task 1: old = task 0 alone = 95; after task 2: (70 * 100 + 50 * 300) / 400 = 55
    old, new = old_and_new_accuracy(THREE_TASKS, [100, 300, 50])
    assert old == [None, pytest.approx(95.0), pytest.approx(55.0)]
    assert new == [90.0, 80.0, 75.0]


def test_weighted_average_accuracy_is_the_accuracy_over_every_seen_test_example() -> None:
    # tasks of 50, 10 and 10 classes (500, 100, 100 test examples): after task 2, 60% of 500 and 80% of 100
    # right is 380 of 600; after task 3, 150 + 50 + 70 = 270 of 700 right
    rows = [[90.0], [60.0, 80.0], [30.0, 50.0, 70.0]]
    assert weighted_average_accuracy(rows, [500, 100, 100]) == pytest.approx([90.0, 380 / 6, 270 / 7])
    assert weighted_average_accuracy(rows, [100, 100, 100])[-1] == pytest.approx(average_accuracy(rows))  # equal tasks
    with pytest.raises(ValueError, match="test_sizes has 2 entries; allowed: one per task"):
        weighted_average_accuracy(rows, [1, 2])
