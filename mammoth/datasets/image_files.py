"""Image files streamed from disk: a :class:`~mammoth.datasets.source.DataSource` that keeps only
paths and labels in memory and decodes the images of each batch when it is read.

``root/<class>/*.jpg`` folders (ImageNet-R's layout, CUB's ``images/``, a user's own data) are
listed by :func:`list_image_folder`; :class:`ImageFileSource` decodes with Pillow (JPEG, PNG,
...), resizes the shorter side to ``size`` and crops the centre ``size x size`` (the
original Mammoth's test transform for 224-pixel benchmarks: ``Resize`` then ``CenterCrop``), so
every batch is one ``(batch, 3, size, size)`` tensor. With a :class:`Decode` (the streamed
benchmarks), files are resized as the original's transforms say, by torch's antialiased bicubic
on uint8 pixels (torchvision's tensor ``Resize``), and :meth:`ImageFileSource.read_augmented`
also cuts each training crop from the file as it is decoded, with random numbers drawn
beforehand from the run's generator.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import numpy as np
import torch
from torch import Tensor

from mammoth.datasets.source import DataSource, images_to_float
from mammoth.datasets.transforms import CropDraws, resample
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
    with decoding(path), open_image(path) as file:
        return file.convert("RGB")


def open_image(path: Path) -> "PILImage":
    """The image at ``path`` opened by Pillow, its header read and its size checked
    (:func:`check_pixels`), nothing decoded yet; errors as :func:`open_rgb`'s."""
    from PIL import Image  # lazy: PIL, only to decode image files; kept off import mammoth.datasets

    with decoding(path):
        file = Image.open(path)
        try:
            check_pixels(path, file.size)
        except DatasetError:
            file.close()
            raise
        return file


@contextlib.contextmanager
def decoding(path: Path) -> Iterator[None]:
    """Pillow's errors while ``path`` is opened or decoded, as one-line DatasetErrors naming it."""
    from PIL import Image, UnidentifiedImageError  # lazy: PIL, only to decode image files; kept off import mammoth.datasets

    try:
        yield
    except Image.DecompressionBombError as error:  # over the limit Pillow itself applies on opening
        first = (str(error).splitlines() or [""])[0]
        raise DatasetError(f"image {path} is too large to decode ({first}); allowed: at most {pixel_limit():,} pixels "
                           "(Pillow's decompression-bomb limit, 2 x PIL.Image.MAX_IMAGE_PIXELS)") from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        first = (str(error).splitlines() or [""])[0]
        raise DatasetError(f"image {path} cannot be decoded ({first}); allowed: a JPEG, PNG, BMP, GIF or WebP file") from None


def decode_pixels(path: Path, file: "PILImage") -> Tensor:
    """``file`` (opened by :func:`open_image`) decoded as uint8 ``(1, C, H, W)`` in channels-last
    memory: C = 1 for a grayscale file (its RGB conversion repeats that channel, so resizing one
    channel gives the same pixels for a third of the work), else 3 (converted to RGB)."""
    with decoding(path):
        image = file if file.mode in ("L", "RGB") else file.convert("RGB")
        pixels = torch.from_numpy(np.array(image))
    return (pixels[None, None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)[None])


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
    """How a file becomes a fixed-size image, as the original's transforms say: ``resize`` an int
    (the shorter side, torchvision's ``Resize(int)``) or ``(height, width)``, bicubic (torch's,
    antialiased, on uint8: torchvision's tensor ``Resize``; the original's PIL resize is within
    2 levels of it on photos), then the centre ``crop x crop`` (``CenterCrop``) when ``crop`` is set."""

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
    """The image at ``path`` as uint8 RGB ``(3, H, W)`` after ``decode`` (:func:`apply_decode`).
    A file that cannot be decoded, or too large decoded or resized (:func:`check_pixels`: a
    1x300000 file resized to 256 on its shorter side would take 59 GB), is a DatasetError naming it."""
    with open_image(path) as file:
        pixels = decode_pixels(path, file)
    return apply_decode(path, pixels, decode)[0].expand(3, -1, -1).contiguous()


def apply_decode(path: Path, pixels: Tensor, decode: Decode) -> Tensor:
    """``pixels`` (1, C, H, W) uint8 of the file at ``path`` after ``decode``: resized (torch's
    antialiased bicubic on uint8, torchvision's tensor ``Resize(..., BICUBIC)``), then centre
    cropped as ``CenterCrop`` (``round((H - crop) / 2)``). A resized size over the pixel limit is
    refused first (:func:`check_pixels`)."""
    height, width = pixels.shape[-2:]
    if isinstance(decode.resize, int):  # torchvision's Resize(int): the shorter side, the longer truncated
        size = shorter_side_size(width, height, decode.resize)
    else:
        size = (decode.resize[1], decode.resize[0])
    check_pixels(path, (width, height), size)
    pixels = resample(pixels, (size[1], size[0]))
    if decode.crop is not None:
        height, width = pixels.shape[-2:]
        top, left = int(round((height - decode.crop) / 2.0)), int(round((width - decode.crop) / 2.0))
        pixels = pixels[:, :, top : top + decode.crop, left : left + decode.crop]
    return pixels


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
        images = self._map(self._decode, chosen)
        batch = torch.stack(images) if images else torch.zeros((0, 3, *self.output_size), dtype=torch.uint8)
        return images_to_float(batch, device)

    def read_augmented(self, indices: Tensor, device: torch.device | str, draws: CropDraws,
                       uint8: bool = False) -> tuple[Tensor, Tensor]:
        """The images at ``indices`` as :meth:`read` gives them, and augmented by ``draws`` while
        decoded, each from its file once: a random resized crop is cut from the file at full
        resolution and resized once (the original's ``RandomResizedCrop`` on the PIL image), a
        random crop from the decoded image (``RandomCrop`` after ``Resize``); then the flips. With
        ``uint8``, both as uint8 on CPU."""
        if self.decode is None:
            return super().read_augmented(indices, device, draws, uint8)
        if len(draws) != len(indices):
            raise DatasetError(f"{len(draws)} augmentation draws for {len(indices)} images; allowed: one per image")
        chosen = [self.paths[index] for index in indices.tolist()]
        with contextlib.ExitStack() as files:
            opened = [files.enter_context(open_image(path)) for path in chosen]
            if draws.kind == "random-crop-flip":  # cut from the decoded image
                boxes = draws.boxes(*self.output_size).tolist()
            else:  # cut from the file
                boxes = draws.boxes(torch.tensor([file.height for file in opened], dtype=torch.int64),
                                    torch.tensor([file.width for file in opened], dtype=torch.int64)).tolist()
            pairs = self._map(lambda row: self._decode_augmented(chosen[row], opened[row], draws, row, boxes[row]),
                              list(range(len(chosen))))
        n = len(chosen)
        examples = torch.empty((n, 3, *self.output_size), dtype=torch.uint8)
        augmented = torch.empty((n, 3, *draws.size), dtype=torch.uint8)
        for row, (example, crop) in enumerate(pairs):
            examples[row] = example[0]  # a grayscale file's one channel repeated
            augmented[row] = crop[0]
        if uint8:
            return examples, augmented
        return images_to_float(examples, device), images_to_float(augmented, device)

    def _decode_augmented(self, path: Path, file: "PILImage", draws: CropDraws, row: int,
                          box: list[int]) -> tuple[Tensor, Tensor]:
        assert self.decode is not None
        pixels = decode_pixels(path, file)
        example = apply_decode(path, pixels, self.decode)
        return example, draws.cut(example if draws.kind == "random-crop-flip" else pixels, row, box)

    def _map(self, function: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        """``function`` of each item, in :attr:`workers` threads (or here), in order."""
        if self.workers and len(items) > 1:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                return list(pool.map(function, items))
        return [function(item) for item in items]
