"""TrainingContext: everything the harness hands a method, and the one training loop (``fit``).

A method (``ContinualModel``) reads its batch size, device, transforms, the run's generator and
any task's data through ``self.context``, set by ``model.attach(context)`` before the first
task; it never reaches into the dataset. The main loop and every inner loop of a method (a
warm-up, a correction, a Fisher pass) run through :meth:`TrainingContext.fit`, with the same
non-finite checks, progress bar and epoch reports.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mammoth.datasets.source import Batch, DataSource, images_to_float
from mammoth.datasets.transforms import CropDraws
from mammoth.engine.distributed import GradientReducer, Shard, gather_in_rank_order, is_main_process
from mammoth.engine.precision import autocast as precision_autocast, check_precision, grad_scaler, to_memory_format
from mammoth.errors import TrainingError

#: ``report(description, epoch, mean loss)``: what :meth:`TrainingContext.fit` says after each epoch.
EpochReport = Callable[[str, int, float], None]


class TrainingContext:
    """What the harness hands a method (``model.context``): the run's facts, transforms, generator,
    device, each task's data, and :meth:`fit` for training loops.

    Attributes: ``batch_size``, ``n_epochs`` and ``n_iters`` (the dataset's), ``num_workers``, ``device``, ``generator`` (THE run's
    CPU generator, seeded with ``seed`` and saved in every checkpoint), and the benchmark's
    ``name``, ``n_tasks``, ``n_classes``, ``setting``, ``input_shape``, ``streaming``; on several
    processes, ``shard`` (this rank's part of the batch being observed), :meth:`gather_shards`,
    :meth:`backward` (a loss of the step) and :meth:`same_on_every_rank`.
    """

    def __init__(self, dataset: Any, device: torch.device, generator: torch.Generator,
                 report: Optional[EpochReport] = None, precision: str = "fp32", channels_last: bool = False) -> None:
        self._dataset = dataset
        self.batch_size: int = int(dataset.config.batch_size)
        self.n_epochs: int = int(dataset.config.n_epochs)
        self.device = torch.device(device)
        self.generator = generator
        self.n_tasks: int = int(dataset.n_tasks)
        self.n_classes: int = int(dataset.n_classes)
        self.setting: str = dataset.setting
        self.name: str = str(getattr(dataset, "name", type(dataset).__name__))
        self.input_shape: tuple[int, ...] = tuple(getattr(dataset, "input_shape", ()))
        self.num_workers: int = int(getattr(dataset.config, "num_workers", 0) or 0)
        #: Whether the benchmark reads its images from files per batch (``streaming = True``).
        self.streaming: bool = bool(getattr(dataset, "streaming", False))
        #: Steps per task of the main loop under ``dataset.fitting_mode=iters``; None: ``n_epochs`` epochs.
        self.n_iters: Optional[int] = (getattr(dataset.config, "n_iters", None)
                                       if getattr(dataset.config, "fitting_mode", "epochs") == "iters" else None)
        self.report = report
        #: ``precision`` (fp32, bf16, fp16): the forward passes of :meth:`fit` and of evaluation run
        #: under :meth:`autocast`; ``grad_scaler`` (fp16 only) scales the loss in ``ContinualModel.step``.
        self.precision: str = check_precision(precision, self.device)
        self.grad_scaler = grad_scaler(self.precision, self.device)
        #: Image batches in the channels-last memory layout (``channels_last=true``).
        self.channels_last: bool = bool(channels_last)
        #: On several processes, this rank's shard of the batch the main loop is observing, set by
        #: the engine for each ``observe`` (:func:`~mammoth.engine.distributed.observe_on_shard`):
        #: ``shard.size`` is the whole batch's size (what one process observes), ``shard.rows`` this
        #: rank's part. None in one process and outside that step (a method's own inner loops).
        self.shard: Optional[Shard] = None
        #: The engine's own: what averages a split step's gradients over the ranks (DDP's reducer,
        #: wrapped by the engine's step; none in one process); methods never touch it.
        self.gradient_reducer = GradientReducer()

    def __repr__(self) -> str:
        return (f"TrainingContext(batch_size={self.batch_size}, n_epochs={self.n_epochs}, device={self.device}, "
                f"n_tasks={self.n_tasks}, n_classes={self.n_classes}, setting={self.setting!r})")

    # ---- facts and transforms ----

    def task_classes(self, task: int) -> range:
        """The classes of ``task``: its own block (class-IL) or all classes (domain-IL)."""
        return self._dataset.task_classes(task)

    def train_transform(self, x: Tensor) -> Tensor:
        """Augment (drawing from :attr:`generator`) and normalise a float batch, on its device."""
        return self._dataset.train_transform(x, self.generator)

    def test_transform(self, x: Tensor) -> Tensor:
        """Normalise a float batch, on its device."""
        return self._dataset.test_transform(x)

    def gather_shards(self, tensor: Tensor) -> Tensor:
        """``tensor`` (rows of what this rank observes) with the rows of every rank before and after
        it, in rank order: the whole batch, as one process holds it, during a step on a split batch
        (:attr:`shard`); ``tensor`` itself otherwise (one process, a batch every rank holds whole,
        outside the main loop's step). Every rank must call it at the same point of its step."""
        shard = self.shard
        return gather_in_rank_order(tensor) if shard is not None and shard.split else tensor

    def backward(self, loss: Tensor) -> None:
        """Back-propagate ``loss``, a loss of the step ``observe`` is taking (``ContinualModel.step``
        and ``ContinualModel.backward`` come here): on several processes, in a step split over the
        ranks, the engine's reducer averages its gradients over the ranks while the backward pass
        runs; otherwise ``loss.backward()`` alone. A method's inner loops (every rank computes
        them whole) call ``loss.backward()`` themselves."""
        self.gradient_reducer.prepare()
        loss.backward()

    def same_on_every_rank(self) -> contextlib.AbstractContextManager:
        """A block of a step that every rank computes identically on the same data (gem's memory
        gradients): its backward passes are not averaged and BatchNorm layers use this rank's
        batch, so it runs with no collective; nothing changes in one process."""
        return self.gradient_reducer.paused()

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of :attr:`precision` on :attr:`device` (nothing for fp32)."""
        return precision_autocast(self.precision, self.device)

    def task_data(self, task: int) -> DataSource:
        """The training data of ``task`` (any task of the run, e.g. earlier ones for joint training)."""
        return self._dataset.task_source(task)

    # ---- batches and the training loop ----

    def batches(self, source: DataSource, batch_size: Optional[int] = None, shuffle: bool = True,
                augment: bool = True, resume_at: Optional[tuple[int, Tensor]] = None) -> Iterator[Batch]:
        """``source`` in batches of ``batch_size`` (None: :attr:`batch_size`), in an order drawn from
        :attr:`generator` when ``shuffle``; each batch is read and moved to :attr:`device` on its
        own, and transformed with :meth:`train_transform` (``augment``) or :meth:`test_transform`.

        The order is drawn up front; with :attr:`num_workers` (``dataset.num_workers``) > 0 the
        batches are read ahead by a torch ``DataLoader`` of that many worker processes (pinned
        memory on CUDA). Images streamed from files (:attr:`streaming`) with a crop-and-flip
        augmentation have its random numbers drawn up front too, right after the order, batch by
        batch (``dataset.draw_augmentation``), and are augmented while they are decoded
        (``source.read_augmented``, in the workers); other batches are transformed here. Every
        random draw comes from :attr:`generator` in an order that does not depend on the workers,
        so a run is the same with any number of workers.

        ``resume_at`` ``(k, state)``: a pass resumed after its first ``k`` batches (an online
        stream's checkpoint inside a segment): the order and draws are drawn as above, from the
        generator's state at the pass's start, then the generator takes ``state`` (its state after
        batch ``k``) and the batches from ``k + 1`` on follow."""
        size = self.batch_size if batch_size is None else batch_size
        count = len(source)
        order = torch.randperm(count, generator=self.generator) if shuffle else torch.arange(count)
        labels = source.labels
        chunks = [order[start : start + size] for start in range(0, count, size)]
        draws = self._draw_augmentations(chunks) if augment and self.streaming else None
        if resume_at is not None:
            skip, state = resume_at
            self.generator.set_state(state)
            chunks, draws = chunks[skip:], None if draws is None else draws[skip:]
        for indices, read in zip(chunks, self._read_batches(source, chunks, draws)):
            if draws is None:
                not_aug_inputs = read.to(self.device, non_blocking=True)
                inputs = self.train_transform(not_aug_inputs) if augment else self.test_transform(not_aug_inputs)
            else:
                not_aug_inputs, augmented = (images_to_float(part, self.device) for part in read)
                inputs = self._dataset.normalize(augmented)
            if self.channels_last:
                inputs = to_memory_format(inputs, True)
            yield Batch(inputs, labels.index_select(0, indices).to(self.device), not_aug_inputs, indices)

    def _draw_augmentations(self, chunks: list[Tensor]) -> Optional[list[CropDraws]]:
        """The augmentation draws of every chunk, in order, from :attr:`generator`; None (nothing
        drawn) when the dataset's augmentation is not a crop and a flip."""
        draws = [self._dataset.draw_augmentation(len(indices), self.generator) for indices in chunks]
        return None if not draws or draws[0] is None else draws

    def _read_batches(self, source: DataSource, chunks: list[Tensor],
                      draws: Optional[list[CropDraws]] = None) -> Iterator[Any]:
        """``source.read`` of each chunk of indices (with ``draws``: ``source.read_augmented``, a
        pair): here on :attr:`device` (no workers), or on CPU by :attr:`num_workers` DataLoader
        workers, in order."""
        if self.num_workers == 0 or len(chunks) == 0:
            if draws is None:
                return (source.read(indices, self.device) for indices in chunks)
            return (source.read_augmented(indices, self.device, crops, uint8=True) for indices, crops in zip(chunks, draws))

        loader = DataLoader(_BatchReads(source, chunks, draws), batch_size=None, shuffle=False,
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda")
        return iter(loader)

    def fit(self, step: Callable[[Batch], float], source: DataSource, epochs: int, description: str,
            batch_size: Optional[int] = None, augment: bool = True,
            end_epoch: Optional[Callable[[int], None]] = None, iterations: Optional[int] = None,
            resume_at: Optional[tuple[int, Tensor]] = None) -> float:
        """``epochs`` passes of ``step(batch)`` (which returns the loss value) over :meth:`batches` of
        ``source``; returns the mean loss of the last epoch.

        With ``iterations`` (the main loop passes :attr:`n_iters` under ``dataset.fitting_mode=iters``),
        ``epochs`` is ignored: passes run until ``iterations`` steps are done, the last one cut
        short, as the original's ``--fitting_mode iters``; ``end_epoch`` and the report follow each
        pass, the cut one included, and its mean loss is over the steps it ran.

        A non-finite loss raises a TrainingError naming ``description``, the epoch and the step.
        One progress bar (hidden when stderr is no terminal); after each epoch ``end_epoch(epoch)``,
        then :attr:`report` ``(description, epoch, mean loss)``. An empty source trains nothing,
        calls nothing and returns 0. ``resume_at`` (one epoch only) goes to :meth:`batches`: the
        pass continues after its first ``resume_at[0]`` steps.
        """
        if len(source) == 0:
            return 0.0
        size = self.batch_size if batch_size is None else batch_size
        steps = -(-len(source) // size)
        if iterations is not None:
            epochs = -(-iterations // steps)
        total_steps = epochs * steps if iterations is None else iterations
        mean_loss = 0.0
        done = 0
        with tqdm(total=total_steps, desc=description, disable=None if is_main_process() else True,
                  leave=False) as progress:
            for epoch in range(epochs):
                total, count = 0.0, 0
                for number, batch in enumerate(self.batches(source, size, shuffle=True, augment=augment, resume_at=resume_at),
                                                start=0 if resume_at is None else resume_at[0]):
                    with self.autocast():
                        loss = step(batch)
                    if not math.isfinite(loss):
                        raise TrainingError(
                            f"the loss became {loss} in {description or 'training'}, epoch {epoch + 1}/{epochs}, "
                            f"step {number + 1}/{steps}; the run stopped without results "
                            "(lower model.lr, or check the data)"
                        )
                    total += loss
                    count += 1
                    done += 1
                    progress.update()
                    if done == total_steps:
                        break
                mean_loss = total / count if count else 0.0  # a pass resumed after its last step
                progress.set_postfix(loss=f"{mean_loss:.3f}")
                if end_epoch is not None:
                    end_epoch(epoch)
                if self.report is not None:
                    self.report(description, epoch, mean_loss)
        return mean_loss


class _BatchReads(torch.utils.data.Dataset):
    """Item ``i`` is ``source.read(chunks[i], "cpu")``, or with ``draws``
    ``source.read_augmented(chunks[i], "cpu", draws[i], uint8=True)`` (decoded images as uint8: a
    quarter of the bytes to pass to the main process): what a DataLoader's workers read ahead."""

    def __init__(self, source: DataSource, chunks: list[Tensor], draws: Optional[list[CropDraws]] = None) -> None:
        self.source, self.chunks, self.draws = source, chunks, draws

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, number: int) -> Any:
        if self.draws is None:
            return self.source.read(self.chunks[number], "cpu")
        return self.source.read_augmented(self.chunks[number], "cpu", self.draws[number], uint8=True)


def build_context(dataset: Any, device: torch.device | str, generator: torch.Generator,
                  report: Optional[EpochReport] = None, precision: str = "fp32",
                  channels_last: bool = False) -> TrainingContext:
    """The context of a run on ``dataset`` (a ContinualDataset), training on ``device`` with the run's
    ``generator``; ``report(description, epoch, loss)`` receives every epoch's mean loss;
    ``precision`` and ``channels_last`` as :mod:`mammoth.engine.precision` describes."""
    return TrainingContext(dataset, torch.device(device), generator, report, precision, channels_last)
