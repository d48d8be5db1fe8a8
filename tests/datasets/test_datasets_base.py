"""ContinualDataset behaviour shared by every benchmark: tasks, transforms, augmentation, caching."""

from __future__ import annotations

import pytest
import torch

from mammoth.datasets import build_dataset, random_crop_flip
from mammoth.datasets.source import InMemorySource
from mammoth.errors import DatasetError
from registries import restored
from task_tensors import task_tensors


def test_task_classes_and_counts() -> None:
    cifar100 = build_dataset({"name": "seq-cifar100"})
    assert (cifar100.n_tasks, cifar100.n_classes) == (10, 100)
    assert cifar100.task_classes(3) == range(30, 40)
    perm = build_dataset({"name": "perm-mnist", "n_tasks": 4})
    assert (perm.n_tasks, perm.n_classes, perm.task_classes(2)) == (4, 10, range(10))


@pytest.mark.parametrize("task", [-1, 5, "0", True])
def test_bad_task_index(task: object) -> None:
    with pytest.raises(DatasetError, match=r"out of range for seq-digits; allowed: 0\.\.4"):
        task_tensors(build_dataset({"name": "seq-digits"}), task)


@pytest.mark.parametrize("name", ["seq-mnist", "seq-cifar10", "seq-tinyimg", "seq-digits"])
def test_class_il_refuses_another_n_tasks(name: str) -> None:
    with pytest.raises(DatasetError) as error:
        build_dataset({"name": name, "n_tasks": 3})
    assert f"dataset.n_tasks=3 is not allowed for {name}" in str(error.value).splitlines()[0]


def test_class_il_accepts_its_own_n_tasks() -> None:
    assert build_dataset({"name": "seq-cifar100", "n_tasks": 10}).n_tasks == 10


def test_describe() -> None:
    assert build_dataset({"name": "seq-cifar10"}).describe() == {
        "name": "seq-cifar10",
        "setting": "class-il",
        "n_tasks": 5,
        "n_classes_per_task": 2,
        "n_classes": 10,
        "input_shape": [3, 32, 32],
        "augmentation": "crop-flip",
        "default_backbone": "resnet18",
    }
    assert build_dataset({"name": "rot-mnist", "n_tasks": 7}).describe()["n_tasks"] == 7


def test_read_images_and_normalisation() -> None:
    cifar = build_dataset({"name": "seq-cifar10"})
    white = InMemorySource(torch.full((2, 3, 32, 32), 255, dtype=torch.uint8), torch.zeros(2, dtype=torch.long))
    x = white.read(torch.arange(2), "cpu")
    assert x.dtype == torch.float32 and float(x.max()) == 1.0
    normalised = cifar.test_transform(x)
    expected = [(1 - m) / s for m, s in zip((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2615))]
    assert torch.allclose(normalised[0, :, 5, 5], torch.tensor(expected))
    digits = build_dataset({"name": "seq-digits"})
    half = torch.full((1, 1, 8, 8), 0.5, dtype=torch.float64)
    out = digits.train_transform(half)  # no augmentation: normalisation only, dtype kept
    assert out.dtype == torch.float64
    assert torch.allclose(out, torch.full_like(half, (0.5 - 0.3060) / 0.3763))
    mnist = build_dataset({"name": "seq-mnist"})  # no normalisation, as the original Mammoth
    half = torch.full((1, 1, 28, 28), 0.5, dtype=torch.float64)
    assert torch.equal(mnist.train_transform(half), half)


def test_transform_rejects_wrong_input() -> None:
    cifar = build_dataset({"name": "seq-cifar10"})
    with pytest.raises(DatasetError, match=r"expects a float batch of shape \(N, 3, H, W\), got dtype torch.float32"):
        cifar.train_transform(torch.zeros(3, 32, 32))
    with pytest.raises(DatasetError, match=r"expects a float batch of shape \(N, 3, H, W\), got dtype torch.uint8"):
        cifar.test_transform(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))  # images are read as floats first


def expected_crop_flip(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Reference crop-flip, one example at a time, from the documented draw order."""
    generator = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    top = torch.randint(0, 9, (n,), generator=generator)
    left = torch.randint(0, 9, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    out = []
    for i in range(n):
        crop = padded[i, :, top[i] : top[i] + x.shape[2], left[i] : left[i] + x.shape[3]]
        out.append(crop.flip(-1) if flip[i] else crop)
    return torch.stack(out)


def test_crop_flip_matches_reference_and_is_deterministic() -> None:
    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    first = random_crop_flip(x, generator=torch.Generator().manual_seed(7))
    second = random_crop_flip(x, generator=torch.Generator().manual_seed(7))
    other = random_crop_flip(x, generator=torch.Generator().manual_seed(8))
    assert first.shape == x.shape
    assert torch.equal(first, second) and not torch.equal(first, other)
    assert torch.equal(first, expected_crop_flip(x, seed=7))


def test_crop_flip_really_crops_and_flips() -> None:
    n = 3000
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(2)) + 1.0  # no zeros in the input
    generator = torch.Generator().manual_seed(3)
    top = torch.randint(0, 9, (n,), generator=generator)
    left = torch.randint(0, 9, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = random_crop_flip(x, generator=torch.Generator().manual_seed(3))
    centre = int(torch.nonzero(~flip & (top == 4) & (left == 4))[0])
    assert torch.equal(out[centre], x[centre])
    flipped_centre = int(torch.nonzero(flip & (top == 4) & (left == 4))[0])
    assert torch.equal(out[flipped_centre], x[flipped_centre].flip(-1))
    shifted = int(torch.nonzero(~flip & (top == 0) & (left == 0))[0])  # image moved down-right by 4
    assert torch.equal(out[shifted, :, :4, :], torch.zeros(1, 4, 8))
    assert torch.equal(out[shifted, :, :, :4], torch.zeros(1, 8, 4))
    assert torch.equal(out[shifted, :, 4:, 4:], x[shifted, :, :4, :4])
    flipped_shifted = int(torch.nonzero(flip & (top == 0) & (left == 0))[0])
    cropped = torch.zeros(1, 8, 8)
    cropped[:, 4:, 4:] = x[flipped_shifted, :, :4, :4]
    assert torch.equal(out[flipped_shifted], cropped.flip(-1))
    assert 0.45 < flip.float().mean() < 0.55 and set(top.tolist()) == set(range(9))


def test_train_transform_augments_then_normalises() -> None:
    cifar = build_dataset({"name": "seq-cifar10"})
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = cifar.train_transform(x, generator=torch.Generator().manual_seed(5))
    expected = cifar.normalize(random_crop_flip(x, generator=torch.Generator().manual_seed(5)))
    assert torch.equal(out, expected)
    tiny = build_dataset({"name": "seq-tinyimg"})
    assert tiny.train_transform(torch.rand(2, 3, 64, 64)).shape == (2, 3, 64, 64)


def test_crop_flip_uses_global_rng_without_generator() -> None:
    x = torch.rand(32, 3, 32, 32)
    torch.manual_seed(11)
    first = random_crop_flip(x)
    torch.manual_seed(11)
    assert torch.equal(first, random_crop_flip(x))


def test_source_is_loaded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    digits = build_dataset({"name": "seq-digits"})
    calls = []
    original = digits.load_source

    def counting_load():
        calls.append(1)
        return original()

    monkeypatch.setattr(digits, "load_source", counting_load)
    for task in (0, 1, 4, 0):
        task_tensors(digits, task)
    assert len(calls) == 1


def test_a_float_feature_dataset_trains_and_evaluates_end_to_end(tmp_path) -> None:
    """A registered dataset of float features (no images: no crop-flip, per-feature normalisation)
    runs through ``mammoth.run`` with an MLP backbone, a replay method and the results file."""
    import json

    import mammoth
    from composing import compose_run
    from mammoth import datasets
    from mammoth.datasets.base import ContinualDataset

    with restored(datasets.DATASETS):
        @datasets.register_dataset("float-blobs-test")
        class FloatBlobs(ContinualDataset):
            setting = "class-il"
            default_n_tasks = 2
            n_classes_per_task = 2
            input_shape = (6,)
            mean, std = (0.0,) * 6, (2.0,) * 6
            augmentation = "crop-flip"  # asked for, but there is no image to crop: skipped
            default_backbone = "mnistmlp"
            default_batch_size = 16
            default_n_epochs = 3

            def load_source(self):
                generator = torch.Generator().manual_seed(0)
                centres = 4 * torch.eye(4, 6)
                def split(n):
                    y = torch.arange(4).repeat_interleave(n)
                    return centres[y] + 0.3 * torch.randn(len(y), 6, generator=generator), y
                return (*split(40), *split(10))

        dataset = build_dataset({"name": "float-blobs-test"})
        source = dataset.task_source(1)
        assert source.labels.unique().tolist() == [2, 3]
        features = source.read(torch.arange(3), "cpu")
        assert features.dtype == torch.float32 and torch.equal(dataset.train_transform(features), features / 2)
        cfg = compose_run(tmp_path, "dataset=float-blobs-test", "model=er", "model.buffer_size=20",
                          "backbone=mnistmlp", "model.lr=0.1")
        mammoth.run(cfg)
        results = json.loads((tmp_path / "results.json").read_text())
        assert results["class_il"]["average"] > 75  # four separated blobs; chance is 50 after task 2
