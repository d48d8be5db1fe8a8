"""dataset.mean / dataset.std / dataset.augmentation: a benchmark's normalisation and training
augmentation replaced from the config (the original's per-method dataset configs)."""

from __future__ import annotations

import pytest
import torch

from mammoth.datasets import build_dataset
from mammoth.errors import DatasetError


def test_mean_and_std_replace_the_benchmarks_normalisation() -> None:
    own = build_dataset({"name": "seq-digits"})
    replaced = build_dataset({"name": "seq-digits", "mean": [0.5], "std": [0.25]})
    x = torch.full((2, 1, 8, 8), 0.75)
    assert torch.allclose(replaced.test_transform(x), torch.full_like(x, 1.0))  # (0.75 - 0.5) / 0.25
    assert torch.allclose(own.test_transform(x), (x - 0.3060) / 0.3763, atol=1e-4)
    assert replaced.config.mean == [0.5] and replaced.config.std == [0.25]
    assert type(replaced).mean == own.mean  # the class (and other instances) keep the benchmark's


def test_mean_zero_std_one_feeds_the_pixels_as_they_are() -> None:
    dataset = build_dataset({"name": "seq-digits", "mean": [0], "std": [1], "augmentation": "none"})
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(dataset.train_transform(x, torch.Generator().manual_seed(0)), x)


def test_augmentation_replaces_the_benchmarks() -> None:
    plain = build_dataset({"name": "seq-cifar10", "augmentation": "none"})
    assert build_dataset({"name": "seq-cifar10"}).augmentation == "crop-flip"
    assert plain.augmentation is None
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(plain.train_transform(x, torch.Generator().manual_seed(0)), plain.test_transform(x))
    flipped = build_dataset({"name": "seq-cifar10", "augmentation": "random-crop-flip"})
    assert flipped.augmentation == "random-crop-flip"
    assert not torch.equal(flipped.train_transform(x, torch.Generator().manual_seed(0)), flipped.test_transform(x))


@pytest.mark.parametrize("fields, message", [
    ({"mean": [0.5]}, "dataset.std=None is not allowed for seq-digits; allowed: null (the benchmark's) or 1 number(s), "
                      "one per channel, with dataset.mean and dataset.std both set"),
    ({"mean": [0, 0, 0], "std": [1, 1, 1]}, "dataset.mean=[0.0, 0.0, 0.0] is not allowed for seq-digits; allowed: null "
                                            "(the benchmark's) or 1 number(s), one per channel, with dataset.mean and "
                                            "dataset.std both set"),
    ({"mean": [0], "std": [0]}, "dataset.std=[0.0] is not allowed; allowed: numbers > 0"),
    ({"augmentation": "flip"}, "dataset.augmentation='flip' is not allowed; allowed: null (the benchmark's), none, "
                               "crop-flip, random-resized-crop-flip, random-crop-flip"),
])
def test_bad_settings_are_refused_in_one_line(fields: dict, message: str) -> None:
    with pytest.raises(DatasetError) as error:
        build_dataset({"name": "seq-digits", **fields})
    assert str(error.value) == message
