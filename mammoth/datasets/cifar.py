"""CIFAR benchmarks: ``seq-cifar10`` (5 tasks x 2 classes) and ``seq-cifar100`` (10 tasks x 10 classes).

The files are the pickled batches of the official "python version" archives, under
``<root>/cifar-10-batches-py/`` and ``<root>/cifar-100-python/`` (the names torchvision's
``datasets.CIFAR10`` / ``datasets.CIFAR100`` list). They are read by a restricted unpickler that
only rebuilds numpy arrays, so a tampered file cannot run code; a file that tries is refused.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammoth.datasets import register_dataset
from mammoth.datasets.base import ContinualDataset, download_and_extract_privately, missing_files_error
from mammoth.errors import DatasetError

Source = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class BatchUnpickler(pickle.Unpickler):
    """Reads a pickled CIFAR batch without running code: the only callables it resolves are
    numpy's array reconstruction and ``_codecs.encode`` (how protocol 2 stores bytes); any
    other global (``os.system``, ``builtins.eval``...) is refused before anything runs."""

    def find_class(self, module: str, name: str) -> Any:
        """The allowed callables; an UnpicklingError naming any other."""
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's _reconstruct, whatever its module
        allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
        if (module, name) in allowed:
            return allowed[module, name]
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def unpickle_batch(path: Path) -> Any:
    """The object pickled in ``path``, read by :class:`BatchUnpickler` (Python 2 strings as latin-1)."""
    with open(path, "rb") as file:
        return BatchUnpickler(file, encoding="latin1").load()


def read_batch(path: Path, label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of the batch file ``path``; a ValueError
    (or an unpickling error) says why the file is not a CIFAR batch."""
    entry = unpickle_batch(path)
    if not isinstance(entry, dict):
        raise ValueError(f"holds a {type(entry).__name__}, not a dict")
    missing = [key for key in ("data", label_key) if key not in entry]
    if missing:
        raise ValueError(f"has no key(s) {', '.join(missing)}")
    data, labels = entry["data"], entry[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"its data is not a uint8 array of shape (N, 3072): {getattr(data, 'dtype', type(data).__name__)} "
                         f"{getattr(data, 'shape', '')}")
    if not isinstance(labels, list) or not all(isinstance(label, int) and not isinstance(label, bool) for label in labels):
        raise ValueError(f"its {label_key} are not a list of integers")
    if len(labels) != len(data):
        raise ValueError(f"{len(data)} images but {len(labels)} labels")
    x = torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, 32, 32)
    return x, torch.tensor(labels, dtype=torch.int64)


def check_meta(path: Path, key: str) -> None:
    """A ValueError (or an unpickling error) if ``path`` is not a meta file with a list of names under ``key``."""
    entry = unpickle_batch(path)
    if not isinstance(entry, dict) or key not in entry:
        raise ValueError(f"has no key(s) {key}")


def expected_names(reader: Any) -> list[str]:
    """File names a torchvision CIFAR class (or instance) reads: the train and test batches, then the meta file."""
    return [name for name, _ in reader.train_list + reader.test_list] + [reader.meta["filename"]]


def download_cifar(dataset: str, reader: Any, root: str) -> None:
    """Download and extract the archive of the torchvision CIFAR class ``reader`` into ``root``
    (md5-checked; through a temporary directory, so runs downloading at once never collide)."""
    try:
        download_and_extract_privately(reader.url, root, reader.base_folder, filename=reader.filename, md5=reader.tgz_md5)
    except Exception as error:
        raise DatasetError(
            f"{dataset}: could not download {reader.url} into {root}: {error}\n"
            f"Download it by hand and extract it in {root} (it creates {reader.base_folder}/)"
        ) from error


def read_cifar(dataset: str, class_name: str, root: str, download: bool) -> Source:
    """Read the CIFAR archive of ``class_name`` ("CIFAR10" or "CIFAR100") under ``root``."""
    from torchvision import datasets  # lazy: torchvision (heavy), kept off import mammoth.datasets

    tv_class = getattr(datasets, class_name)  # for its file names and URL; mammoth reads the files
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
    splits = [[name for name, _ in tv_class.train_list], [name for name, _ in tv_class.test_list]]
    tensors = []
    for name in [*splits[0], *splits[1], tv_class.meta["filename"]]:
        try:
            if name == tv_class.meta["filename"]:
                check_meta(folder / name, tv_class.meta["key"])
            else:
                tensors.append(read_batch(folder / name, label_key))
        except Exception as error:  # noqa: BLE001 - whatever is wrong, name the file in one line
            problem = str(error) if isinstance(error, ValueError) else f"cannot be unpickled: {type(error).__name__}: {error}"
            if isinstance(error, pickle.UnpicklingError) and str(error).startswith("refused global"):
                problem = f"it holds code to run ({str(error).removeprefix('refused global ')}), which a CIFAR file never does; refused unread"
            raise DatasetError(f"{dataset}: corrupt file {name} in {folder}: {problem}\nDelete {folder}, then {how}") from None
    n_train = len(splits[0])
    train, test = tensors[:n_train], tensors[n_train:]
    return (torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]),
            torch.cat([x for x, _ in test]), torch.cat([y for _, y in test]))


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
    asymmetric_noise = "cifar10"


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
    asymmetric_noise = "cifar100"


@register_dataset
class SequentialCIFAR100224(SequentialCIFAR100):
    """Sequential CIFAR-100 at 224 pixels (the original's ``seq-cifar100-224``, for pretrained ViTs):
    the files and tasks of ``seq-cifar100``, held in memory at 32x32 and upscaled per batch.
    Training: ``RandomResizedCrop(224, BICUBIC)`` + flip of the 32x32 image; test: ``Resize(224,
    BICUBIC)``; ImageNet's mean and std. The examples' ``not_aug_inputs`` are the 32x32 images,
    as in the original."""

    name = "seq-cifar100-224"
    input_shape = (3, 224, 224)
    source_shape = (3, 32, 32)
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)
    augmentation = "random-resized-crop-flip"
    default_backbone = "timm"
    default_batch_size = 128
    default_n_epochs = 20
    default_lr_milestones = ()
