"""DataSource: how a task's examples are served, one batch of indices at a time.

The harness and the methods never hold a task's data as one tensor: they ask a source for its
``labels`` (cheap, kept in memory) and ``read`` the examples of a batch of indices, on the device
they train on. :class:`InMemorySource` serves tensors held in memory (uint8 images or float
features); a streaming source implements the same four members by decoding files per batch.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from collections.abc import Sequence
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

from mammoth.errors import DatasetError

if TYPE_CHECKING:
    from mammoth.datasets.transforms import CropDraws


@dataclass(frozen=True)
class Batch:
    """One training (or evaluation) batch, on the context's device except ``indices``."""

    inputs: Tensor  # augmented + normalised (train) or normalised (eval)
    labels: Tensor
    not_aug_inputs: Tensor  # the same examples as read: float in [0, 1], no augmentation or normalisation
    indices: Tensor  # positions in the source (CPU)


class DataSource(abc.ABC):
    """The examples and labels of one task's training (or test) data, read by index."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of examples."""

    @property
    @abc.abstractmethod
    def labels(self) -> Tensor:
        """Every label, int64 on CPU, in source order."""

    @abc.abstractmethod
    def read(self, indices: Tensor, device: torch.device | str) -> Tensor:
        """The examples at ``indices`` on ``device``: float images in [0, 1] (or float features as
        they are), without augmentation or normalisation."""

    def read_augmented(self, indices: Tensor, device: torch.device | str, draws: "CropDraws",
                       uint8: bool = False) -> tuple[Tensor, Tensor]:
        """The examples at ``indices`` as :meth:`read` gives them, and the same examples cropped and
        flipped by ``draws`` (drawn for them from the run's generator: :meth:`CropDraws.apply`); a
        source of files may cut the crops from the files themselves while it decodes them. With
        ``uint8``, a source of decoded images may return both as uint8 on CPU instead (0..255: a
        quarter of the bytes to pass between processes), for the caller to convert
        (:func:`images_to_float`)."""
        examples = self.read(indices, device)
        return examples, draws.apply(examples)

    def subset(self, indices: Tensor) -> "DataSource":
        """The examples at ``indices`` (positions in this source), in that order."""
        return IndexedSource(self, _check_indices(indices, len(self)))

    def shard(self, rank: int, world_size: int) -> "DataSource":
        """Every ``world_size``-th example from ``rank``: the ranks' shards cover every example once."""
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise DatasetError(f"world_size={world_size!r} is not allowed; allowed: an integer >= 1")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise DatasetError(f"rank={rank!r} is not allowed; allowed: 0..{world_size - 1}")
        return self.subset(torch.arange(rank, len(self), world_size))


def _check_indices(indices: Tensor, size: int) -> Tensor:
    """``indices`` as int64 on CPU, if they are positions in ``0..size-1``."""
    if not isinstance(indices, Tensor) or indices.dtype not in (torch.int64, torch.int32, torch.bool) or indices.ndim != 1:
        raise DatasetError(f"indices of {type(indices).__name__} {getattr(indices, 'dtype', '')} are not allowed; "
                           "allowed: a 1-D integer (or boolean mask) tensor")
    if indices.dtype == torch.bool:
        if len(indices) != size:
            raise DatasetError(f"a mask of {len(indices)} items for a source of {size}; allowed: a mask of {size}")
        return indices.cpu().nonzero().flatten()
    indices = indices.cpu().long()
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= size):
        raise DatasetError(
            f"indices {int(indices.min())}..{int(indices.max())} are out of range; allowed: 0..{size - 1}"
        )
    return indices


class InMemorySource(DataSource):
    """Examples held in memory: ``x`` uint8 images (read as ``x / 255``) or a float tensor (read
    as it is), ``y`` int64 labels, both with one row per example."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        if not isinstance(x, Tensor) or not (x.dtype == torch.uint8 or x.is_floating_point()) or x.ndim < 1:
            raise DatasetError(
                f"examples of {type(x).__name__} {getattr(x, 'dtype', '')} are not allowed; "
                "allowed: a uint8 (images) or float tensor with one row per example"
            )
        if not isinstance(y, Tensor) or y.dtype != torch.int64 or tuple(y.shape) != (x.shape[0],):
            raise DatasetError(
                f"labels of dtype {getattr(y, 'dtype', type(y).__name__)} and shape {tuple(getattr(y, 'shape', ()))} "
                f"are not allowed; allowed: int64 ({x.shape[0]},)"
            )
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    @property
    def labels(self) -> Tensor:
        return self.y

    def read(self, indices: Tensor, device: torch.device | str) -> Tensor:
        rows = self.x.index_select(0, indices.to(self.x.device)).to(device)  # faster than x[indices]
        return rows.float().div_(255) if rows.dtype == torch.uint8 else rows


class IndexedSource(DataSource):
    """The examples of ``parent`` at ``indices`` (what :meth:`DataSource.subset` returns)."""

    def __init__(self, parent: DataSource, indices: Tensor) -> None:
        self.parent, self.indices = parent, indices
        self._labels = parent.labels.index_select(0, indices)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> Tensor:
        return self._labels

    def read(self, indices: Tensor, device: torch.device | str) -> Tensor:
        return self.parent.read(self.indices.index_select(0, indices.cpu()), device)

    def read_augmented(self, indices: Tensor, device: torch.device | str, draws: "CropDraws",
                       uint8: bool = False) -> tuple[Tensor, Tensor]:
        return self.parent.read_augmented(self.indices.index_select(0, indices.cpu()), device, draws, uint8)

    def subset(self, indices: Tensor) -> DataSource:
        return IndexedSource(self.parent, self.indices.index_select(0, _check_indices(indices, len(self))))


class RelabeledSource(DataSource):
    """The examples of ``parent`` with other labels (a class order, label noise): ``labels``
    replace the parent's, one per example; reads go to the parent."""

    def __init__(self, parent: DataSource, labels: Tensor) -> None:
        if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or tuple(labels.shape) != (len(parent),):
            raise DatasetError(f"labels of shape {tuple(getattr(labels, 'shape', ()))} for a source of {len(parent)}; "
                               f"allowed: int64 ({len(parent)},)")
        self.parent, self._labels = parent, labels

    def __len__(self) -> int:
        return len(self.parent)

    @property
    def labels(self) -> Tensor:
        return self._labels

    def read(self, indices: Tensor, device: torch.device | str) -> Tensor:
        return self.parent.read(indices, device)

    def read_augmented(self, indices: Tensor, device: torch.device | str, draws: "CropDraws",
                       uint8: bool = False) -> tuple[Tensor, Tensor]:
        return self.parent.read_augmented(indices, device, draws, uint8)


class ConcatSource(DataSource):
    """Several sources one after the other (what :func:`concat_sources` returns)."""

    def __init__(self, sources: Sequence[DataSource]) -> None:
        self.sources = list(sources)
        self.offsets = torch.tensor([0] + [len(source) for source in self.sources]).cumsum(0)
        self._labels = torch.cat([source.labels for source in self.sources])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def labels(self) -> Tensor:
        return self._labels

    def read(self, indices: Tensor, device: torch.device | str) -> Tensor:
        return self._read(indices, lambda source, rows, chosen: (source.read(rows, device),))[0]

    def read_augmented(self, indices: Tensor, device: torch.device | str, draws: "CropDraws",
                       uint8: bool = False) -> tuple[Tensor, Tensor]:
        examples, augmented = self._read(
            indices, lambda source, rows, chosen: source.read_augmented(rows, device, draws.select(chosen), uint8))
        return examples, augmented

    def _read(self, indices: Tensor,
              read_part: Callable[[DataSource, Tensor, Tensor], tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
        """``read_part(source, its rows, their positions in indices)`` of each source that
        ``indices`` reach, put together in the order of ``indices``."""
        indices = indices.cpu()
        which = torch.bucketize(indices, self.offsets[1:], right=True)
        parts, positions = [], []
        for number in which.unique().tolist():
            chosen = (which == number).nonzero().flatten()
            parts.append(read_part(self.sources[number], indices[chosen] - self.offsets[number], chosen))
            positions.append(chosen)
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return read_part(self.sources[0], indices, indices)
        if any(part[0].dtype != parts[0][0].dtype for part in parts):  # decoded images (uint8) and others
            parts = [tuple(images_to_float(tensor, tensor.device) for tensor in part) for part in parts]
        outputs = []
        for number, first in enumerate(parts[0]):
            out = torch.empty((len(indices), *first.shape[1:]), dtype=first.dtype, device=first.device)
            for part, chosen in zip(parts, positions):
                out[chosen.to(out.device)] = part[number]
            outputs.append(out)
        return tuple(outputs)


def images_to_float(batch: Tensor, device: torch.device | str) -> Tensor:
    """``batch`` on ``device``: a uint8 one as floats in [0, 1], converted there (pinned on the
    way from CPU to a CUDA device); any other as it is."""
    if batch.dtype != torch.uint8:
        return batch.to(device, non_blocking=True)
    if torch.device(device).type == "cuda" and batch.device.type == "cpu" and not batch.is_pinned():
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=True).float().div_(255)


def concat_sources(sources: Sequence[DataSource]) -> DataSource:
    """The examples of ``sources`` one after the other (the only source itself when there is one)."""
    sources = list(sources)
    if not sources:
        raise DatasetError("concat_sources got no source; allowed: one source or more")
    if len(sources) == 1:
        return sources[0]
    if all(isinstance(source, IndexedSource) and source.parent is sources[0].parent for source in sources):
        # subsets of one source (joint's earlier tasks): one subset, read with one index per batch
        return IndexedSource(sources[0].parent, torch.cat([source.indices for source in sources]))
    return ConcatSource(sources)


def empty_source(like: DataSource) -> DataSource:
    """A source of no example (the harness trains nothing on it)."""
    return like.subset(torch.zeros(0, dtype=torch.long))
