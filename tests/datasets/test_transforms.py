"""The batch transforms of the 224-pixel benchmarks against torchvision's transforms."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional

from mammoth.datasets import build_dataset
from mammoth.datasets.transforms import random_crop_flip, random_resized_crop_flip, resize, resized_crop_boxes
from mammoth.errors import DatasetError


def batch(n: int = 6, size: tuple[int, int] = (20, 28), seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def test_boxes_follow_torchvisions_rules() -> None:
    boxes = resized_crop_boxes(40, 60, 500, (0.08, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0))
    top, left, h, w = boxes.T
    assert bool(((top >= 0) & (left >= 0) & (top + h <= 40) & (left + w <= 60)).all())
    area = (h * w).double() / (40 * 60)
    assert float(area.min()) >= 0.07 and float(area.max()) <= 1.0
    ratio = w.double() / h.double()
    assert float(ratio.min()) > 0.7 and float(ratio.max()) < 1.4
    assert len(set(map(tuple, boxes.tolist()))) > 400  # really random


def test_impossible_ratios_fall_back_to_torchvisions_centre_crop() -> None:
    # a 10x100 image cannot hold any crop of ratio <= 1 with 90% of its area: torchvision's fallback
    boxes = resized_crop_boxes(10, 100, 3, (0.9, 1.0), (0.5, 1.0), torch.Generator().manual_seed(0))
    assert boxes.tolist() == [[0, 45, 10, 10]] * 3


def test_random_resized_crop_is_torchvisions_resized_crop_of_its_box() -> None:
    x = batch()
    generator = torch.Generator().manual_seed(5)
    out = random_resized_crop_flip(x, (16, 16), generator)
    replay = torch.Generator().manual_seed(5)
    boxes = resized_crop_boxes(20, 28, 6, (0.08, 1.0), (3 / 4, 4 / 3), replay)
    flips = torch.rand(6, generator=replay) < 0.5
    assert out.shape == (6, 3, 16, 16)
    for row, (top, left, h, w) in enumerate(boxes.tolist()):
        expected = functional.resized_crop(x[row], top, left, h, w, [16, 16], InterpolationMode.BICUBIC, antialias=True)
        expected = expected.clamp(0, 1).flip(-1) if flips[row] else expected.clamp(0, 1)
        torch.testing.assert_close(out[row], expected, atol=1e-5, rtol=0)
    assert bool(flips.any()) and not bool(flips.all())


def test_whole_image_crop_is_a_resize() -> None:
    x = batch(size=(12, 12))
    out = random_resized_crop_flip(x, (24, 24), torch.Generator().manual_seed(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    resized = resize(x, (24, 24))
    for row in range(len(x)):
        assert torch.equal(out[row], resized[row]) or torch.equal(out[row], resized[row].flip(-1))
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_random_crop_cuts_every_position_and_flips() -> None:
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5).repeat(200, 1, 1, 1)
    out = random_crop_flip(x, (3, 3), torch.Generator().manual_seed(1))
    corners = {(int(v) % 25) for v in out[:, 0].amin(dim=(1, 2))}
    assert corners == {r * 5 + c for r in range(3) for c in range(3)}  # every top-left corner is drawn
    windows = [x[0, 0, r : r + 3, c : c + 3] for r in range(3) for c in range(3)]
    for image in out[:20, 0]:
        base = image % 25  # both source images hold the same pattern, offset by 25
        assert any(torch.equal(base, w) or torch.equal(base, w.flip(-1)) for w in windows)
    with pytest.raises(DatasetError, match="random-crop of 6x6 from images of 5x5"):
        random_crop_flip(x, (6, 6))


def test_same_generator_same_augmentation() -> None:
    x = batch()
    first = random_resized_crop_flip(x, (16, 16), torch.Generator().manual_seed(9))
    second = random_resized_crop_flip(x, (16, 16), torch.Generator().manual_seed(9))
    assert torch.equal(first, second)


def test_cifar100_224_upscales_per_batch() -> None:
    dataset = build_dataset("seq-cifar100-224")
    x = batch(4, (32, 32))
    train = dataset.train_transform(x, torch.Generator().manual_seed(0))
    test = dataset.test_transform(x)
    assert train.shape == test.shape == (4, 3, 224, 224)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = functional.resize(x, [224, 224], InterpolationMode.BICUBIC, antialias=True).clamp(0, 1)
    torch.testing.assert_close(test, (expected - mean) / std, atol=1e-5, rtol=0)
    assert not math.isclose(float(train.mean()), float(test.mean()), rel_tol=1e-6)
