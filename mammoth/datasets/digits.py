"""``seq-digits``: the embedded default benchmark, scikit-learn's bundled 8x8 digits (no download)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from mammoth.datasets import register_dataset
from mammoth.datasets.base import ContinualDataset
from mammoth.errors import DatasetError


TEST_FRACTION = 0.2
SPLIT_SEED = 0


def digits_file() -> Path:
    """scikit-learn's bundled ``digits.csv.gz``, located without importing scikit-learn (slow)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("seq-digits needs scikit-learn's bundled digits; install it with: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise DatasetError(f"seq-digits: missing digits.csv.gz in {path.parent}; reinstall scikit-learn")
    return path


def stratified_split(labels: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test indices with ``test_fraction`` of every class in the test part (rounded)."""
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_test = round(len(members) * test_fraction)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def load_digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 1,797 digits as uint8 (N, 1, 8, 8) images (0..16 scaled to 0..255), split 80/20.

    The split is stratified and fixed (seed 0), independent of the run seed.
    """
    table = np.loadtxt(digits_file(), delimiter=",")
    images = torch.from_numpy(np.rint(table[:, :-1] * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8))
    labels = torch.from_numpy(table[:, -1].astype(np.int64))
    train, test = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    return images[train], labels[train], images[test], labels[test]


@register_dataset
class SequentialDigits(ContinualDataset):
    """Sequential Digits: 5 class-IL tasks of 2 digits each, on scikit-learn's 8x8 digits (1,438 train, 359 test)."""

    name = "seq-digits"
    setting = "class-il"
    default_n_tasks = 5
    n_classes_per_task = 2
    input_shape = (1, 8, 8)
    # Mean and std of all pixels of the 1,438 training images, as floats in [0, 1]:
    # x = load_digits_split()[0].double() / 255; print(x.mean(), x.std())  -> 0.3060, 0.3763
    mean = (0.3060,)
    std = (0.3763,)
    augmentation = None
    default_backbone = "mnistmlp"
    default_batch_size = 32
    default_n_epochs = 5

    def load_source(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The fixed train/test split of the bundled digits (``config.root`` and ``download`` are unused)."""
        return load_digits_split()
