"""Image files streamed from disk: a :class:`~mammoth.datasets.source.DataSource` that keeps only
paths and labels in memory and decodes the images of each batch when it is read.

``root/<class>/*.jpg`` folders (ImageNet-R's layout, CUB's ``images/``, a user's own data) are
listed by :func:`list_image_folder`; :class:`ImageFileSource` decodes with Pillow (JPEG, PNG,
...), resizes the shorter side to ``size`` and crops the centre ``size x size`` (the
original Mammoth's test transform for 224-pixel benchmarks: ``Resize`` then ``CenterCrop``), so
every batch is one ``(batch, 3, size, size)`` tensor; augmentation is applied to the batch later.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

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


@dataclass(frozen=True)
class Decode:
    """How a file becomes a fixed-size image, as the original's PIL transforms do it: ``resize``
    an int (the shorter side, torchvision's ``Resize(int)``) or ``(height, width)``, bicubic
    (PIL's, antialiased), then the centre ``crop x crop`` (``CenterCrop``) when ``crop`` is set."""

    resize: Union[int, tuple[int, int]]
    crop: Optional[int] = None

    def output_size(self) -> tuple[int, int]:
        """(height, width) of every decoded image."""
        if self.crop is not None:
            return self.crop, self.crop
        if isinstance(self.resize, int):
            raise DatasetError("Decode(resize=<int>) without crop gives images of different sizes; allowed: "
                               "resize=(height, width), or a crop")
        return tuple(self.resize)


def decode_image(path: Path, decode: Decode) -> Tensor:
    """The image at ``path`` as uint8 RGB ``(3, H, W)`` after ``decode`` (Pillow's decoder and
    bicubic resize, the original's ``Resize(..., BICUBIC)`` / ``CenterCrop`` on PIL images). A
    file that cannot be decoded is a DatasetError naming it."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as file:
            image = file.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as error:
        first = (str(error).splitlines() or [""])[0]
        raise DatasetError(f"image {path} cannot be decoded ({first}); allowed: a JPEG, PNG, BMP, GIF or WebP file") from None
    width, height = image.size
    if isinstance(decode.resize, int):  # torchvision's Resize(int): the shorter side, the longer truncated
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = decode.resize, int(decode.resize * long / short)
        size = (new_short, new_long) if width <= height else (new_long, new_short)
    else:
        size = (decode.resize[1], decode.resize[0])
    if size != (width, height):
        image = image.resize(size, Image.BICUBIC)
    if decode.crop is not None:
        width, height = image.size
        top, left = int(round((height - decode.crop) / 2.0)), int(round((width - decode.crop) / 2.0))
        image = image.crop((left, top, left + decode.crop, top + decode.crop))
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def files_fingerprint(root: Union[str, Path], paths: Sequence[Path], labels: Tensor) -> dict[str, object]:
    """``{"count": N, "sha256": HEX}`` over one tab-separated line ``relative path, size in bytes, label`` per
    file, in order: what a streaming benchmark is, without decoding an image (paths relative to ``root``)."""
    digest = hashlib.sha256()
    base = Path(root)
    for path, label in zip(paths, labels.tolist()):
        try:
            relative = Path(path).relative_to(base).as_posix()
        except ValueError:
            relative = Path(path).as_posix()
        digest.update(f"{relative}\t{Path(path).stat().st_size}\t{label}\n".encode())
    return {"count": len(paths), "sha256": digest.hexdigest()}


class ImageFileSource(DataSource):
    """Images read from files per batch: ``paths`` with their int64 ``labels``, decoded to
    ``size x size`` by ``workers`` threads (0: in the calling thread); with ``decode``, decoded
    by :func:`decode_image` instead (``size`` is then unused)."""

    def __init__(self, paths: Sequence[Path], labels: Tensor, size: int = 224, workers: int = 0,
                 decode: Optional[Decode] = None) -> None:
        if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or tuple(labels.shape) != (len(paths),):
            raise DatasetError(f"labels of shape {tuple(getattr(labels, 'shape', ()))} for {len(paths)} images; "
                               f"allowed: int64 ({len(paths)},)")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise DatasetError(f"image size={size!r} is not allowed; allowed: an integer >= 1 (pixels)")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise DatasetError(f"workers={workers!r} is not allowed; allowed: an integer >= 0")
        self.paths, self._labels, self.size, self.workers = [Path(path) for path in paths], labels, size, workers
        self.decode = decode
        self.output_size = (size, size) if decode is None else decode.output_size()

    def with_decode(self, decode: Decode) -> "ImageFileSource":
        """The same files and labels, decoded by ``decode`` (a benchmark's training files read as test data)."""
        return ImageFileSource(self.paths, self._labels, self.size, self.workers, decode)

    def _decode(self, path: Path) -> Tensor:
        return decode_resized(path, self.size) if self.decode is None else decode_image(path, self.decode)

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
                images = list(pool.map(self._decode, chosen))
        else:
            images = [self._decode(path) for path in chosen]
        batch = torch.stack(images) if images else torch.zeros((0, 3, *self.output_size), dtype=torch.uint8)
        if torch.device(device).type == "cuda":
            batch = batch.pin_memory()
        return batch.to(device, non_blocking=True).float().div_(255)
