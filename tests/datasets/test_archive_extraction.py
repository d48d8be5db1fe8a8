"""Downloaded archives (CIFAR, Tiny ImageNet) are extracted in a private temporary directory and
moved into the dataset root, so runs downloading at once never collide and nothing is overwritten."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from concurrently import run_concurrently
from mammoth.datasets.base import download_and_extract_privately


def fake_archive(writes: dict[str, bytes], barrier: threading.Barrier | None = None):
    """A stand-in for torchvision's download_and_extract_archive that writes ``writes`` under its root."""
    roots: list[str] = []

    def extract(url: str, root: str, **options) -> None:
        roots.append(root)
        for name, content in writes.items():
            path = Path(root) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content[: len(content) // 2])
            if barrier is not None:
                barrier.wait()  # both runs are half-way through the same file
            path.write_bytes(content)

    return extract, roots


def test_two_runs_extracting_at_once_get_whole_files_and_leave_no_temporary_directory(tmp_path, monkeypatch):
    import torchvision.datasets.utils

    files = {"cifar-10-batches-py/data_batch_1": b"a" * 1000, "cifar-10-batches-py/batches.meta": b"m" * 100}
    extract, roots = fake_archive(files, threading.Barrier(2, timeout=30))
    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", extract)
    errors = run_concurrently(
        lambda: download_and_extract_privately("https://example.org/cifar.tgz", tmp_path, "cifar-10-batches-py", md5="x"))
    assert errors == [] and len(set(roots)) == 2  # each run extracted in a directory of its own
    for name, content in files.items():
        assert (tmp_path / name).read_bytes() == content
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cifar-10-batches-py"]


def test_files_already_there_are_kept_and_missing_ones_added(tmp_path, monkeypatch):
    import torchvision.datasets.utils

    (tmp_path / "tiny-imagenet-200" / "val").mkdir(parents=True)
    (tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt").write_text("the user's own")
    extract, _ = fake_archive({"tiny-imagenet-200/val/val_annotations.txt": b"from the archive",
                               "tiny-imagenet-200/train/n0/images/a.JPEG": b"jpeg"})
    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", extract)
    download_and_extract_privately("https://example.org/tiny.zip", tmp_path, "tiny-imagenet-200", md5="x")
    assert (tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt").read_text() == "the user's own"
    assert (tmp_path / "tiny-imagenet-200" / "train" / "n0" / "images" / "a.JPEG").read_bytes() == b"jpeg"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny-imagenet-200"]


def test_a_failed_download_leaves_no_temporary_directory(tmp_path, monkeypatch):
    import torchvision.datasets.utils

    def failing(url: str, root: str, **options) -> None:
        (Path(root) / "cifar-10-python.tar.gz").write_bytes(b"half an archive")
        raise RuntimeError("File not found or corrupted.")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", failing)
    with pytest.raises(RuntimeError, match="File not found or corrupted."):
        download_and_extract_privately("https://example.org/cifar.tgz", tmp_path, "cifar-10-batches-py")
    assert list(tmp_path.iterdir()) == []
