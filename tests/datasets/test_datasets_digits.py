"""seq-digits: scikit-learn's bundled digits, the offline default."""

from __future__ import annotations

import torch

from mammoth.datasets import build_dataset
from task_tensors import task_tensors


def test_tasks_cover_all_1797_digits_in_a_fixed_split() -> None:
    digits = build_dataset({"name": "seq-digits"})
    tasks = [task_tensors(digits, task) for task in range(5)]
    assert sum(len(t.train_y) + len(t.test_y) for t in tasks) == 1797
    assert sum(len(t.train_y) for t in tasks) == 1438 and sum(len(t.test_y) for t in tasks) == 359
    for task, data in enumerate(tasks):
        assert data.train_x.dtype == torch.float32 and data.train_x.shape[1:] == (1, 8, 8)
        assert data.train_y.dtype == torch.int64
        assert sorted(data.train_y.unique().tolist()) == [2 * task, 2 * task + 1]
        assert sorted(data.test_y.unique().tolist()) == [2 * task, 2 * task + 1]
    other_seed = build_dataset({"name": "seq-digits"}, seed=123)
    for a, b in zip(digits.source(), other_seed.source()):
        assert torch.equal(a, b)


def test_split_is_stratified_and_scaled_to_uint8() -> None:
    train_x, train_y, test_x, test_y = build_dataset({"name": "seq-digits"}).source()
    assert set(torch.bincount(test_y).tolist()) <= {35, 36, 37}
    assert int(train_x.max()) == 255 and int(train_x.min()) == 0
    # 0..16 scaled by 255/16 and rounded: only 17 distinct values.
    assert len(torch.unique(torch.cat([train_x.flatten(), test_x.flatten()]))) == 17


def test_declared_mean_and_std_are_those_of_the_training_split() -> None:
    digits = build_dataset({"name": "seq-digits"})
    x = digits.source()[0].double() / 255
    assert abs(float(x.mean()) - digits.mean[0]) < 1e-4
    assert abs(float(x.std()) - digits.std[0]) < 1e-4
