"""``seq-tinyimg``: Sequential Tiny ImageNet, 10 class-IL tasks of 20 classes each (64x64 RGB).

Files under ``<root>/tiny-imagenet-200/``: ``train/<wnid>/**/*.JPEG`` (read with torchvision's
``datasets.ImageFolder``; class indices follow the sorted wnids) and the validation set (used as the
test set) either in the archive's layout, ``val/images/*.JPEG`` + ``val/val_annotations.txt``
(tab-separated: file name, wnid, ...), or ImageFolder-style, ``val/<wnid>/**/*.JPEG``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammoth.datasets import register_dataset
from mammoth.datasets.base import ContinualDataset, download_and_extract_privately, missing_files_error
from mammoth.errors import DatasetError

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
FOLDER = "tiny-imagenet-200"
N_CLASSES = 200
IMAGE_SIZE = 64
EXPECTED = ["train/<wnid>/images/*.JPEG (200 wnid folders)", "val/images/*.JPEG", "val/val_annotations.txt"]

Source = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def how_to_get(root: str) -> str:
    """How to obtain the Tiny ImageNet files."""
    return f"rerun with dataset.download=true on the command line, or download {URL} and unzip it in {root}"


def download_tinyimagenet(dataset: str, root: str) -> None:
    """Download and unzip the archive into ``root`` (md5-checked; through a temporary directory, so
    runs downloading at once never collide) unless ``train/`` is already there."""
    if (Path(root) / FOLDER / "train").is_dir():
        return
    try:
        download_and_extract_privately(URL, root, FOLDER, md5=MD5)
    except Exception as error:
        raise DatasetError(
            f"{dataset}: could not download {URL} into {root}: {error}\nDownload it by hand and unzip it in {root}"
        ) from error


def check_layout(dataset: str, root: str) -> None:
    """Raise a DatasetError if ``train/`` or the validation set is absent."""
    base = Path(root) / FOLDER
    missing = []
    if not (base / "train").is_dir():
        missing.append("train/")
    val = base / "val"
    has_annotations = (val / "val_annotations.txt").is_file()
    has_class_folders = val.is_dir() and any(p.is_dir() and p.name != "images" for p in val.iterdir())
    if has_annotations and not (val / "images").is_dir():
        missing.append("val/images/")
    elif not has_annotations and not has_class_folders:
        missing.append("val/val_annotations.txt (or val/<wnid>/ folders)")
    if missing:
        raise missing_files_error(dataset, missing, EXPECTED, base, how_to_get(root))


def decode_images(dataset: str, paths: list[str], loader: Callable[[str], Any]) -> torch.Tensor:
    """Decode every image of ``paths`` once, with ``loader`` (PIL, RGB), into one uint8 (N, 3, 64, 64) tensor."""
    images = np.empty((len(paths), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for index, path in enumerate(paths):
        try:
            array = np.asarray(loader(path))
        except Exception as error:
            raise DatasetError(f"{dataset}: corrupt image {path}: {error}; expected a 64x64 JPEG") from error
        if array.shape != images.shape[1:]:
            raise DatasetError(f"{dataset}: image {path} has shape {array.shape}; expected 64x64 RGB")
        images[index] = array
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def read_image_folder(dataset: str, directory: Path, root: str) -> Any:
    """torchvision's ``ImageFolder`` over ``directory``, its errors turned into DatasetErrors."""
    from torchvision import datasets  # lazy: torchvision (heavy), kept off import mammoth.datasets

    try:
        return datasets.ImageFolder(str(directory))
    except Exception as error:
        raise DatasetError(
            f"{dataset}: cannot read the wnid folders of {directory}: {error}\n"
            f"Expected {', '.join(EXPECTED)} under {Path(root) / FOLDER}; {how_to_get(root)}"
        ) from error


def read_val_annotations(dataset: str, val: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """(path, label) pairs of the archive's ``val/images/`` listed in ``val/val_annotations.txt``."""
    samples = []
    annotations = val / "val_annotations.txt"
    lines = annotations.read_text(encoding="utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in class_to_idx:
            raise DatasetError(
                f"{dataset}: corrupt line {number} of {annotations}: {line[:80]!r}; "
                "expected '<file name>\\t<wnid of a train/ folder>\\t...'"
            )
        path = val / "images" / fields[0]
        if not path.is_file():
            raise DatasetError(f"{dataset}: {fields[0]} listed in {annotations} is missing from {val / 'images'}")
        samples.append((str(path), class_to_idx[fields[1]]))
    return samples


def read_val_folders(dataset: str, val: Path, root: str, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """(path, label) pairs of an ImageFolder-style ``val/<wnid>/``, labelled with the train class indices."""
    folder = read_image_folder(dataset, val, root)
    unknown = sorted(set(folder.classes) - set(class_to_idx))
    if unknown:
        raise DatasetError(
            f"{dataset}: val/ has folders {', '.join(unknown[:5])} that are not wnids of train/, in {val}"
        )
    return [(path, class_to_idx[folder.classes[label]]) for path, label in folder.samples]


def read_tinyimagenet(dataset: str, root: str, download: bool) -> Source:
    """Read train/ and val/ under ``<root>/tiny-imagenet-200/``: (train_x, train_y, test_x, test_y)."""
    if download:
        download_tinyimagenet(dataset, root)
    check_layout(dataset, root)
    base = Path(root) / FOLDER
    train = read_image_folder(dataset, base / "train", root)
    if len(train.classes) != N_CLASSES:
        raise DatasetError(
            f"{dataset}: found {len(train.classes)} wnid folders in {base / 'train'}; expected {N_CLASSES}\n"
            f"To get them: {how_to_get(root)}"
        )
    if (base / "val" / "val_annotations.txt").is_file():
        val_samples = read_val_annotations(dataset, base / "val", train.class_to_idx)
    else:
        val_samples = read_val_folders(dataset, base / "val", root, train.class_to_idx)
    train_x = decode_images(dataset, [path for path, _ in train.samples], train.loader)
    test_x = decode_images(dataset, [path for path, _ in val_samples], train.loader)
    train_y = torch.tensor([label for _, label in train.samples], dtype=torch.int64)
    test_y = torch.tensor([label for _, label in val_samples], dtype=torch.int64)
    return train_x, train_y, test_x, test_y


@register_dataset
class SequentialTinyImageNet(ContinualDataset):
    """Sequential Tiny ImageNet: 10 class-IL tasks of 20 classes each; the val split is the test set."""

    name = "seq-tinyimg"
    setting = "class-il"
    default_n_tasks = 10
    n_classes_per_task = 20
    input_shape = (3, 64, 64)
    mean = (0.4802, 0.4480, 0.3975)
    std = (0.2770, 0.2691, 0.2821)
    augmentation = "crop-flip"
    default_backbone = "resnet18"
    default_batch_size = 32
    default_n_epochs = 50  # the original seq-tinyimg default; its best arguments use 100 (the presets)

    def load_source(self) -> Source:
        """Decode every train and val image once (downloading the archive first if ``download``)."""
        return read_tinyimagenet(self.name, self.config.root, self.config.download)
