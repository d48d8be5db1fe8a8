"""CIFAR benchmarks: ``seq-cifar10`` (5 tasks x 2 classes) and ``seq-cifar100`` (10 tasks x 10 classes).

The files are the pickled batches of the official "python version" archives, under
``<root>/cifar-10-batches-py/`` and ``<root>/cifar-100-python/``, read by torchvision's
``datasets.CIFAR10`` / ``datasets.CIFAR100``.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from mammoth.datasets import register_dataset
from mammoth.datasets.base import ContinualDataset, missing_files_error
from mammoth.errors import DatasetError

Source = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def lenient_cifar_class(torchvision_class: type) -> type:
    """A subclass of torchvision's CIFAR class that checks only that its files exist, not their md5.

    Downloads stay md5-checked: ``download()`` still hands the archive's md5 to torchvision's helper.
    """

    class LenientCIFAR(torchvision_class):
        def _check_integrity(self) -> bool:
            """True when every batch and the meta file exist (no md5 check)."""
            return all(os.path.isfile(path) for path in expected_paths(self))

        def _load_meta(self) -> None:
            """Read the class names from the meta file (no md5 check)."""
            with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {name: index for index, name in enumerate(self.classes)}

    LenientCIFAR.__name__ = LenientCIFAR.__qualname__ = f"Lenient{torchvision_class.__name__}"
    return LenientCIFAR


def expected_names(reader: Any) -> list[str]:
    """File names a torchvision CIFAR class (or instance) reads: the train and test batches, then the meta file."""
    return [name for name, _ in reader.train_list + reader.test_list] + [reader.meta["filename"]]


def expected_paths(reader: Any) -> list[str]:
    """Full paths of :func:`expected_names` under the root of the torchvision CIFAR instance ``reader``."""
    folder = os.path.join(reader.root, reader.base_folder)
    return [os.path.join(folder, name) for name in expected_names(reader)]


def unreadable_file(folder: Path, names: list[str], label_key: str, meta_key: str) -> tuple[str, str]:
    """The first file of ``names`` that does not unpickle to the expected dict, and why."""
    for name in names:
        keys = (meta_key,) if name in ("batches.meta", "meta") else ("data", label_key)
        try:
            with open(folder / name, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            missing = [key for key in keys if key not in entry]
        except Exception as error:  # noqa: BLE001 - any unpickling failure means the file is corrupt
            return name, f"cannot be unpickled: {type(error).__name__}: {error}"
        if missing:
            return name, f"has no key(s) {', '.join(missing)}"
    return ", ".join(names), "inconsistent image and label arrays"


def download_cifar(dataset: str, reader: Any, root: str) -> None:
    """Download and extract the archive of the torchvision CIFAR class ``reader`` into ``root`` (md5-checked)."""
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(reader.url, root, filename=reader.filename, md5=reader.tgz_md5)
    except Exception as error:
        raise DatasetError(
            f"{dataset}: could not download {reader.url} into {root}: {error}\n"
            f"Download it by hand and extract it in {root} (it creates {reader.base_folder}/)"
        ) from error


def read_cifar(dataset: str, class_name: str, root: str, download: bool) -> Source:
    """Read the CIFAR archive of ``class_name`` ("CIFAR10" or "CIFAR100") under ``root``."""
    from torchvision import datasets

    tv_class = lenient_cifar_class(getattr(datasets, class_name))
    folder = Path(root) / tv_class.base_folder
    how = (
        f"rerun with dataset.download=true on the command line, or download {tv_class.url} "
        f"and extract it in {root} (it creates {tv_class.base_folder}/)"
    )
    names = expected_names(tv_class)
    missing = [name for name in names if not (folder / name).is_file()]
    if missing and download:
        download_cifar(dataset, tv_class, root)
        missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise missing_files_error(dataset, missing, names, folder, how)
    label_key = "labels" if class_name == "CIFAR10" else "fine_labels"
    tensors = []
    for train in (True, False):
        try:
            data = tv_class(root, train=train, download=False)
            x = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()
            y = torch.as_tensor(data.targets, dtype=torch.int64)
            if len(x) != len(y):
                raise ValueError(f"{len(x)} images but {len(y)} labels")
        except Exception as error:
            batches = [name for name, _ in (tv_class.train_list if train else tv_class.test_list)]
            candidates = batches + [tv_class.meta["filename"]]
            name, problem = unreadable_file(folder, candidates, label_key, tv_class.meta["key"])
            raise DatasetError(
                f"{dataset}: corrupt file {name} in {folder}: {problem}\nDelete {folder}, then {how}"
            ) from error
        tensors += [x, y]
    return tensors[0], tensors[1], tensors[2], tensors[3]


class _CIFARBenchmark(ContinualDataset):
    """Shared reader and constants of the CIFAR benchmarks; ``torchvision_class`` names the reader."""

    torchvision_class = "CIFAR10"
    setting = "class-il"
    input_shape = (3, 32, 32)
    augmentation = "crop-flip"
    default_backbone = "resnet18"
    default_batch_size = 32
    default_n_epochs = 50

    def load_source(self) -> Source:
        """Read the pickled batches (downloading the archive first if ``download``)."""
        return read_cifar(self.name, self.torchvision_class, self.config.root, self.config.download)


@register_dataset
class SequentialCIFAR10(_CIFARBenchmark):
    """Sequential CIFAR-10: 5 class-IL tasks of 2 classes each."""

    name = "seq-cifar10"
    torchvision_class = "CIFAR10"
    default_n_tasks = 5
    n_classes_per_task = 2
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2615)


@register_dataset
class SequentialCIFAR100(_CIFARBenchmark):
    """Sequential CIFAR-100: 10 class-IL tasks of 10 (fine) classes each."""

    name = "seq-cifar100"
    torchvision_class = "CIFAR100"
    default_n_tasks = 10
    n_classes_per_task = 10
    mean = (0.5071, 0.4867, 0.4408)
    std = (0.2675, 0.2565, 0.2761)
    default_lr_milestones = (35, 45)  # the original's default: --lr_scheduler multisteplr --lr_milestones 35 45
