"""The dataset settings that act on labels and index sets, as the original Mammoth draws them:
the class order (``dataset.class_order``), the validation split (``dataset.validation``) and
label noise (``dataset.noise_type`` / ``dataset.noise_rate``). They read and return int64 label
tensors and index tensors only, so they work alike on in-memory and streaming benchmarks.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from mammoth.errors import DatasetError

NOISE_TYPES = ("symmetric", "asymmetric")

#: The original's asymmetric CIFAR-10 mistakes (truck -> automobile, bird -> airplane, cat <-> dog, deer -> horse).
CIFAR10_TRANSITIONS = {0: 0, 2: 0, 4: 7, 7: 7, 1: 1, 9: 1, 3: 5, 5: 3, 6: 6, 8: 8}


def check_class_order(value: Any, n_classes: int) -> Optional[list[int] | str]:
    """``None``, ``"permute"`` or a permutation of ``0..n_classes-1`` (as a list); else a one-line DatasetError."""
    if value is None or value == "permute":
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(c, int) and not isinstance(c, bool) for c in value) \
            and sorted(value) == list(range(n_classes)):
        return list(value)
    shown = value if not isinstance(value, (list, tuple)) or len(value) <= 12 else f"[{', '.join(map(str, value[:12]))}, ...]"
    raise DatasetError(f"dataset.class_order={shown!r} is not allowed; allowed: permute, or a list holding each class "
                       f"0..{n_classes - 1} once (the order classes are trained in)")


def class_order(value: Optional[list[int] | str], n_classes: int, seed: int) -> Optional[list[int]]:
    """The classes in the order they are trained (original labels), or None for the natural order.

    ``permute`` is the original's ``--permute_classes``: ``np.random.seed(seed)`` then
    ``P = np.random.permutation(n_classes)``, and class ``c`` becomes class ``P[c]``; the order
    returned is therefore ``argsort(P)``. Drawn from a ``RandomState`` of its own (the same
    numbers; numpy's global RNG is left alone)."""
    if value is None:
        return None
    if value == "permute":
        permutation = np.random.RandomState(seed).permutation(n_classes)
        return np.argsort(permutation).tolist()
    return list(value)


def label_mapping(order: list[int]) -> Tensor:
    """``mapping[c]`` = the new label of original class ``c``: its position in ``order``."""
    mapping = torch.empty(len(order), dtype=torch.int64)
    mapping[torch.tensor(order, dtype=torch.int64)] = torch.arange(len(order))
    return mapping


def check_validation(value: Any) -> Optional[float]:
    """``None`` or a fraction strictly between 0 and 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise DatasetError(f"dataset.validation={value!r} is not allowed; allowed: a fraction in (0, 1) of each "
                           "class's training data (the original's --validation 10 is dataset.validation=0.1)")
    return float(value)


def validation_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """The original's ``get_validation_indexes``: for every class (sorted), its examples in
    source order, shuffled by ``torch.randperm`` from a generator seeded ``seed`` (afresh for
    each class); the first ``ceil(n * percent / 100)`` are held out. Returns (train, validation)
    indices, each concatenated class by class in that shuffled order."""
    percent = round(fraction * 100, 2)
    train, held_out = [], []
    for label in labels.unique(sorted=True).tolist():
        members = (labels == label).nonzero().flatten()
        n_held_out = int(math.ceil(len(members) * (percent / 100)))
        shuffled = members[torch.randperm(len(members), generator=torch.Generator().manual_seed(seed))]
        held_out.append(shuffled[:n_held_out])
        train.append(shuffled[n_held_out:])
    empty = torch.zeros(0, dtype=torch.int64)
    return (torch.cat(train) if train else empty), (torch.cat(held_out) if held_out else empty)


def check_noise(noise_type: Any, noise_rate: Any, asymmetric: Optional[str], dataset: str) -> tuple[str, float]:
    """The checked ``(noise_type, noise_rate)``; asymmetric noise only where the benchmark defines it."""
    if noise_type not in NOISE_TYPES:
        raise DatasetError(f"dataset.noise_type={noise_type!r} is not allowed; allowed: {', '.join(NOISE_TYPES)}")
    if isinstance(noise_rate, bool) or not isinstance(noise_rate, (int, float)) or not 0 <= noise_rate <= 1:
        raise DatasetError(f"dataset.noise_rate={noise_rate!r} is not allowed; allowed: a number in [0, 1]")
    if noise_type == "asymmetric" and noise_rate > 0 and asymmetric is None:
        raise DatasetError(f"dataset.noise_type=asymmetric is not defined for {dataset}; allowed: symmetric "
                           "(asymmetric noise exists for the CIFAR benchmarks, as in the original)")
    return noise_type, float(noise_rate)


def noisy_labels(labels: Tensor, noise_type: str, rate: float, seed: int, asymmetric: Optional[str] = None) -> Tensor:
    """The original's ``build_noisy_labels`` (without its on-disk cache: the draw is fixed by ``seed``).

    ``symmetric``: ``RandomState(seed)``; for each class (sorted), its positions are shuffled and
    the first ``round(n * rate)`` get a label drawn uniformly from the other classes.
    ``asymmetric``: CIFAR-10's fixed mistakes (:data:`CIFAR10_TRANSITIONS`, ``RandomState(seed)``)
    or CIFAR-100's flip to the next class within blocks of 5 labels (``RandomState(0)``, as the original).
    """
    targets = labels.numpy()
    noisy = targets.copy()
    positions = np.arange(len(targets))
    if rate == 0:
        return labels.clone()
    if noise_type == "symmetric":
        rng = np.random.RandomState(seed)
        classes = np.unique(targets)
        for target in classes:
            others = classes[classes != target]
            members = positions[targets == target]
            n_flip = round(len(members) * rate)
            rng.shuffle(members)
            noisy[members[:n_flip]] = rng.choice(others, n_flip)
    elif asymmetric == "cifar10":
        rng = np.random.RandomState(seed)
        for source, destination in CIFAR10_TRANSITIONS.items():
            members = positions[targets == source]
            n_flip = round(len(members) * rate)
            rng.shuffle(members)
            noisy[members[:n_flip]] = destination
    else:  # cifar100
        noisy = _cifar100_asymmetric(targets, rate)
    return torch.from_numpy(noisy.astype(np.int64))


def _cifar100_asymmetric(targets: Any, rate: float) -> Any:
    """The original's ``noisify_cifar100_asymmetric``: blocks of 5 labels, each flips to the next
    of its block with probability ``rate`` (a multinomial draw per example from ``RandomState(0)``)."""
    matrix = np.eye(100)
    for block in range(20):
        start, stop = block * 5, (block + 1) * 5
        matrix[start:stop, start:stop] = np.eye(5) * (1.0 - rate)
        for i in range(5):
            matrix[start + i, start + (i + 1) % 5] = rate
    flipper = np.random.RandomState(0)
    noisy = targets.copy()
    for index, label in enumerate(targets):
        noisy[index] = np.where(flipper.multinomial(1, matrix[label, :], 1)[0] == 1)[0][0]
    return noisy
