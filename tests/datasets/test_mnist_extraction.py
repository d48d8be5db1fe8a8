"""Extracting gzipped IDX files: runs that extract at once never collide, and nothing is left
half-written."""

from __future__ import annotations

import gzip
import shutil
import threading
from pathlib import Path

import pytest

from concurrently import run_concurrently
from fake_datasets import write_mnist
from mammoth.datasets.mnist import extract_gzipped_idx_files
from mammoth.errors import DatasetError
from task_tensors import task_tensors


def gzip_all(raw: Path) -> dict[str, bytes]:
    """Replace every IDX file in ``raw`` by its ``.gz``; return the original bytes by name."""
    originals = {}
    for path in sorted(raw.iterdir()):
        originals[path.name] = path.read_bytes()
        (raw / f"{path.name}.gz").write_bytes(gzip.compress(originals[path.name]))
        path.unlink()
    return originals


def test_two_extractions_at_once_both_succeed_with_whole_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    raw = write_mnist(tmp_path, n_train=40, n_test=20)
    originals = gzip_all(raw)
    both_writing = threading.Barrier(2, timeout=30)
    copy = shutil.copyfileobj

    def copy_together(source, destination, *args):
        # both threads have opened their temporary file before either renames it: a shared
        # temporary name would make one of them fail or publish the other's half-written file
        both_writing.wait()
        copy(source, destination, *args)

    monkeypatch.setattr(shutil, "copyfileobj", copy_together)
    written: list[list[str]] = []
    errors = run_concurrently(lambda: written.append(extract_gzipped_idx_files(raw)))
    assert errors == []
    assert [sorted(names) for names in written] == [sorted(originals)] * 2  # each extracted every file
    for name, content in originals.items():
        assert (raw / name).read_bytes() == content
    assert sorted(path.name for path in raw.iterdir()) == sorted([*originals, *(f"{name}.gz" for name in originals)])


def test_a_disk_full_extraction_is_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import errno

    from mammoth.datasets import build_dataset

    raw = write_mnist(tmp_path, n_train=40, n_test=20)
    gzip_all(raw)

    def disk_full(source, destination, *args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", disk_full)
    with pytest.raises(DatasetError) as error:
        task_tensors(build_dataset({"name": "seq-mnist", "root": str(tmp_path)}), 0)
    target = raw / "train-images-idx3-ubyte"
    assert str(error.value) == (
        f"seq-mnist: could not write the extracted file {target}: no space left on device (the disk is full); "
        "no extracted file was written"
    )
    assert all(path.name.endswith(".gz") for path in raw.iterdir())


def test_a_temporary_file_left_by_a_killed_extraction_is_removed_by_the_next(tmp_path: Path):
    import os
    import time

    raw = write_mnist(tmp_path, n_train=40, n_test=20)
    originals = gzip_all(raw)
    left = raw / ".train-images-idx3-ubyte.k1ll3d_x.tmp"
    left.write_bytes(b"half an image file")
    os.utime(left, (time.time() - 600, time.time() - 600))
    extract_gzipped_idx_files(raw)
    assert sorted(path.name for path in raw.iterdir()) == sorted([*originals, *(f"{name}.gz" for name in originals)])
