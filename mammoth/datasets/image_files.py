"""Image files streamed from disk: a :class:`~mammoth.datasets.source.DataSource` that keeps only
paths and labels in memory and decodes the images of each batch when it is read.

``root/<class>/*.jpg`` folders (ImageNet-R's layout, CUB's ``images/``, a user's own data) are
listed by :func:`list_image_folder`; :class:`ImageFileSource` decodes with Pillow (JPEG, PNG,
...), resizes the shorter side to ``size`` and crops the centre ``size x size`` (the
original Mammoth's test transform for 224-pixel benchmarks: ``Resize`` then ``CenterCrop``), so
every batch is one ``(batch, 3, size, size)`` tensor; augmentation is applied to the batch later.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from mammoth.datasets.source import DataSource
from mammoth.errors import DatasetError

#: File suffixes listed as images (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def list_image_folder(root: str | Path) -> tuple[list[Path], Tensor, list[str]]:
    """The images of ``root/<class>/*`` (suffixes of :data:`IMAGE_SUFFIXES`, any case), their
    labels (classes numbered in sorted order of their folder names) and the class names. A root
    that is missing or holds no class folder with an image is a one-line DatasetError."""
    directory = Path(root).expanduser()
    if not directory.is_dir():
        raise DatasetError(f"image folder {directory} does not exist; allowed: a directory of <class>/<image> files")
    classes = sorted(entry.name for entry in directory.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files = sorted(path for path in (directory / name).iterdir()
                       if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
        paths.extend(files)
        labels.extend([label] * len(files))
    if not paths:
        raise DatasetError(
            f"image folder {directory} has no images in class folders; allowed: {directory}/<class>/<image> with "
            f"suffix {', '.join(IMAGE_SUFFIXES)}"
        )
    return paths, torch.tensor(labels, dtype=torch.int64), classes


def decode_resized(path: Path, size: int) -> Tensor:
    """The image at ``path`` as uint8 RGB ``(3, size, size)``: decoded by Pillow (as the original
    Mammoth's datasets do), shorter side resized to ``size`` (antialiased), centre cropped. A file
    that cannot be decoded is a DatasetError naming it."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.v2 import functional

    try:
        with Image.open(path) as file:
            pixels = np.asarray(file.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as error:
        first = (str(error).splitlines() or [""])[0]
        raise DatasetError(f"image {path} cannot be decoded ({first}); allowed: a JPEG, PNG, BMP, GIF or WebP file") from None
    image = torch.from_numpy(pixels.copy()).permute(2, 0, 1)
    image = functional.resize(image, size, antialias=True)
    return functional.center_crop(image, [size, size])


class ImageFileSource(DataSource):
    """Images read from files per batch: ``paths`` with their int64 ``labels``, decoded to
    ``size x size`` by ``workers`` threads (0: in the calling thread)."""

    def __init__(self, paths: Sequence[Path], labels: Tensor, size: int, workers: int = 0) -> None:
        if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or tuple(labels.shape) != (len(paths),):
            raise DatasetError(f"labels of shape {tuple(getattr(labels, 'shape', ()))} for {len(paths)} images; "
                               f"allowed: int64 ({len(paths)},)")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise DatasetError(f"image size={size!r} is not allowed; allowed: an integer >= 1 (pixels)")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise DatasetError(f"workers={workers!r} is not allowed; allowed: an integer >= 0")
        self.paths, self._labels, self.size, self.workers = [Path(path) for path in paths], labels, size, workers

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def labels(self) -> Tensor:
        return self._labels

    def read(self, indices: Tensor, device: torch.device | str) -> Tensor:
        """The decoded images at ``indices`` as floats in [0, 1] on ``device`` (pinned on the way
        to a CUDA device)."""
        chosen = [self.paths[index] for index in indices.tolist()]
        if self.workers and len(chosen) > 1:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                images = list(pool.map(lambda path: decode_resized(path, self.size), chosen))
        else:
            images = [decode_resized(path, self.size) for path in chosen]
        batch = torch.stack(images) if images else torch.zeros((0, 3, self.size, self.size), dtype=torch.uint8)
        if torch.device(device).type == "cuda":
            batch = batch.pin_memory()
        return batch.to(device, non_blocking=True).float().div_(255)
