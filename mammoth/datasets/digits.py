"""``seq-digits``: the embedded default benchmark, scikit-learn's bundled 8x8 digits (no download)."""

from __future__ import annotations

import torch

from mammoth.datasets import register_dataset
from mammoth.datasets.base import ContinualDataset


def load_digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 digits as uint8 (N, 1, 8, 8) images (0..16 scaled to 0..255), split 80/20.

    The split is stratified and fixed (``random_state=0``), independent of the run seed.
    """
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.data * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
    labels = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=0
    )
    return (
        torch.from_numpy(np.ascontiguousarray(train_x)),
        torch.from_numpy(np.ascontiguousarray(train_y)),
        torch.from_numpy(np.ascontiguousarray(test_x)),
        torch.from_numpy(np.ascontiguousarray(test_y)),
    )


@register_dataset
class SequentialDigits(ContinualDataset):
    """Sequential Digits: 5 class-IL tasks of 2 digits each, on scikit-learn's 8x8 digits (1,437 train, 360 test)."""

    name = "seq-digits"
    setting = "class-il"
    default_n_tasks = 5
    n_classes_per_task = 2
    input_shape = (1, 8, 8)
    # Mean and std of all pixels of the 1,437 training images, as floats in [0, 1]:
    # x = load_digits_split()[0].double() / 255; print(x.mean(), x.std())  -> 0.30543, 0.37596
    mean = (0.3054,)
    std = (0.3760,)
    augmentation = None
    default_backbone = "mnistmlp"
    default_batch_size = 32
    default_n_epochs = 5

    def load_source(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The fixed train/test split of the bundled digits (``config.root`` and ``download`` are unused)."""
        return load_digits_split()
