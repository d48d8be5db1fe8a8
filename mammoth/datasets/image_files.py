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
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from mammoth.datasets.source import DataSource
from mammoth.errors import DatasetError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

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


#: The most pixels an image may have when decoded, and again once resized, unless Pillow's
#: ``PIL.Image.MAX_IMAGE_PIXELS`` says otherwise: twice that setting, the size above which Pillow
#: refuses a file as a decompression bomb (178,956,970 pixels by default: 537 MB as RGB).
DEFAULT_PIXEL_LIMIT = 2 * 89_478_485


def pixel_limit() -> int:
    """The most pixels an image may hold, decoded or resized: Pillow's decompression-bomb limit
    (``2 * PIL.Image.MAX_IMAGE_PIXELS``; :data:`DEFAULT_PIXEL_LIMIT` when that setting is None)."""
    from PIL import Image  # lazy: PIL, only to decode image files; kept off import mammoth.datasets

    return 2 * int(Image.MAX_IMAGE_PIXELS) if Image.MAX_IMAGE_PIXELS else DEFAULT_PIXEL_LIMIT


def open_rgb(path: Path) -> "PILImage":
    """The image at ``path`` decoded by Pillow, as RGB: the one way a file is decoded. A file that
    cannot be decoded, or whose width x height exceeds :func:`pixel_limit` (a decompression bomb),
    is a one-line DatasetError naming it, its size and what is allowed; nothing is decoded then."""
    from PIL import Image, UnidentifiedImageError  # lazy: PIL, only to decode image files; kept off import mammoth.datasets

    try:
        with Image.open(path) as file:
            check_pixels(path, file.size)
            return file.convert("RGB")
    except Image.DecompressionBombError as error:  # over the limit Pillow itself applies on opening
        first = (str(error).splitlines() or [""])[0]
        raise DatasetError(f"image {path} is too large to decode ({first}); allowed: at most {pixel_limit():,} pixels "
                           "(Pillow's decompression-bomb limit, 2 x PIL.Image.MAX_IMAGE_PIXELS)") from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        first = (str(error).splitlines() or [""])[0]
        raise DatasetError(f"image {path} cannot be decoded ({first}); allowed: a JPEG, PNG, BMP, GIF or WebP file") from None


def check_pixels(path: Path, size: tuple[int, int], resized: Optional[tuple[int, int]] = None) -> None:
    """Refuse an image of ``size`` (width, height), or its ``resized`` size, that holds more than
    :func:`pixel_limit` pixels, in one line naming the file, its size and the limit."""
    limit = pixel_limit()
    width, height = size
    if width * height > limit:
        raise DatasetError(f"image {path} is {width}x{height} pixels (width x height, {width * height:,} pixels), too large "
                           f"to decode; allowed: at most {limit:,} pixels (Pillow's decompression-bomb limit, "
                           "2 x PIL.Image.MAX_IMAGE_PIXELS)")
    if resized is not None and resized[0] * resized[1] > limit:
        new_width, new_height = resized
        short = min(new_width, new_height)
        raise DatasetError(
            f"image {path} is {width}x{height} pixels (width x height): resized to {short} pixels on its shorter side it "
            f"would be {new_width}x{new_height} ({new_width * new_height:,} pixels, {3 * new_width * new_height / 1e9:.1f} GB); "
            f"allowed: at most {limit:,} pixels once resized (Pillow's decompression-bomb limit), an aspect ratio up to "
            f"1:{limit // (short * short)}"
        )


def shorter_side_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the shorter side resized to ``short_side`` and the longer one scaled
    and truncated, as torchvision's ``Resize(int)`` computes it."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(short_side * long / short)
    return (short_side, new_long) if width <= height else (new_long, short_side)


def decode_resized(path: Path, size: int) -> Tensor:
    """The image at ``path`` as uint8 RGB ``(3, size, size)``: decoded by Pillow (as the original
    Mammoth's datasets do), shorter side resized to ``size`` (antialiased), centre cropped. A file
    that cannot be decoded, or too large decoded or resized (:func:`check_pixels`), is a
    DatasetError naming it."""
    from torchvision.transforms.v2 import functional  # lazy: torchvision (heavy), kept off import mammoth.datasets

    image = open_rgb(path)
    check_pixels(path, image.size, shorter_side_size(*image.size, size))
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    del image
    pixels = functional.resize(pixels, size, antialias=True)
    return functional.center_crop(pixels, [size, size])


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
    file that cannot be decoded, or too large decoded or resized (:func:`check_pixels`: a 1x300000
    file resized to 256 on its shorter side would take 59 GB), is a DatasetError naming it."""
    from PIL import Image  # lazy: PIL, only to decode image files; kept off import mammoth.datasets

    image = open_rgb(path)
    width, height = image.size
    if isinstance(decode.resize, int):  # torchvision's Resize(int): the shorter side, the longer truncated
        size = shorter_side_size(width, height, decode.resize)
    else:
        size = (decode.resize[1], decode.resize[0])
    check_pixels(path, (width, height), size)
    if size != (width, height):
        image = image.resize(size, Image.BICUBIC)
    if decode.crop is not None:
        width, height = image.size
        top, left = int(round((height - decode.crop) / 2.0)), int(round((width - decode.crop) / 2.0))
        image = image.crop((left, top, left + decode.crop, top + decode.crop))
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def file_sha256(path: Union[str, Path]) -> str:
    """The sha256 of the bytes of the file at ``path`` (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def files_fingerprint(root: Union[str, Path], paths: Sequence[Path], labels: Tensor) -> dict[str, Any]:
    """What a streaming benchmark's files are, decoding no image: ``{"count": N, "sha256": HEX,
    "files": [...]}``, one ``files`` row ``relative path<TAB>label<TAB>sha256 of its bytes`` per
    file, in order (paths relative to ``root``), and ``sha256`` over those rows. Every file is
    read once (``python scripts/bench_memory.py`` prints the cost)."""
    base = Path(root)
    rows = []
    for path, label in zip(paths, labels.tolist()):
        try:
            relative = Path(path).relative_to(base).as_posix()
        except ValueError:
            relative = Path(path).as_posix()
        try:
            content = file_sha256(path)
        except OSError as error:
            raise DatasetError(f"image {path} cannot be read ({error.strerror or error}); allowed: a readable file") from None
        rows.append(f"{relative}\t{label}\t{content}")
    digest = hashlib.sha256("".join(f"{row}\n" for row in rows).encode())
    return {"count": len(rows), "sha256": digest.hexdigest(), "files": rows}


def files_change(before: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    """What differs between two :func:`files_fingerprint` results, in a few words naming a file:
    the first file added, removed, relabelled or with other contents, and how many more."""
    old, new = _rows(before.get("files")), _rows(now.get("files"))
    if old is None or new is None:
        return "the checkpoint records the files' sizes, not their contents (written by an earlier mammoth)"
    changes = []
    for path, (label, content) in new.items():
        if path not in old:
            changes.append(f"{path} added")
        elif old[path][0] != label:
            changes.append(f"{path} relabelled: class {old[path][0]} then, {label} now")
        elif old[path][1] != content:
            changes.append(f"{path} has other contents: sha256 {old[path][1][:12]}... then, {content[:12]}... now")
    changes += [f"{path} removed" for path in old if path not in new]
    if not changes:
        return "the same files in another order"
    return changes[0] + (f" and {len(changes) - 1} more file(s)" if len(changes) > 1 else "")


def _rows(rows: Any) -> Optional[dict[str, tuple[str, str]]]:
    """``files`` rows of a fingerprint as {relative path: (label, sha256)}; None if not such rows."""
    if not isinstance(rows, list):
        return None
    parsed = {}
    for row in rows:
        fields = row.rsplit("\t", 2) if isinstance(row, str) else []  # a file name may hold a tab
        if len(fields) != 3:
            return None
        parsed[fields[0]] = (fields[1], fields[2])
    return parsed


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
