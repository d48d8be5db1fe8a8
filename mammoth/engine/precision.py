"""Numeric precision and memory layout of a run: ``precision=fp32|bf16|fp16`` and ``channels_last``.

``bf16`` and ``fp16`` run the forward passes of training and evaluation under
:func:`torch.autocast` (weights, gradients and optimizer state stay float32: mixed precision,
not half-precision weights). ``bf16`` works on CPU and CUDA; ``fp16`` needs CUDA and a
:class:`torch.amp.GradScaler`, which :meth:`ContinualModel.step` applies (so a method whose
training step calls ``backward`` itself refuses ``fp16``). ``channels_last`` stores the weights
of convolutional backbones and every image batch in the NHWC memory format, which the fast
convolution kernels of recent CPUs and GPUs prefer; it changes no result beyond float rounding.

Autocast runs without its weight cache: with the cache, a region casts each trainable weight once
and reuses that copy until the region ends, so a method that updates its weights inside one
training step (mer's per-example optimizer steps and Reptile updates) would compute every later
step with the step's first weights, and diverge. Without it each forward casts the weights as they
are; a method that forwards once per step casts each weight once either way.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch

from mammoth.config.value_checks import PRECISION_NAMES, check_precision_name
from mammoth.errors import ConfigError

#: The allowed values of ``precision`` and the autocast dtype of each (None: no autocast).
PRECISIONS: dict[str, Optional[torch.dtype]] = dict(zip(PRECISION_NAMES, (None, torch.bfloat16, torch.float16)))


def check_precision(precision: str, device: torch.device | str | None = None) -> str:
    """``precision`` if it is allowed (on ``device``, when given); else a one-line ConfigError naming it."""
    check_precision_name(precision)
    if precision == "fp16" and device is not None and torch.device(device).type != "cuda":
        raise ConfigError(
            f"precision=fp16 needs a CUDA device (its gradient scaling is for GPUs), and this run is on "
            f"{torch.device(device).type}; allowed on CPU: fp32, bf16"
        )
    return precision


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (a no-op for ``fp32``), without the weight
    cache, so weights updated in place inside the region are cast anew (module docstring)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype, cache_enabled=False)


def grad_scaler(precision: str, device: torch.device | str) -> Optional["torch.amp.GradScaler"]:
    """A GradScaler for ``fp16`` (None for the other precisions, which need none)."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``x`` in the channels-last layout when asked and ``x`` is an image batch (4-D); else ``x``."""
    if channels_last and x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def check_method_precision(precision: str, name: str, method: type) -> None:
    """Refuse ``precision=fp16`` for a method whose training steps do not all apply the gradient
    scaler (``supports_fp16 = False``), in one line, before anything is built."""
    if precision == "fp16" and not getattr(method, "supports_fp16", True):
        raise ConfigError(
            f"model={name} does not support precision=fp16 (it calls backward and steps its optimizer itself, "
            "without gradient scaling); allowed for it: fp32, bf16"
        )
