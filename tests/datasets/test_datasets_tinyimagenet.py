"""seq-tinyimg over a fake JPEG tree in the real Tiny ImageNet layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import fake_datasets
from mammoth.datasets import build_dataset
from mammoth.errors import DatasetError
from task_tensors import task_tensors


def test_class_il_tasks(fake_root: Path) -> None:
    dataset = build_dataset({"name": "seq-tinyimg", "root": str(fake_root)})
    for task in (0, 9):
        data = task_tensors(dataset, task)
        assert data.train_x.shape == (40, 3, 64, 64) and data.train_x.dtype == torch.float32
        assert data.test_x.shape == (20, 3, 64, 64) and data.test_y.dtype == torch.int64
        expected = set(range(task * 20, (task + 1) * 20))
        assert set(data.train_y.tolist()) == expected == set(data.test_y.tolist())
        assert fake_datasets.label_mismatches(data.train_x, data.train_y, fake_datasets.JPEG_TOLERANCE) == 0
        assert fake_datasets.label_mismatches(data.test_x, data.test_y, fake_datasets.JPEG_TOLERANCE) == 0
    train_x, train_y, test_x, test_y = dataset.source()
    assert (len(train_y), len(test_y)) == (400, 200)
    assert torch.equal(torch.bincount(train_y), torch.full((200,), 2))


def test_labels_follow_sorted_wnids(fake_root: Path) -> None:
    _, _, test_x, test_y = build_dataset({"name": "seq-tinyimg", "root": str(fake_root)}).source()
    # val_<k>.JPEG of the annotations file has wnid TINY_WNIDS[k % 200], listed in order k.
    assert test_y.tolist() == list(range(200))


def test_imagefolder_style_val(tmp_path: Path) -> None:
    fake_datasets.write_tinyimagenet(tmp_path, val_layout="folders")
    data = task_tensors(build_dataset({"name": "seq-tinyimg", "root": str(tmp_path)}), 3)
    assert set(data.test_y.tolist()) == set(range(60, 80)) and data.test_x.shape == (20, 3, 64, 64)
    assert fake_datasets.label_mismatches(data.test_x, data.test_y, fake_datasets.JPEG_TOLERANCE) == 0


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as error:
        task_tensors(build_dataset({"name": "seq-tinyimg", "root": str(tmp_path)}), 0)
    message = str(error.value)
    first_line = message.splitlines()[0]
    assert "missing train/" in first_line and "val/val_annotations.txt" in first_line
    assert str(tmp_path / "tiny-imagenet-200") in first_line
    assert "dataset.download=true" in message and "http://cs231n.stanford.edu/tiny-imagenet-200.zip" in message


def test_wrong_number_of_classes(tmp_path: Path) -> None:
    base = fake_datasets.write_tinyimagenet(tmp_path)
    shutil.rmtree(base / "train" / fake_datasets.TINY_WNIDS[7])
    with pytest.raises(DatasetError, match=r"found 199 wnid folders in .*train; expected 200"):
        task_tensors(build_dataset({"name": "seq-tinyimg", "root": str(tmp_path)}), 0)


def test_corrupt_jpeg_is_named(tmp_path: Path) -> None:
    base = fake_datasets.write_tinyimagenet(tmp_path)
    bad = base / "train" / "n00000005" / "images" / "n00000005_0.JPEG"
    bad.write_bytes(b"\xff\xd8garbage, not a jpeg")
    with pytest.raises(DatasetError) as error:
        task_tensors(build_dataset({"name": "seq-tinyimg", "root": str(tmp_path)}), 0)
    assert f"corrupt image {bad}" in str(error.value).splitlines()[0]


def test_bad_annotation_line(tmp_path: Path) -> None:
    base = fake_datasets.write_tinyimagenet(tmp_path)
    annotations = base / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text() + "val_0.JPEG\tn99999999\t0\t0\t63\t63\n")
    with pytest.raises(DatasetError, match=r"corrupt line 201 of .*val_annotations.txt: 'val_0.JPEG\\tn99999999"):
        task_tensors(build_dataset({"name": "seq-tinyimg", "root": str(tmp_path)}), 0)


def test_download_extracts_the_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.utils

    calls = []

    def fake_download(url, download_root, md5=None):
        calls.append((url, download_root, md5))
        fake_datasets.write_tinyimagenet(download_root)

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", fake_download)
    dataset = build_dataset({"name": "seq-tinyimg", "root": str(tmp_path), "download": True})
    assert len(task_tensors(dataset, 0).train_y) == 20
    url, md5 = "http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de"
    assert [(called_url, called_md5) for called_url, _, called_md5 in calls] == [(url, md5)]
    staging = Path(calls[0][1])  # a private directory under the root, removed once the files moved in
    assert staging.parent == tmp_path and staging.name.startswith(".tiny-imagenet-200.") and not staging.exists()
    dataset = build_dataset({"name": "seq-tinyimg", "root": str(tmp_path), "download": True})
    task_tensors(dataset, 0)
    assert len(calls) == 1  # already there: not downloaded again
