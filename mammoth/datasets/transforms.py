"""Batch transforms of the 224-pixel benchmarks: the original Mammoth's torchvision transforms
(``RandomResizedCrop``, ``RandomCrop``, ``RandomHorizontalFlip``, ``Resize``), applied to a whole
float batch ``(N, C, H, W)`` on its device, with every random number drawn from one generator.

The original draws each example's crop in its ``DataLoader`` worker from that worker's global
RNG (seeded ``num_workers * rank + worker_id + seed``), so its draws depend on the number of
workers. Here they are drawn in the main process from the run's generator
(``context.generator``), a fixed count per example (:func:`draw_crops`), so a run is the same with
any ``dataset.num_workers``; the draws (:class:`CropDraws`) give each image its box from its own
size, so the same numbers crop a batch of tensors or files decoded in a worker. Resizing is
bicubic with antialiasing on tensors (torchvision's tensor path) where the original resizes PIL
images; float results are clamped to [0, 1] as a PIL image would be.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Optional

import torch
from torch import Tensor

from mammoth.errors import DatasetError

#: torchvision's RandomResizedCrop defaults (the original's unless a benchmark says otherwise).
DEFAULT_SCALE = (0.08, 1.0)
DEFAULT_RATIO = (3.0 / 4.0, 4.0 / 3.0)
ATTEMPTS = 10  # torchvision's number of tries before the centre-crop fallback


def _check_images(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise DatasetError(f"{name} expects a float batch of shape (N, C, H, W), got "
                           f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``x`` (N, C, H, W) resized to ``size`` (height, width): bicubic, antialiased, clamped to [0, 1]
    (the original's ``Resize(..., interpolation=BICUBIC)``); ``x`` itself when it has that size."""
    _check_images(x, "resize")
    return resample(x, size)


def resample(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``x`` (N, C, H, W), float in [0, 1] or uint8, resized to ``size`` (height, width) by torch's
    antialiased bicubic (torchvision's tensor ``Resize(..., BICUBIC)``; uint8 natively, as
    torchvision resizes uint8 images on CPU); floats clamped to [0, 1]. ``x`` itself at that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    resized = torch.nn.functional.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False, antialias=True)
    return resized if x.dtype == torch.uint8 else resized.clamp_(0, 1)


#: The augmentations whose random numbers :func:`draw_crops` draws (a crop box and a flip per example).
CROP_AUGMENTATIONS = ("random-resized-crop-flip", "random-crop-flip")


@dataclass(frozen=True)
class CropDraws:
    """The random numbers of one batch's crops and flips, drawn by :func:`draw_crops` from the
    run's generator; :meth:`boxes` turns them into crop boxes for images of any size, so the
    same draws serve a batch of tensors (:meth:`apply`) and files of different sizes decoded in
    a worker (:meth:`cut`, one image at a time), identically for any number of workers.

    ``kind``: ``random-resized-crop-flip`` (``fractions`` and ``log_ratios``, ``(n, ATTEMPTS)``,
    then ``positions``) or ``random-crop-flip`` (``positions`` only); ``positions`` ``(n, 2)``
    top and left in [0, 1); ``flips`` ``(n,)`` bool; ``size`` the output (height, width)."""

    kind: str
    size: tuple[int, int]
    positions: Tensor
    flips: Tensor
    fractions: Optional[Tensor] = None
    log_ratios: Optional[Tensor] = None
    ratio: tuple[float, float] = DEFAULT_RATIO

    def __len__(self) -> int:
        return len(self.flips)

    def select(self, rows: Tensor) -> "CropDraws":
        """The draws of ``rows`` (positions in this batch), in that order."""
        def pick(values: Optional[Tensor]) -> Optional[Tensor]:
            return None if values is None else values.index_select(0, rows)

        return replace(self, positions=pick(self.positions), flips=pick(self.flips), fractions=pick(self.fractions),
                       log_ratios=pick(self.log_ratios))

    def boxes(self, heights: Tensor | int, widths: Tensor | int) -> Tensor:
        """``(n, 4)`` boxes ``(top, left, h, w)`` in images of ``heights`` x ``widths`` (one per
        example, or one int for all): torchvision's ``RandomCrop.get_params``, or
        ``RandomResizedCrop.get_params`` (the first of ten tries whose box fits, else the centre crop)."""
        n = len(self)
        heights = torch.as_tensor(heights, dtype=torch.int64).expand(n)
        widths = torch.as_tensor(widths, dtype=torch.int64).expand(n)
        if self.kind == "random-crop-flip":
            small = ((heights < self.size[0]) | (widths < self.size[1])).nonzero().flatten()
            if len(small):
                row = int(small[0])
                raise DatasetError(f"random-crop of {self.size[0]}x{self.size[1]} from images of "
                                   f"{int(heights[row])}x{int(widths[row])}; allowed: images at least as large as the crop")
            crop_h, crop_w = torch.full((n,), self.size[0]), torch.full((n,), self.size[1])
        else:
            assert self.fractions is not None and self.log_ratios is not None
            area = (heights * widths).to(torch.float64).unsqueeze(1)
            aspect = self.log_ratios.exp()
            tried_w = (area * self.fractions * aspect).sqrt().round().long()
            tried_h = (area * self.fractions / aspect).sqrt().round().long()
            fits = (tried_w > 0) & (tried_w <= widths[:, None]) & (tried_h > 0) & (tried_h <= heights[:, None])
            first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first try that fits
            crop_h, crop_w = tried_h.gather(1, first)[:, 0], tried_w.gather(1, first)[:, 0]
        tops = (self.positions[:, 0] * (heights - crop_h + 1)).long()
        lefts = (self.positions[:, 1] * (widths - crop_w + 1)).long()
        boxes = torch.stack([tops, lefts, crop_h, crop_w], dim=1)
        if self.kind != "random-crop-flip":
            for row in (~fits.any(1)).nonzero().flatten().tolist():
                boxes[row] = torch.tensor(_centre_box(int(heights[row]), int(widths[row]), self.ratio))
        return boxes

    def cut(self, image: Tensor, row: int, box: Sequence[int]) -> Tensor:
        """Example ``row``'s crop ``box`` (top, left, h, w) of ``image`` (1, C, H, W), resized to
        :attr:`size` (random-resized-crop; float in [0, 1] or uint8) and flipped as drawn."""
        top, left, h, w = (int(value) for value in box)
        crop = image[:, :, top : top + h, left : left + w]
        if self.kind != "random-crop-flip":
            crop = resample(crop, self.size)
        return crop.flip(-1) if bool(self.flips[row]) else crop

    def apply(self, x: Tensor) -> Tensor:
        """Every example of the float batch ``x`` (n, C, H, W) cropped and flipped by these draws."""
        _check_images(x, self.kind)
        n, channels, height, width = x.shape
        boxes = self.boxes(height, width).tolist()
        out = torch.empty((n, channels, *self.size), dtype=x.dtype, device=x.device)
        for row in range(n):
            out[row] = self.cut(x[row : row + 1], row, boxes[row])[0]
        return out


def draw_crops(kind: str, n: int, size: tuple[int, int], generator: torch.Generator | None,
               scale: tuple[float, float] = DEFAULT_SCALE, ratio: tuple[float, float] = DEFAULT_RATIO) -> CropDraws:
    """The random numbers of ``n`` examples' ``kind`` augmentation (:data:`CROP_AUGMENTATIONS`)
    to ``size``, from ``generator`` on CPU in this order: for ``random-resized-crop-flip`` area
    fractions (n, 10) uniform in ``scale`` and log aspect ratios (n, 10) uniform in log ``ratio``;
    then top and left positions (n, 2) and the flips (n,), all uniform."""
    if kind not in CROP_AUGMENTATIONS:
        raise DatasetError(f"crop augmentation {kind!r} is not allowed; allowed: {', '.join(CROP_AUGMENTATIONS)}")
    if kind == "random-resized-crop-flip":
        fractions, log_ratios, positions = _resized_crop_numbers(n, scale, ratio, generator)
    else:
        fractions = log_ratios = None
        positions = torch.rand(n, 2, dtype=torch.float64, generator=generator)
    return CropDraws(kind, tuple(size), positions, flip_draws(n, generator), fractions, log_ratios, tuple(ratio))


def _resized_crop_numbers(n: int, scale: tuple[float, float], ratio: tuple[float, float],
                          generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
    """Area fractions (n, 10), log aspect ratios (n, 10) and positions (n, 2), in that order."""
    fractions = torch.empty(n, ATTEMPTS, dtype=torch.float64).uniform_(scale[0], scale[1], generator=generator)
    log_ratios = torch.empty(n, ATTEMPTS, dtype=torch.float64).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    return fractions, log_ratios, torch.rand(n, 2, dtype=torch.float64, generator=generator)


def resized_crop_boxes(
    height: int, width: int, n: int, scale: tuple[float, float], ratio: tuple[float, float],
    generator: torch.Generator | None,
) -> Tensor:
    """``(n, 4)`` boxes ``(top, left, h, w)`` as torchvision's ``RandomResizedCrop.get_params``
    chooses them (ten tries of an area fraction in ``scale`` and a log-uniform aspect ratio in
    ``ratio``, the first that fits, else the centre crop), from ``generator`` on CPU in this order:
    area fractions (n, 10), log ratios (n, 10), top and left positions (n, 2), all uniform (what
    :func:`draw_crops` draws before the flips)."""
    fractions, log_ratios, positions = _resized_crop_numbers(n, scale, ratio, generator)
    draws = CropDraws("random-resized-crop-flip", (height, width), positions, torch.zeros(n, dtype=torch.bool),
                      fractions, log_ratios, tuple(ratio))
    return draws.boxes(height, width)


def _centre_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """torchvision's fallback: the whole image, cut to the nearest allowed aspect ratio, centred."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def flip_draws(n: int, generator: torch.Generator | None) -> Tensor:
    """Which of ``n`` examples to flip horizontally (probability 0.5), drawn from ``generator``."""
    return torch.rand(n, generator=generator) < 0.5


def random_resized_crop_flip(
    x: Tensor, size: tuple[int, int], generator: torch.Generator | None = None,
    scale: tuple[float, float] = DEFAULT_SCALE, ratio: tuple[float, float] = DEFAULT_RATIO,
) -> Tensor:
    """The original's ``RandomResizedCrop(size, scale, ratio, BICUBIC)`` then
    ``RandomHorizontalFlip()`` on every example of ``x``: the draws of :func:`draw_crops`, from ``generator``."""
    _check_images(x, "random-resized-crop")
    return draw_crops("random-resized-crop-flip", len(x), size, generator, scale, ratio).apply(x)


def random_crop_flip(x: Tensor, size: tuple[int, int], generator: torch.Generator | None = None) -> Tensor:
    """The original's ``RandomCrop(size)`` (no padding) then ``RandomHorizontalFlip()`` on every
    example of ``x``: top and left positions (n, 2) uniform, then the flip draws (n,), from ``generator``."""
    _check_images(x, "random-crop")
    height, width = x.shape[-2:]
    if height < size[0] or width < size[1]:
        raise DatasetError(f"random-crop of {size[0]}x{size[1]} from images of {height}x{width}; "
                           "allowed: images at least as large as the crop")
    return draw_crops("random-crop-flip", len(x), size, generator).apply(x)
