"""Batch transforms of the 224-pixel benchmarks: the original Mammoth's torchvision transforms
(``RandomResizedCrop``, ``RandomCrop``, ``RandomHorizontalFlip``, ``Resize``), applied to a whole
float batch ``(N, C, H, W)`` on its device, with every random number drawn from one generator.

The original draws each example's crop in its ``DataLoader`` worker from that worker's global
RNG (seeded ``num_workers * rank + worker_id + seed``), so its draws depend on the number of
workers. Here they are drawn in the main process from the run's generator
(``context.generator``), a fixed count per example, so a run is the same with any
``dataset.num_workers``. Resizing is bicubic with antialiasing on tensors (torchvision's tensor
path) where the original resizes PIL images; results are clamped to [0, 1] as a PIL image would be.
"""

from __future__ import annotations

import math

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
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    resized = torch.nn.functional.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False, antialias=True)
    return resized.clamp_(0, 1)


def resized_crop_boxes(
    height: int, width: int, n: int, scale: tuple[float, float], ratio: tuple[float, float],
    generator: torch.Generator | None,
) -> Tensor:
    """``(n, 4)`` boxes ``(top, left, h, w)`` as torchvision's ``RandomResizedCrop.get_params``
    chooses them (ten tries of an area fraction in ``scale`` and a log-uniform aspect ratio in
    ``ratio``, the first that fits, else the centre crop), from ``generator`` on CPU in this order:
    area fractions (n, 10), log ratios (n, 10), top and left positions (n, 2), all uniform."""
    area = height * width
    fractions = torch.empty(n, ATTEMPTS, dtype=torch.float64).uniform_(scale[0], scale[1], generator=generator)
    log_ratios = torch.empty(n, ATTEMPTS, dtype=torch.float64).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    positions = torch.rand(n, 2, dtype=torch.float64, generator=generator)
    aspect = log_ratios.exp()
    widths = (area * fractions * aspect).sqrt().round().long()
    heights = (area * fractions / aspect).sqrt().round().long()
    fits = (widths > 0) & (widths <= width) & (heights > 0) & (heights <= height)
    boxes = torch.empty(n, 4, dtype=torch.long)
    fallback = _centre_box(height, width, ratio)
    for row in range(n):
        tries = fits[row].nonzero().flatten()
        if len(tries) == 0:
            boxes[row] = torch.tensor(fallback)
            continue
        h, w = int(heights[row, tries[0]]), int(widths[row, tries[0]])
        top = int(positions[row, 0] * (height - h + 1))
        left = int(positions[row, 1] * (width - w + 1))
        boxes[row] = torch.tensor([top, left, h, w])
    return boxes


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
    ``RandomHorizontalFlip()`` on every example of ``x``: boxes from :func:`resized_crop_boxes`,
    then the flip draws (n,), all from ``generator``."""
    _check_images(x, "random-resized-crop")
    n, _, height, width = x.shape
    boxes = resized_crop_boxes(height, width, n, scale, ratio, generator)
    flips = flip_draws(n, generator)
    out = torch.empty((n, x.shape[1], *size), dtype=x.dtype, device=x.device)
    for row, (top, left, h, w) in enumerate(boxes.tolist()):
        crop = resize(x[row : row + 1, :, top : top + h, left : left + w], size)
        out[row] = crop[0].flip(-1) if flips[row] else crop[0]
    return out


def random_crop_flip(x: Tensor, size: tuple[int, int], generator: torch.Generator | None = None) -> Tensor:
    """The original's ``RandomCrop(size)`` (no padding) then ``RandomHorizontalFlip()`` on every
    example of ``x``: top and left positions (n, 2) uniform, then the flip draws (n,), from ``generator``."""
    _check_images(x, "random-crop")
    n, _, height, width = x.shape
    if height < size[0] or width < size[1]:
        raise DatasetError(f"random-crop of {size[0]}x{size[1]} from images of {height}x{width}; "
                           "allowed: images at least as large as the crop")
    positions = torch.rand(n, 2, dtype=torch.float64, generator=generator)
    flips = flip_draws(n, generator)
    tops = (positions[:, 0] * (height - size[0] + 1)).long().tolist()
    lefts = (positions[:, 1] * (width - size[1] + 1)).long().tolist()
    out = torch.empty((n, x.shape[1], *size), dtype=x.dtype, device=x.device)
    for row, (top, left) in enumerate(zip(tops, lefts)):
        crop = x[row, :, top : top + size[0], left : left + size[1]]
        out[row] = crop.flip(-1) if flips[row] else crop
    return out
