"""seq-cifar10 and seq-cifar100 over fake pickled batches in the real archive layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fake_datasets
from mammoth.datasets import build_dataset
from mammoth.errors import DatasetError
from task_tensors import task_tensors


@pytest.mark.parametrize(("name", "n_tasks", "per_task", "n_train", "n_test"), [
    ("seq-cifar10", 5, 2, 50, 20),
    ("seq-cifar100", 10, 10, 200, 100),
])
def test_class_il_tasks(fake_root: Path, name: str, n_tasks: int, per_task: int, n_train: int, n_test: int) -> None:
    dataset = build_dataset({"name": name, "root": str(fake_root)})
    train_total = test_total = 0
    for task in range(n_tasks):
        data = task_tensors(dataset, task)
        assert data.train_x.dtype == torch.float32 and data.train_x.shape[1:] == (3, 32, 32)
        assert data.test_x.shape[1:] == (3, 32, 32) and data.train_y.dtype == torch.int64
        expected = set(range(task * per_task, (task + 1) * per_task))
        assert set(data.train_y.tolist()) == expected == set(data.test_y.tolist())
        assert fake_datasets.label_mismatches(data.train_x, data.train_y) == 0
        assert fake_datasets.label_mismatches(data.test_x, data.test_y) == 0
        train_total += len(data.train_y)
        test_total += len(data.test_y)
    assert (train_total, test_total) == (n_train, n_test)


def test_images_keep_their_layout(fake_root: Path) -> None:
    train_x, train_y, _, _ = build_dataset({"name": "seq-cifar10", "root": str(fake_root)}).source()
    expected = fake_datasets.fake_image(int(train_y[3]), 3, 32, 32, 3)  # example 3 of data_batch_1
    assert torch.equal(train_x[3], torch.from_numpy(expected).permute(2, 0, 1))


@pytest.mark.parametrize(("name", "folder", "first_file"), [
    ("seq-cifar10", "cifar-10-batches-py", "data_batch_1"),
    ("seq-cifar100", "cifar-100-python", "train"),
])
def test_missing_files(tmp_path: Path, name: str, folder: str, first_file: str) -> None:
    with pytest.raises(DatasetError) as error:
        task_tensors(build_dataset({"name": name, "root": str(tmp_path)}), 0)
    message = str(error.value)
    first_line = message.splitlines()[0]
    assert f"missing {first_file}" in first_line and str(tmp_path / folder) in first_line
    assert "dataset.download=true" in message and "https://www.cs.toronto.edu/~kriz/" in message


def test_one_missing_batch_is_named(tmp_path: Path) -> None:
    folder = fake_datasets.write_cifar10(tmp_path, n_per_batch=2, n_test=2)
    (folder / "data_batch_4").unlink()
    with pytest.raises(DatasetError, match=r"seq-cifar10: missing data_batch_4 in .*cifar-10-batches-py \(expected: "):
        task_tensors(build_dataset({"name": "seq-cifar10", "root": str(tmp_path)}), 0)


@pytest.mark.parametrize("bad_file", ["data_batch_3", "batches.meta", "test_batch"])
def test_corrupt_cifar10_file_is_named(tmp_path: Path, bad_file: str) -> None:
    folder = fake_datasets.write_cifar10(tmp_path, n_per_batch=2, n_test=2)
    (folder / bad_file).write_bytes(b"\x80\x02garbage bytes, not a pickle")
    with pytest.raises(DatasetError) as error:
        task_tensors(build_dataset({"name": "seq-cifar10", "root": str(tmp_path)}), 0)
    first_line = str(error.value).splitlines()[0]
    assert f"corrupt file {bad_file} in {folder}" in first_line


def test_cifar100_without_fine_labels_is_corrupt(tmp_path: Path) -> None:
    folder = fake_datasets.write_cifar100(tmp_path, n_train=4, n_test=4)
    fake_datasets.dump(folder / "test", {"data": fake_datasets.fake_images([0], 32, 32, 3).reshape(1, -1)})
    with pytest.raises(DatasetError, match=r"corrupt file test in .*cifar-100-python: has no key\(s\) fine_labels"):
        task_tensors(build_dataset({"name": "seq-cifar100", "root": str(tmp_path)}), 0)


def test_download_skipped_when_files_exist(fake_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.utils

    def no_network(*args, **kwargs):
        raise AssertionError("must not download: the files are there (only their md5 differs)")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", no_network)
    dataset = build_dataset({"name": "seq-cifar100", "root": str(fake_root), "download": True})
    assert len(task_tensors(dataset, 0).train_y) == 20


def test_download_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.utils

    calls = []

    def failing_download(url, root, filename=None, md5=None):
        calls.append((url, md5))
        raise RuntimeError("File not found or corrupted.")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", failing_download)
    with pytest.raises(DatasetError) as error:
        task_tensors(build_dataset({"name": "seq-cifar10", "root": str(tmp_path), "download": True}), 0)
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert calls == [(url, "c58f30108f718f92721af3b95e74349a")]  # the archive stays md5-checked
    assert str(error.value).startswith(f"seq-cifar10: could not download {url} into {tmp_path}: File not found")


def test_download_then_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.utils

    def fake_download(url, root, filename=None, md5=None):
        assert (url, filename) == ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python.tar.gz")
        fake_datasets.write_cifar100(root, n_train=100, n_test=100)

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", fake_download)
    dataset = build_dataset({"name": "seq-cifar100", "root": str(tmp_path), "download": True})
    assert set(task_tensors(dataset, 9).train_y.tolist()) == set(range(90, 100))


class _RunsCode:
    """Unpickling this calls os.system, which would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("bad_file", ["data_batch_2", "batches.meta"])
def test_a_tampered_batch_runs_nothing_and_is_refused_naming_it(tmp_path: Path, bad_file: str) -> None:
    folder = fake_datasets.write_cifar10(tmp_path, n_per_batch=2, n_test=2)
    marker = tmp_path / "marker"
    entry = fake_datasets.cifar_entry([0, 1], "labels", "tampered")
    entry["filenames"] = _RunsCode(marker)
    fake_datasets.dump(folder / bad_file, entry)
    with pytest.raises(DatasetError) as error:
        task_tensors(build_dataset({"name": "seq-cifar10", "root": str(tmp_path)}), 0)
    first_line = str(error.value).splitlines()[0]
    assert first_line.startswith(f"seq-cifar10: corrupt file {bad_file} in {folder}: it holds code to run (")
    assert "system" in first_line and first_line.endswith("which a CIFAR file never does; refused unread")
    assert not marker.exists()


def test_an_object_array_is_not_image_data(tmp_path: Path) -> None:
    import numpy as np

    folder = fake_datasets.write_cifar10(tmp_path, n_per_batch=2, n_test=2)
    entry = fake_datasets.cifar_entry([0, 1], "labels", "objects")
    entry["data"] = np.array([[1] * 3072, [2] * 3072], dtype=object)  # elements pickled as ints: allowed, wrong dtype
    fake_datasets.dump(folder / "test_batch", entry)
    with pytest.raises(DatasetError, match=r"corrupt file test_batch in .*: its data is not a uint8 array of shape \(N, 3072\)"):
        task_tensors(build_dataset({"name": "seq-cifar10", "root": str(tmp_path)}), 0)


def _python2_pickle(entry: dict) -> bytes:
    """``entry`` pickled as Python 2 wrote the official batches: keys and raw array data as
    8-bit strings (BINSTRING opcodes), protocol 2."""
    import io
    import pickle
    import struct

    class Python2Pickler(pickle._Pickler):
        dispatch = pickle._Pickler.dispatch.copy()

        def save_bytes(self, obj: bytes) -> None:
            if len(obj) < 256:
                self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
            else:
                self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
            self.memoize(obj)

        dispatch[bytes] = save_bytes

    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump({key.encode(): value for key, value in entry.items()})
    return buffer.getvalue()


def test_batches_pickled_by_python_2_are_read(tmp_path: Path) -> None:
    folder = fake_datasets.write_cifar10(tmp_path, n_per_batch=4, n_test=10)
    for batch in range(1, 6):
        labels = [(i + batch) % 10 for i in range(4)]
        entry = fake_datasets.cifar_entry(labels, "labels", f"training batch {batch} of 5")
        (folder / f"data_batch_{batch}").write_bytes(_python2_pickle(entry))
    assert b"\x80\x02}q" in (folder / "data_batch_1").read_bytes()[:5] and b"U\x04data" in (folder / "data_batch_1").read_bytes()
    train_x, train_y, _, _ = build_dataset({"name": "seq-cifar10", "root": str(tmp_path)}).source()
    assert train_y.tolist()[:4] == [1, 2, 3, 4]  # batch 1: labels (i + 1) % 10
    assert fake_datasets.label_mismatches(train_x, train_y) == 0
    expected = fake_datasets.fake_image(3, 2, 32, 32, 3)  # example 2 of data_batch_1 has label 3
    assert torch.equal(train_x[2], torch.from_numpy(expected).permute(2, 0, 1))
