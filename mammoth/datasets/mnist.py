"""MNIST-family benchmarks: ``seq-mnist``, ``seq-fashion-mnist`` (class-IL), ``perm-mnist``, ``rot-mnist`` (domain-IL).

The files are the uncompressed IDX files under ``<root>/<MNIST|FashionMNIST>/raw/``, exactly where
torchvision's ``datasets.MNIST`` / ``datasets.FashionMNIST`` look for them (and download them);
mammoth parses them itself.
"""

from __future__ import annotations

import gzip
import math
import shutil
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from mammoth.datasets import register_dataset
from mammoth.datasets.base import ContinualDataset, missing_files_error
from mammoth.errors import ConfigError, DatasetError
from mammoth.files import atomic_file, remove_stale_temporaries

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
# split -> (images file, labels file), the uncompressed names torchvision reads.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DOWNLOAD_PAGES = {
    "MNIST": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "FashionMNIST": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}

Source = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def how_to_get(folder: str, raw: Path) -> str:
    """How to obtain the IDX files of ``folder`` ("MNIST" or "FashionMNIST")."""
    return (
        f"rerun with dataset.download=true on the command line, or download the four *-ubyte.gz files from "
        f"{DOWNLOAD_PAGES[folder]}, gunzip them and place them in {raw}"
    )


def idx_header_problem(path: Path, magic: int) -> str | None:
    """Why ``path`` is not a well-formed IDX file with ``magic`` (None when its header and size agree)."""
    n_dims = magic & 0xFF
    header_size = 4 * (n_dims + 1)
    with open(path, "rb") as f:
        header = f.read(header_size)
    if len(header) < header_size:
        return f"{len(header)} bytes, shorter than the {header_size}-byte IDX header"
    found = int.from_bytes(header[:4], "big")
    if found != magic:
        return f"magic number {found}, expected {magic}"
    dims = [int.from_bytes(header[4 * i : 4 * i + 4], "big") for i in range(1, n_dims + 1)]
    expected_size = header_size + math.prod(dims)
    size = path.stat().st_size
    if size != expected_size:
        return f"{size} bytes, but its header {dims} implies {expected_size}"
    return None


def extract_gzipped_idx_files(raw: Path) -> list[str]:
    """Decompress ``NAME.gz`` next to each missing IDX file ``NAME`` (as distributed, e.g. by
    Debian's dataset-fashion-mnist); return the names written. Each is written atomically
    through a temporary file of its own, so runs extracting at once never collide; a corrupt or
    truncated ``.gz`` raises a ``ValueError`` naming it and leaves nothing behind."""
    names = [name for pair in IDX_FILES.values() for name in pair]
    if raw.is_dir():
        remove_stale_temporaries(raw, before=time.time(), names=names)  # an extraction killed mid-write
    written = []
    for name in names:
        target, packed = raw / name, raw / f"{name}.gz"
        if not target.is_file() and packed.is_file():
            with atomic_file(target, "extracted file") as destination:
                try:
                    with gzip.open(packed, "rb") as source:
                        shutil.copyfileobj(source, destination)
                except (gzip.BadGzipFile, EOFError, zlib.error) as error:
                    reason = "it ends early (truncated)" if isinstance(error, EOFError) else str(error) or type(error).__name__
                    raise ValueError(f"{packed} is not a readable gzip file: {reason}") from None
            written.append(name)
    return written


def check_idx_files(dataset: str, folder: str, raw: Path) -> None:
    """Raise a DatasetError if an IDX file of ``folder`` is missing from ``raw`` or has a bad header."""
    expected = [name for pair in IDX_FILES.values() for name in pair]
    missing = [name for name in expected if not (raw / name).is_file()]
    if missing:
        raise missing_files_error(dataset, missing, expected, raw, how_to_get(folder, raw))
    for images, labels in IDX_FILES.values():
        for name, magic in ((images, IMAGES_MAGIC), (labels, LABELS_MAGIC)):
            problem = idx_header_problem(raw / name, magic)
            if problem is not None:
                raise corrupt_error(dataset, raw / name, problem, folder, raw)


def corrupt_error(dataset: str, path: Path, problem: str, folder: str, raw: Path) -> DatasetError:
    """A DatasetError for the corrupt IDX file ``path``."""
    return DatasetError(
        f"{dataset}: corrupt file {path} ({problem}); expected an uncompressed IDX file\n"
        f"Delete it, then {how_to_get(folder, raw)}"
    )


def download_idx(dataset: str, folder: str, root: str, raw: Path) -> None:
    """Download and extract the IDX files of ``folder`` with torchvision (md5-checked, tries its mirrors)."""
    from torchvision import datasets  # lazy: torchvision (heavy), kept off import mammoth.datasets

    try:
        # download() alone: constructing the dataset would first load a legacy processed/*.pt file.
        reader = object.__new__(getattr(datasets, folder))
        reader.root = root
        reader.download()
    except Exception as error:
        raise DatasetError(
            f"{dataset}: could not download the {folder} files into {raw}: {error}\n"
            f"Download them by hand from {DOWNLOAD_PAGES[folder]}, gunzip them and place them in {raw}"
        ) from error


def read_idx(path: Path, magic: int) -> torch.Tensor:
    """The uint8 array of the IDX file ``path`` (its header already checked by :func:`idx_header_problem`)."""
    n_dims = magic & 0xFF
    data = path.read_bytes()
    dims = [int.from_bytes(data[4 * i : 4 * i + 4], "big") for i in range(1, n_dims + 1)]
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8, offset=4 * (n_dims + 1)).reshape(dims).copy())


def read_idx_dataset(dataset: str, folder: str, root: str, download: bool) -> Source:
    """Read the IDX files of ``<root>/<folder>/raw/``: (train_x, train_y, test_x, test_y).

    mammoth parses the IDX files itself: torchvision's readers would first load a legacy
    ``<folder>/processed/*.pt`` file if one exists (with ``torch.load``, which older torchvision
    versions call without ``weights_only``), so nothing in ``processed/`` is ever read.
    """
    raw = Path(root) / folder / "raw"
    try:
        extract_gzipped_idx_files(raw)
    except ConfigError as error:  # the extracted file cannot be written (disk full, read-only)
        raise DatasetError(f"{dataset}: {error}") from None
    except ValueError as error:
        raise DatasetError(f"{dataset}: corrupt file {error}\nDelete it, then {how_to_get(folder, raw)}") from None
    if download and not all((raw / name).is_file() for pair in IDX_FILES.values() for name in pair):
        download_idx(dataset, folder, root, raw)
    check_idx_files(dataset, folder, raw)
    splits = []
    for images, labels in IDX_FILES.values():
        x, y = read_idx(raw / images, IMAGES_MAGIC), read_idx(raw / labels, LABELS_MAGIC)
        if len(x) != len(y):
            problem = f"{len(x)} images but {len(y)} labels in {labels}"
            raise corrupt_error(dataset, raw / images, problem, folder, raw)
        splits += [x.unsqueeze(1).contiguous(), y.long()]
    return splits[0], splits[1], splits[2], splits[3]


class _IDXBenchmark(ContinualDataset):
    """Shared reader of the MNIST-family benchmarks; ``folder`` names the torchvision class."""

    folder = "MNIST"
    input_shape = (1, 28, 28)
    n_classes_per_task = 2
    augmentation = None
    mean = None  # no normalisation: pixels in [0, 1], as the original Mammoth feeds them
    std = None
    default_backbone = "mnistmlp"
    default_n_epochs = 1

    def load_source(self) -> Source:
        """Read the IDX files under ``<root>/<folder>/raw/`` (downloading them first if ``download``)."""
        return read_idx_dataset(self.name, self.folder, self.config.root, self.config.download)


@register_dataset
class SequentialMNIST(_IDXBenchmark):
    """Sequential MNIST: 5 class-IL tasks of 2 digits each."""

    name = "seq-mnist"
    setting = "class-il"
    default_n_tasks = 5
    default_batch_size = 64


@register_dataset
class SequentialFashionMNIST(_IDXBenchmark):
    """Sequential Fashion-MNIST: 5 class-IL tasks of 2 clothing classes each."""

    name = "seq-fashion-mnist"
    folder = "FashionMNIST"
    setting = "class-il"
    default_n_tasks = 5
    default_batch_size = 64


@register_dataset
class PermutedMNIST(_IDXBenchmark):
    """Permuted MNIST: domain-IL, all 10 digits in every task, each task with its own fixed pixel permutation.

    Every task is permuted, task 0 included (no identity task). The permutations are drawn in task
    order from a ``torch.Generator`` seeded with the run seed, so task t's permutation depends only on
    the seed and t, not on ``n_tasks``.
    """

    name = "perm-mnist"
    setting = "domain-il"
    default_n_tasks = 20
    n_classes_per_task = 10
    default_batch_size = 128

    def task_permutation(self, task: int) -> torch.Tensor:
        """The pixel permutation (a LongTensor of H*W indices) of ``task``."""
        self._check_task(task)
        generator = torch.Generator().manual_seed(self.seed)
        n_pixels = self.input_shape[1] * self.input_shape[2]
        for _ in range(task + 1):
            permutation = torch.randperm(n_pixels, generator=generator)
        return permutation

    def apply_task_transform(self, task: int, x: torch.Tensor) -> torch.Tensor:
        """Permute the pixels of every image of ``x`` (N, 1, H, W) with the permutation of ``task``."""
        return x.flatten(2)[:, :, self.task_permutation(task)].reshape(x.shape)


@register_dataset
class RotatedMNIST(_IDXBenchmark):
    """Rotated MNIST: domain-IL, all 10 digits in every task, each task rotated by its own fixed angle.

    Every task is rotated, task 0 included (no identity task), by an angle uniform in [0, 180)
    degrees. The angles are drawn in task order from a ``torch.Generator`` seeded with the run seed,
    so task t's angle depends only on the seed and t, not on ``n_tasks``. Rotation is nearest-neighbour
    about the image centre, filling with black.
    """

    name = "rot-mnist"
    setting = "domain-il"
    default_n_tasks = 20
    n_classes_per_task = 10
    default_batch_size = 128

    def task_angle(self, task: int) -> float:
        """The rotation angle of ``task``, in degrees, in [0, 180)."""
        self._check_task(task)
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(task + 1):
            angle = float(torch.rand((), generator=generator)) * 180.0
        return angle

    def apply_task_transform(self, task: int, x: torch.Tensor) -> torch.Tensor:
        """Rotate every image of ``x`` (N, 1, H, W) by the angle of ``task``, all at once."""
        from torchvision.transforms.v2 import functional as F  # lazy: torchvision (heavy), kept off import mammoth.datasets

        return F.rotate(x, self.task_angle(task)).contiguous()
