"""Inputs as the original Mammoth feeds them: normalisation constants and augmentation per benchmark.

The expected values are copied from the original's dataset files (aimagelab/mammoth,
datasets/seq_mnist.py, perm_mnist.py, rot_mnist.py: ``transforms.ToTensor()`` only;
datasets/seq_cifar10.py, seq_cifar100.py, seq_tinyimagenet.py: ``RandomCrop(size, padding=4)``,
``RandomHorizontalFlip()``, ``ToTensor()``, ``Normalize(MEAN, STD)``; test: ``ToTensor()``,
``Normalize(MEAN, STD)``). No data files are read.
"""

from __future__ import annotations

import pytest
import torch

from mammoth.datasets import get_dataset_class
from mammoth.datasets.source import InMemorySource

MNIST_FAMILY = ("seq-mnist", "seq-fashion-mnist", "perm-mnist", "rot-mnist")

# name -> (MEAN, STD, image size) written in the original's dataset classes.
ORIGINAL_NORMALISATION = {
    "seq-cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2615), 32),
    "seq-cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761), 32),
    "seq-tinyimg": ((0.4802, 0.4480, 0.3975), (0.2770, 0.2691, 0.2821), 64),
}


def _dataset(name: str):
    return get_dataset_class(name)({"name": name})


@pytest.mark.parametrize("name", MNIST_FAMILY)
def test_mnist_family_feeds_raw_pixels_in_0_1(name: str) -> None:
    dataset = _dataset(name)
    pixels = torch.tensor([0, 1, 128, 255], dtype=torch.uint8).repeat(196).view(1, 1, 28, 28)
    x = InMemorySource(pixels, torch.zeros(1, dtype=torch.long)).read(torch.arange(1), "cpu")  # as the harness reads it
    expected = torch.tensor([0.0, 1 / 255, 128 / 255, 1.0]).repeat(196).view(1, 1, 28, 28)
    for transformed in (dataset.train_transform(x, torch.Generator().manual_seed(0)), dataset.test_transform(x)):
        assert torch.equal(transformed, expected)  # no normalisation, no augmentation
    assert float(dataset.train_transform(x).max()) == 1.0 and float(dataset.test_transform(x).min()) == 0.0


@pytest.mark.parametrize("name", sorted(ORIGINAL_NORMALISATION))
def test_normalisation_constants_are_the_originals(name: str) -> None:
    mean, std, size = ORIGINAL_NORMALISATION[name]
    dataset = _dataset(name)
    assert (dataset.mean, dataset.std) == (mean, std)
    # test transform: (x - mean) / std per channel, nothing else
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(dataset.test_transform(x), expected, atol=1e-6)
    # a white pixel of channel 0 becomes (1 - mean) / std
    assert abs(float(dataset.test_transform(torch.ones(1, 3, size, size))[0, 0, 0, 0]) - (1 - mean[0]) / std[0]) < 1e-6


@pytest.mark.parametrize("name", sorted(ORIGINAL_NORMALISATION))
def test_augmentation_is_a_4_pixel_zero_padded_crop_and_a_horizontal_flip(name: str) -> None:
    mean, std, size = ORIGINAL_NORMALISATION[name]
    dataset = _dataset(name)
    # an image whose columns count 1..size: a crop shifts them, a flip reverses them
    columns = torch.arange(1, size + 1, dtype=torch.float32) / 255
    x = columns.view(1, 1, 1, size).expand(64, 3, size, size).contiguous()
    out = dataset.train_transform(x, torch.Generator().manual_seed(0))
    raw = out * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)  # undo Normalize
    rows = (raw[:, 0, size // 2] * 255).round()  # the middle row of channel 0, (64, size)
    flips, shifts = set(), set()
    for row in rows.tolist():
        inside = [value for value in row if value > 0]
        assert 1 <= len(inside) and len(row) - len(inside) <= 4  # at most 4 zero-padded columns
        step = inside[1] - inside[0]
        assert step in (1.0, -1.0) and all(b - a == step for a, b in zip(inside, inside[1:]))  # a contiguous crop
        flips.add(step)
        shifts.add(inside[0] if step == 1 else inside[-1])
    assert flips == {1.0, -1.0}  # both flipped and unflipped images in 64 draws
    assert len(shifts) > 3  # several crop offsets in 64 draws
    # the padding is black before normalisation: padded pixels are exactly (0 - mean) / std
    padded = out[:, 0][raw[:, 0] * 255 < 0.5]
    assert len(padded) > 0 and torch.allclose(padded, torch.full_like(padded, -mean[0] / std[0]), atol=1e-6)


# name -> (batch_size, n_epochs, n_tasks, backbone): the original's get_batch_size, get_epochs,
# N_TASKS and get_backbone (datasets/seq_mnist.py, perm_mnist.py, rot_mnist.py, seq_cifar10.py,
# seq_cifar100.py, seq_tinyimagenet.py).
ORIGINAL_DEFAULTS = {
    "seq-mnist": (64, 1, 5, "mnistmlp"),
    "perm-mnist": (128, 1, 20, "mnistmlp"),
    "rot-mnist": (128, 1, 20, "mnistmlp"),
    "seq-cifar10": (32, 50, 5, "resnet18"),
    "seq-cifar100": (32, 50, 10, "resnet18"),
    "seq-tinyimg": (32, 50, 10, "resnet18"),
}


@pytest.mark.parametrize("name", sorted(ORIGINAL_DEFAULTS))
def test_training_defaults_are_the_originals(name: str) -> None:
    dataset = _dataset(name)
    found = (dataset.config.batch_size, dataset.config.n_epochs, dataset.n_tasks, dataset.default_backbone)
    assert found == ORIGINAL_DEFAULTS[name]


def test_rot_mnist_rotates_like_the_originals_pil_rotation() -> None:
    # the original (datasets/transforms/rotation.py) calls torchvision's F.rotate(PIL image, degrees):
    # PIL's Image.rotate, nearest neighbour about the centre, black fill
    import numpy as np
    import torchvision.transforms.functional as TF
    from PIL import Image

    dataset = get_dataset_class("rot-mnist")({"name": "rot-mnist", "n_tasks": 3}, seed=4)
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for task in range(3):
        angle = dataset.task_angle(task)
        expected = [np.asarray(TF.rotate(Image.fromarray(image[0].numpy(), mode="L"), angle)) for image in x]
        different = dataset.apply_task_transform(task, x)[:, 0] != torch.from_numpy(np.stack(expected))
        # the same pixels, except where a source coordinate falls on a rounding boundary (PIL's affine
        # is double precision, torch's float32): a few of the 784 pixels at some angles
        assert int(different.sum(dim=(1, 2)).max()) <= 4
