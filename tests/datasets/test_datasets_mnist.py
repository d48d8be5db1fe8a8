"""MNIST family over fake IDX files: seq-mnist, seq-fashion-mnist, perm-mnist, rot-mnist."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fake_datasets
from mammoth.datasets import build_dataset
from mammoth.errors import DatasetError
from task_tensors import as_float, task_tensors


@pytest.mark.parametrize(("name", "n_train", "n_test"), [("seq-mnist", 40, 20), ("seq-fashion-mnist", 30, 10)])
def test_class_il_tasks(fake_root: Path, name: str, n_train: int, n_test: int) -> None:
    dataset = build_dataset({"name": name, "root": str(fake_root)})
    sizes = 0
    for task in range(5):
        data = task_tensors(dataset, task)
        assert data.train_x.dtype == torch.float32 and data.train_x.shape[1:] == (1, 28, 28)
        assert data.test_x.shape[1:] == (1, 28, 28) and data.test_y.dtype == torch.int64
        assert set(data.train_y.tolist()) == {2 * task, 2 * task + 1} == set(data.test_y.tolist())
        assert fake_datasets.label_mismatches(data.train_x, data.train_y) == 0
        assert fake_datasets.label_mismatches(data.test_x, data.test_y) == 0
        sizes += len(data.train_y) + len(data.test_y)
    assert sizes == n_train + n_test


def test_perm_mnist_tasks(fake_root: Path) -> None:
    dataset = build_dataset({"name": "perm-mnist", "root": str(fake_root)}, seed=1)
    source_x, source_y, _, _ = dataset.source()
    task0, task1 = task_tensors(dataset, 0), task_tensors(dataset, 1)
    assert task0.train_x.shape == (40, 1, 28, 28) and task0.test_x.shape == (20, 1, 28, 28)
    assert torch.equal(task0.train_y, source_y) and torch.equal(task1.train_y, source_y)
    assert not torch.equal(task0.train_x, as_float(source_x))  # task 0 is permuted too
    assert not torch.equal(task0.train_x, task1.train_x)
    permutation = dataset.task_permutation(1)
    assert sorted(permutation.tolist()) == list(range(784))
    assert torch.equal(task1.train_x.flatten(1), as_float(source_x).flatten(1)[:, permutation])


def test_perm_mnist_seeding(fake_root: Path) -> None:
    def permutations(seed: int, n_tasks: int) -> list[torch.Tensor]:
        dataset = build_dataset({"name": "perm-mnist", "root": str(fake_root), "n_tasks": n_tasks}, seed=seed)
        return [dataset.task_permutation(task) for task in range(n_tasks)]

    first = permutations(0, 3)
    assert all(torch.equal(a, b) for a, b in zip(first, permutations(0, 3)))
    assert not any(torch.equal(a, b) for a, b in zip(first, permutations(1, 3)))
    assert all(torch.equal(a, b) for a, b in zip(first, permutations(0, 5)))  # independent of n_tasks
    assert not torch.equal(first[0], first[1])


def test_domain_il_n_tasks_override(fake_root: Path) -> None:
    dataset = build_dataset({"name": "rot-mnist", "root": str(fake_root), "n_tasks": 3})
    assert dataset.n_tasks == 3 and dataset.n_classes == 10
    assert task_tensors(dataset, 2).train_x.shape == (40, 1, 28, 28)
    with pytest.raises(DatasetError, match=r"task 3 is out of range for rot-mnist; allowed: 0\.\.2"):
        task_tensors(dataset, 3)
    assert build_dataset({"name": "rot-mnist"}).n_tasks == 20


def test_rot_mnist_tasks_and_seeding(fake_root: Path) -> None:
    from torchvision.transforms.v2 import functional as F

    dataset = build_dataset({"name": "rot-mnist", "root": str(fake_root)}, seed=4)
    angles = [dataset.task_angle(task) for task in range(20)]
    assert all(0.0 <= angle < 180.0 for angle in angles) and len(set(angles)) == 20
    assert angles == [build_dataset({"name": "rot-mnist"}, seed=4).task_angle(t) for t in range(20)]
    assert angles[:5] != [build_dataset({"name": "rot-mnist"}, seed=5).task_angle(t) for t in range(5)]
    source_x, source_y, test_x, _ = dataset.source()
    task2 = task_tensors(dataset, 2)
    assert torch.equal(task2.train_y, source_y)
    assert task2.train_x.dtype == torch.float32 and task2.train_x.shape == source_x.shape
    assert torch.equal(task2.train_x[5], as_float(F.rotate(source_x[5:6], angles[2])[0]))  # batch rotation == one-by-one
    assert torch.equal(task2.test_x, as_float(F.rotate(test_x, angles[2])))
    assert not torch.equal(task2.train_x, task_tensors(dataset, 3).train_x)
    assert not torch.equal(task2.train_x, as_float(source_x))


@pytest.mark.parametrize(
    ("name", "folder"), [("seq-mnist", "MNIST"), ("perm-mnist", "MNIST"), ("seq-fashion-mnist", "FashionMNIST")]
)
def test_missing_files(tmp_path: Path, name: str, folder: str) -> None:
    with pytest.raises(DatasetError) as error:
        task_tensors(build_dataset({"name": name, "root": str(tmp_path)}), 0)
    message = str(error.value)
    first_line = message.splitlines()[0]
    assert "train-images-idx3-ubyte" in first_line and "t10k-labels-idx1-ubyte" in first_line
    assert str(tmp_path / folder / "raw") in first_line
    assert "dataset.download=true" in message


def test_one_missing_file_is_named(tmp_path: Path) -> None:
    raw = fake_datasets.write_mnist(tmp_path, n_train=10, n_test=10)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    expected = r"seq-mnist: missing t10k-labels-idx1-ubyte in .*raw \(expected: train-images"
    with pytest.raises(DatasetError, match=expected):
        task_tensors(build_dataset({"name": "seq-mnist", "root": str(tmp_path)}), 0)


@pytest.mark.parametrize(
    "garbage", [b"not an idx file at all, just some garbage bytes", b"\x00\x00\x08\x03" + b"\xff" * 40]
)
def test_corrupt_file(tmp_path: Path, garbage: bytes) -> None:
    raw = fake_datasets.write_mnist(tmp_path, n_train=10, n_test=10)
    (raw / "train-images-idx3-ubyte").write_bytes(garbage)
    with pytest.raises(DatasetError) as error:
        task_tensors(build_dataset({"name": "seq-mnist", "root": str(tmp_path)}), 0)
    first_line = str(error.value).splitlines()[0]
    assert "corrupt file" in first_line and str(raw / "train-images-idx3-ubyte") in first_line


def test_labels_and_images_disagree(tmp_path: Path) -> None:
    import numpy as np

    raw = fake_datasets.write_mnist(tmp_path, n_train=10, n_test=10)
    fake_datasets.write_idx(raw / "train-labels-idx1-ubyte", 2049, np.arange(7, dtype=np.uint8))
    with pytest.raises(DatasetError, match="10 images but 7 labels in train-labels-idx1-ubyte"):
        task_tensors(build_dataset({"name": "seq-mnist", "root": str(tmp_path)}), 0)


def test_out_of_range_labels_are_corrupt(tmp_path: Path) -> None:
    import numpy as np

    raw = fake_datasets.write_mnist(tmp_path, n_train=10, n_test=10)
    fake_datasets.write_idx(raw / "train-labels-idx1-ubyte", 2049, np.full(10, 12, dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"seq-mnist train labels span 12\.\.12; expected 0\.\.9"):
        task_tensors(build_dataset({"name": "seq-mnist", "root": str(tmp_path)}), 0)


def test_download_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.mnist
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", offline)
    with pytest.raises(DatasetError) as error:
        task_tensors(build_dataset({"name": "seq-mnist", "root": str(tmp_path), "download": True}), 0)
    first_line = str(error.value).splitlines()[0]
    assert first_line.startswith(f"seq-mnist: could not download the MNIST files into {tmp_path / 'MNIST' / 'raw'}")


def test_download_skipped_when_files_exist(fake_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.mnist

    def no_network(*args, **kwargs):
        raise AssertionError("must not download: the files are there")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", no_network)
    dataset = build_dataset({"name": "seq-mnist", "root": str(fake_root), "download": True})
    assert len(task_tensors(dataset, 4).train_y) == 8


def test_gzipped_idx_files_are_extracted_and_read(tmp_path):
    import gzip

    from fake_datasets import write_mnist

    from mammoth.datasets import build_dataset

    raw = write_mnist(tmp_path, folder="FashionMNIST", n_train=40, n_test=20)
    originals = {}
    for path in list(raw.iterdir()):
        originals[path.name] = path.read_bytes()
        (raw / f"{path.name}.gz").write_bytes(gzip.compress(originals[path.name]))
        path.unlink()
    dataset = build_dataset({"name": "seq-fashion-mnist", "root": str(tmp_path)})
    task = task_tensors(dataset, 0)
    assert sorted(task.train_y.unique().tolist()) == [0, 1] and task.train_x.shape[1:] == (1, 28, 28)
    for name, content in originals.items():
        assert (raw / name).read_bytes() == content


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda packed: packed[: len(packed) // 2], "it ends early (truncated)"),
        (lambda packed: b"not gzip at all" + packed, "Not a gzipped file"),
        (lambda packed: packed[:20] + bytes([packed[20] ^ 0xFF]) + packed[21:], ""),
    ],
    ids=["truncated", "not-gzip", "flipped-byte"],
)
def test_a_corrupt_gz_is_one_line_naming_it(tmp_path, damage, reason):
    import gzip

    from fake_datasets import write_mnist

    from mammoth.datasets import build_dataset

    raw = write_mnist(tmp_path, folder="MNIST", n_train=40, n_test=20)
    images = raw / "train-images-idx3-ubyte"
    (raw / "train-images-idx3-ubyte.gz").write_bytes(damage(gzip.compress(images.read_bytes())))
    images.unlink()
    with pytest.raises(DatasetError) as error:
        task_tensors(build_dataset({"name": "seq-mnist", "root": str(tmp_path)}), 0)
    first_line = str(error.value).splitlines()[0]
    assert first_line.startswith(f"seq-mnist: corrupt file {raw / 'train-images-idx3-ubyte.gz'} is not a readable gzip file: ")
    assert reason in first_line
    assert sorted(path.name for path in raw.iterdir() if "train-images" in path.name) == ["train-images-idx3-ubyte.gz"]


def test_rotation_moves_a_known_pixel_counter_clockwise_about_the_centre(fake_root: Path) -> None:
    import math

    dataset = build_dataset({"name": "rot-mnist", "root": str(fake_root)}, seed=4)
    image = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    image[0, 0, 4:6, 20:22] = 255  # a 2x2 block centred on row 4.5, column 20.5
    dx, dy = 20.5 - 13.5, 4.5 - 13.5  # offsets from the image centre (13.5, 13.5); y points down
    for task in range(20):
        theta = math.radians(dataset.task_angle(task))
        # Counter-clockwise as displayed: (dx, dy) -> (dx cos + dy sin, -dx sin + dy cos).
        col = 13.5 + dx * math.cos(theta) + dy * math.sin(theta)
        row = 13.5 - dx * math.sin(theta) + dy * math.cos(theta)
        lit = (dataset.apply_task_transform(task, image)[0, 0] > 127).nonzero().tolist()
        assert lit, f"task {task}: the block vanished"
        assert all(abs(r - row) <= 1.5 and abs(c - col) <= 1.5 for r, c in lit), (task, lit, row, col)


def test_a_quarter_turn_sends_row_r_column_c_to_row_27_minus_c_column_r(fake_root: Path, monkeypatch) -> None:
    dataset = build_dataset({"name": "rot-mnist", "root": str(fake_root)}, seed=4)
    monkeypatch.setattr(dataset, "task_angle", lambda task: 90.0)
    image = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    image[0, 0, 2, 20] = 200
    rotated = dataset.apply_task_transform(0, image)
    assert rotated[0, 0].nonzero().tolist() == [[7, 2]] and rotated[0, 0, 7, 2] == 200


def test_a_legacy_processed_file_is_never_loaded(tmp_path):
    import os
    import pickle

    from fake_datasets import label_mismatches, write_mnist

    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'marker'}",)

    write_mnist(tmp_path, folder="MNIST", n_train=40, n_test=20)
    processed = tmp_path / "MNIST" / "processed"
    processed.mkdir()
    for name in ("training.pt", "test.pt"):  # torchvision's legacy cache, which it would load first
        (processed / name).write_bytes(pickle.dumps(RunsCode()))
    train_x, train_y, test_x, test_y = build_dataset({"name": "seq-mnist", "root": str(tmp_path)}).source()
    assert (len(train_y), len(test_y)) == (40, 20) and train_y.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert label_mismatches(train_x, train_y) == 0 and label_mismatches(test_x, test_y) == 0
    assert not (tmp_path / "marker").exists()
