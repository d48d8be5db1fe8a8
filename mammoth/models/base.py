"""ContinualModel, the interface of every CL method, and ReplayModel, its replay-buffer variant.

The harness hands a method everything it may use through one object, ``model.context`` (a
:class:`~mammoth.engine.context.TrainingContext`: batch size, epochs, device, transforms, the
run's generator, any task's data, ``fit`` for inner loops), set by ``model.attach(context)``
before the first task (and again on resume, before the checkpoint is loaded). Then, per task ``t``:

1. ``model.begin_task(t)``: the optimizer and its schedule are (re-)created;
2. ``source = model.training_data(t, data)``: what the task trains on (``data``, the task's
   DataSource, by default);
3. ``context.fit`` over ``source``: ``model.observe(inputs, labels, not_aug_inputs)`` per batch,
   ``model.end_epoch(epoch)`` after each epoch (nothing runs on an empty source);
4. ``model.end_task(t, data)``, with the task's own DataSource.

A checkpoint holds ``model.state_dict()`` plus ``model.extra_state()``.

On several processes (``torchrun``) each rank's ``observe`` gets its equal shard of the batch,
and ``self.context.shard`` says which (the whole batch's size, this rank's rows; None in one
process); the engine averages the gradients of the backward passes of the step, those that go
through :meth:`ContinualModel.step` or :meth:`ContinualModel.backward`, and keeps its reducer itself. A method declares
``supports_distributed = True`` when that is the same experiment as one process
(docs/distributed.md); the others are refused.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Optional

import torch
from torch import Tensor, nn

from mammoth.backbones.base import MammothBackbone
from mammoth.config.value_checks import (
    check_choice, check_non_negative, check_positive, check_positive_int, exclusive_arguments_error,
)
from mammoth.datasets.source import InMemorySource, concat_sources
from mammoth.errors import ConfigError, MammothError
from mammoth.models.buffer import ReplayBatch, ReplayBuffer
from mammoth.models.registry import MODELS

if TYPE_CHECKING:
    from mammoth.datasets.source import DataSource
    from mammoth.engine.context import TrainingContext

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULERS = ("multisteplr", "cosine")
BUFFER_DEVICES = ("training", "cpu")
#: The hooks whose signature changed, with their old number of parameters after ``self``.
OLD_HOOKS = {"training_data": 3, "end_task": 1}
OLD_SIGNATURES = {"training_data": "(self, task, train_x, train_y)", "end_task": "(self, task)"}
NEW_SIGNATURES = (
    "training_data(self, task, data) -> DataSource and end_task(self, task, data), where data is the "
    "task's DataSource and self.context serves the rest"
)


# ---- the base class ----


class ContinualModel(nn.Module):
    """Base class of the CL methods: trains the backbone ``self.net`` on a stream of tasks.

    Subclasses implement :meth:`observe` and override the other hooks as needed. The model keeps
    only static facts of the ``dataset`` it is built for (the default milestones); at run time
    it reads everything from :attr:`context`. The optimizer (``sgd`` with ``momentum``, or
    ``adam``; both with ``weight_decay``) is created over ``self.net.parameters()`` at every
    :meth:`begin_task` (None before the first), and so is the learning-rate schedule:
    the original Mammoth's multi-step schedule (``--lr_scheduler multisteplr``), torch's
    ``MultiStepLR``, multiplies the learning rate by ``sched_multistep_lr_gamma`` at each of the
    ``lr_milestones`` epochs of every task (stepped by :meth:`end_epoch`). ``lr_milestones=None``
    takes the dataset's ``default_lr_milestones`` (the original's dataset default: ``[35, 45]``
    for seq-cifar100, none elsewhere); an empty list keeps the learning rate constant.
    ``lr_scheduler=cosine`` anneals the rate to 0 over each task's epochs instead (the original's
    ``--lr_scheduler cosine``, which its prompt methods use).
    """

    #: True for a method that trains only after the last task (joint, gdumb): its earlier rows score
    #: an untrained network, so results.json reports no forgetting or transfer for it.
    trains_only_at_end: bool = False

    #: Whether training on several processes (each ``observe`` on its shard of the batch, gradients
    #: averaged over the ranks, what ``observe`` stores in a ReplayBuffer gathered from every rank)
    #: is the same experiment as one process; a method that keeps its own per-batch state is not.
    supports_distributed: ClassVar[bool] = False

    #: Whether every backward pass of the method's training goes through :meth:`step` (or
    #: another path that applies the context's gradient scaler), as ``precision=fp16`` needs; a
    #: method that calls ``backward`` and steps an optimizer itself sets False and refuses fp16.
    supports_fp16: ClassVar[bool] = True

    #: Whether the method's training runs the backbone through its forward (``self.net(x, ...)``),
    #: which ``compile=true`` compiles (:mod:`mammoth.engine.compiled`); a method that runs it
    #: another way (block by block) sets False and refuses compile=true.
    supports_compile: ClassVar[bool] = True

    #: Whether the method keeps a memory of labelled examples (:meth:`memory_examples`): the
    #: evaluation then also scores the nearest mean of its classes (results.json's ``nme_class_il``).
    has_memory: ClassVar[bool] = False

    #: Whether the method trains on a stream without being told where tasks change
    #: (``dataset.task_free=true``: no :meth:`begin_task`, :meth:`training_data` or :meth:`end_task`;
    #: :meth:`begin_stream` once instead); a method whose hooks do work at task changes refuses it.
    supports_task_free: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse a subclass written against the old hooks, when its class is defined."""
        super().__init_subclass__(**kwargs)
        for hook, old_arity in OLD_HOOKS.items():
            method = cls.__dict__.get(hook)
            if callable(method) and _positional_arity(method) == old_arity:
                raise ConfigError(
                    f"{cls.__module__}.{cls.__qualname__}.{hook}{OLD_SIGNATURES[hook]} is an old hook; "
                    f"allowed: {NEW_SIGNATURES} (docs/methods.md: Write your own method)"
                )

    def __init__(
        self,
        net: MammothBackbone,
        dataset: Any,
        lr: float = 0.1,
        optimizer: Literal["sgd", "adam"] = "sgd",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        lr_milestones: Optional[tuple[int, ...]] = None,
        sched_multistep_lr_gamma: float = 0.1,
        lr_scheduler: Literal["multisteplr", "cosine"] = "multisteplr",
    ) -> None:
        super().__init__()
        self.lr = check_positive("model.lr", lr)
        self.optimizer_name = check_choice("model.optimizer", optimizer, OPTIMIZERS)
        self.momentum = check_non_negative("model.momentum", momentum)
        self.weight_decay = check_non_negative("model.weight_decay", weight_decay)
        if self.optimizer_name == "adam" and self.momentum:
            raise ConfigError(
                f"model.momentum={momentum} has no effect with model.optimizer=adam; allowed: momentum=0 with adam"
            )
        self.lr_scheduler = check_choice("model.lr_scheduler", lr_scheduler, LR_SCHEDULERS)
        if lr_milestones is not None and len(lr_milestones) and self.lr_scheduler == "cosine":
            raise ConfigError(
                f"model.lr_milestones={list(lr_milestones)} apply to lr_scheduler=multisteplr; allowed: "
                "lr_scheduler=multisteplr with milestones, or lr_scheduler=cosine without them"
            )
        if lr_milestones is None:
            lr_milestones = tuple(getattr(dataset, "default_lr_milestones", ()))
        self.lr_milestones = check_milestones("model.lr_milestones", lr_milestones)
        self.sched_multistep_lr_gamma = check_positive("model.sched_multistep_lr_gamma", sched_multistep_lr_gamma)
        self.net = net
        self.loss = nn.CrossEntropyLoss()
        self.current_task = 0
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.scheduler: Optional[torch.optim.lr_scheduler.MultiStepLR] = None
        self._context: Optional[TrainingContext] = None

    @property
    def context(self) -> "TrainingContext":
        """What the harness hands this method (set by :meth:`attach`)."""
        if self._context is None:
            raise MammothError(
                f"{type(self).__name__} has no training context; allowed: call "
                "model.attach(build_context(dataset, device, generator)) (mammoth.engine.context) before training"
            )
        return self._context

    def attach(self, context: "TrainingContext") -> None:
        """Receive the run's context, before the first task (and on resume, before the checkpoint loads)."""
        self._context = context

    @property
    def device(self) -> torch.device:
        """The device of the backbone's parameters (CPU for a backbone without parameters)."""
        parameter = next(self.net.parameters(), None)
        return torch.device("cpu") if parameter is None else parameter.device

    def make_optimizer(self) -> torch.optim.Optimizer:
        """A fresh optimizer over the backbone's trainable parameters (frozen ones, e.g. by
        ``backbone.freeze``, are left out); ``momentum`` is for sgd, adam refuses it."""
        parameters = [parameter for parameter in self.net.parameters() if parameter.requires_grad]
        if self.optimizer_name == "adam":
            return torch.optim.Adam(parameters, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(parameters, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def make_scheduler(self) -> Optional[torch.optim.lr_scheduler.LRScheduler]:
        """A fresh schedule over ``self.optimizer``, stepped after every epoch: ``cosine`` anneals the
        rate to 0 over the task's ``n_epochs`` (torch's ``CosineAnnealingLR``, as the original's
        ``--lr_scheduler cosine``); ``multisteplr`` is ``MultiStepLR`` at ``lr_milestones`` (None
        without milestones: a constant rate)."""
        if self.lr_scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.context.n_epochs)
        if not self.lr_milestones:
            return None
        return torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(self.lr_milestones), gamma=self.sched_multistep_lr_gamma
        )

    def forward(self, x: Tensor) -> Tensor:
        """The logits of the backbone."""
        return self.net(x)

    def begin_task(self, task: int) -> None:
        """Called first for ``task``: records it and (re-)creates the optimizer and its schedule."""
        self.current_task = task
        self.optimizer = self.make_optimizer()
        self.scheduler = self.make_scheduler()

    def begin_stream(self) -> None:
        """Called once before a task-free stream (``dataset.task_free=true``) instead of every
        :meth:`begin_task`: creates the optimizer and its schedule; ``current_task`` stays 0."""
        self.optimizer = self.make_optimizer()
        self.scheduler = self.make_scheduler()

    def training_data(self, task: int, data: "DataSource") -> "DataSource":
        """What the harness trains on for ``task`` (called after :meth:`begin_task`); by default
        ``data``, the task's own DataSource, unchanged."""
        return data

    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """One training step on a batch; returns the loss value.

        ``inputs`` are augmented and normalised; ``not_aug_inputs`` are the same images in
        [0, 1] without augmentation or normalisation (what a replay buffer stores).
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement observe")

    def end_epoch(self, epoch: int) -> None:
        """Called after each training epoch of the current task (``epoch`` counts from 0): steps the
        learning-rate schedule (an override must call ``super().end_epoch(epoch)``)."""
        if self.scheduler is not None:
            self.scheduler.step()

    def end_task(self, task: int, data: "DataSource") -> None:
        """Called after training ``task``, with the task's own DataSource ``data``; nothing by default."""

    def step(self, loss: Tensor, clip_grad: float | None = None) -> float:
        """Back-propagate ``loss`` (after clearing old gradients), clip the gradient norm of the
        trainable parameters to ``clip_grad`` (None: no clipping), step the optimizer; return the
        loss value. Under ``precision=fp16`` the loss is scaled by the context's GradScaler, and the
        gradient unscaled before it is clipped and applied."""
        if self.optimizer is None:
            raise MammothError(
                f"{type(self).__name__} has no optimizer yet; allowed: training after begin_task(task), "
                "which creates it (the harness calls begin_task first)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        scaler = getattr(self._context, "grad_scaler", None)  # precision=fp16 only
        self.backward(loss if scaler is None else scaler.scale(loss))
        self.after_backward()
        if clip_grad is not None:
            if scaler is not None:
                scaler.unscale_(self.optimizer)  # clip the true gradient
            nn.utils.clip_grad_norm_([p for p in self.parameters() if p.requires_grad], clip_grad)
        if scaler is None:
            self.optimizer.step()
        else:
            scaler.step(self.optimizer)
            scaler.update()
        return loss.item()

    def after_backward(self) -> None:
        """Called by :meth:`step` between the backward pass and the optimizer's step (a
        regulariser adds gradients of its own there: ReplayModel); nothing by default."""

    def backward(self, loss: Tensor) -> None:
        """Back-propagate ``loss``, a loss of the step ``observe`` takes (:meth:`step` calls it; a
        method that steps its optimizer itself calls it for each backward pass of its step): on
        several processes the engine averages these gradients over the ranks
        (``context.backward``). A method's inner loops (a warm-up, a correction, a Fisher pass)
        call ``loss.backward()``: every rank computes them whole."""
        backward = getattr(self._context, "backward", None)  # the engine's context; None before attach
        if backward is None:
            loss.backward()
        else:
            backward(loss)

    def replay_rows(self, batch_size: int) -> int:
        """The rows of the replay minibatch that a step on a batch of ``batch_size`` examples draws
        now (0: none; a step on several processes is split over the ranks only when they divide)."""
        return 0

    def memory_examples(self) -> Optional[tuple[Tensor, Tensor]]:
        """A method with ``has_memory``: its stored examples (non-augmented, as ``not_aug_inputs``)
        and their labels, whose class means the nearest-mean-of-exemplars evaluation computes;
        None without a memory or while it is empty."""
        return None

    def nme_features(self, x: Tensor) -> Tensor:
        """The features the nearest-mean-of-exemplars evaluation compares (``x`` normalised by the
        test transform): the backbone's ``returnt="features"``."""
        return self.net(x, returnt="features")

    def extra_state(self) -> dict[str, Any]:
        """What a checkpoint needs beyond ``state_dict()`` (e.g. a replay buffer); empty by default."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned; nothing by default."""


def _positional_arity(function: Any) -> int | None:
    """The number of positional parameters of ``function`` after ``self`` (None with ``*args``)."""
    try:
        parameters = list(inspect.signature(function).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    if any(parameter.kind is parameter.VAR_POSITIONAL for parameter in parameters):
        return None
    return sum(parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD) for parameter in parameters)


def check_milestones(key: str, milestones: Any) -> tuple[int, ...]:
    """``milestones`` as a tuple if they are increasing positive integers (epochs), else a ConfigError."""
    values = tuple(milestones) if isinstance(milestones, (list, tuple)) else None
    if values is None or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values) or any(
        b <= a for a, b in zip(values, values[1:])
    ):
        shown = list(milestones) if isinstance(milestones, (list, tuple)) else milestones
        raise ConfigError(
            f"{key}={shown!r} is not a list of increasing positive epochs; allowed: e.g. [35, 45], or [] for a constant lr"
        )
    return values


def check_memory_fits(buffer_size: int, context: "TrainingContext", classes: int | None = None) -> None:
    """A memory of ``buffer_size`` examples must not exceed the run's training examples (all its
    tasks'): a one-line ConfigError says a memory that holds everything is joint training. With
    ``classes``, ``buffer_size`` is a memory per class of that many classes (``model.memory_per_class``)."""
    total = sum(len(context.task_data(task)) for task in range(context.n_tasks))
    if classes is not None and buffer_size * classes > total:
        raise ConfigError(
            f"model.memory_per_class={buffer_size} keeps {buffer_size * classes} examples of {classes} classes, more "
            f"than the {total} training examples of {context.name}; allowed: at most {total // classes} per class "
            "(a memory that holds everything is joint training: model=joint)"
        )
    if classes is None and buffer_size > total:
        raise ConfigError(
            f"model.buffer_size={buffer_size} is larger than the {total} training examples of {context.name}; "
            f"allowed: at most {total} (a buffer that holds everything is joint training: model=joint)"
        )


def check_memory_size(buffer_size: Optional[int], memory_per_class: Optional[int]) -> tuple[Optional[int], Optional[int]]:
    """``(buffer_size, memory_per_class)`` checked: exactly one set, and a positive integer."""
    error = exclusive_arguments_error("model", "a memory", {"buffer_size": buffer_size, "memory_per_class": memory_per_class})
    if error is not None:
        raise ConfigError(error)
    if buffer_size is not None:
        return check_positive_int("model.buffer_size", buffer_size), None
    return None, check_positive_int("model.memory_per_class", memory_per_class)


def classes_seen(context: "TrainingContext", task: int) -> int:
    """The classes a memory per class holds after ``task``: those of tasks ``0..task`` in
    class-IL; in domain-IL each task's classes count again (``n_classes * (task + 1)``), as the
    original Mammoth counts the classes seen (``models.utils.seen_classes``)."""
    if context.setting == "domain-il":
        return context.n_classes * (task + 1)
    return context.task_classes(task).stop


# ---- shared by the rehearsal methods (er, der, derpp) ----


def regularized_methods() -> list[str]:
    """The registered methods that take a regulariser (``+model/regularizer=NAME``), sorted."""
    return [name for name in MODELS.names() if getattr(MODELS.get(name).target, "accepts_regularizer", False)]


class ReplayModel(ContinualModel):
    """A ContinualModel with a reservoir :class:`ReplayBuffer`: ``buffer_size`` items in all, or
    ``memory_per_class`` items per class seen (exactly one of the two).

    A memory per class (PyCIL's ``fixed_memory``) grows at every :meth:`begin_task` to
    ``memory_per_class`` times the classes seen by the end of the task (:func:`classes_seen`):
    a reservoir keeps its items, fills the new slots with the next items offered, then samples
    the whole stream with the larger capacity (:meth:`ReplayBuffer.grow`); a method that keeps
    a class-balanced memory itself (iCaRL's herding, GEM) keeps :meth:`exemplars_per_class` per
    class. A method whose memory cannot grow sets ``supports_memory_per_class = False`` and
    refuses it in one line.

    ``minibatch_size`` is the replay batch size (None: that of the incoming batch);
    ``buffer_device`` is ``training`` (the buffer lives on the device of the examples it is
    given) or ``cpu``. Replay batches come back augmented by ``context.train_transform`` and
    on the training device. The buffer's generator is seeded from the run's generator in
    :meth:`attach`; the buffer is part of :meth:`extra_state`.

    ``regularizer`` is the ``model.regularizer`` node (``+model/regularizer=NAME``,
    :mod:`mammoth.models.regularizers`): the regulariser's term is added to the loss of every
    :meth:`step` (and its :meth:`after_backward` gradients to the step's), and its hooks run
    after :meth:`attach` and :meth:`begin_task` and before each ``observe``.
    A method whose steps do not all go through :meth:`step` sets ``accepts_regularizer = False``
    and refuses one.
    """

    #: Whether the method's training steps each go through :meth:`step` once, so that a
    #: regulariser's term is added to each (``+model/regularizer=NAME``).
    accepts_regularizer: ClassVar[bool] = True

    #: Whether the method's memory can be ``memory_per_class`` examples per class seen.
    supports_memory_per_class: ClassVar[bool] = True

    #: A memory whose class means the evaluation scores (nearest-mean-of-exemplars accuracy).
    has_memory: ClassVar[bool] = True

    #: Whether each task trains on its data joined with the memory (iCaRL's way: icarl, lucir, wa,
    #: podnet) rather than on a replay minibatch drawn at each step.
    trains_on_memory: ClassVar[bool] = False

    def __init__(
        self,
        net: MammothBackbone,
        dataset: Any,
        buffer_size: Optional[int] = None,
        memory_per_class: Optional[int] = None,
        minibatch_size: Optional[int] = None,
        buffer_device: Literal["training", "cpu"] = "training",
        regularizer: Optional[dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(net, dataset, **kwargs)
        self.regularizer = None
        if regularizer is not None:
            from mammoth.models.regularizers import build_regularizer  # lazy: the regularisers import this module's package

            if not self.accepts_regularizer:
                raise ConfigError(
                    f"model {type(self).__name__} takes no regularizer (its steps do not all go through step()); "
                    f"allowed: +model/regularizer=NAME with {', '.join(regularized_methods())}")
            self.regularizer = build_regularizer(regularizer)
            self.observe = self._regularized_observe  # type: ignore[method-assign]  # the regulariser's hook first
            # this run's method, with its regulariser (the class attributes are the method's alone)
            if not self.regularizer.supports_distributed:
                self.supports_distributed = False  # type: ignore[misc]
            if not self.regularizer.supports_fp16:
                self.supports_fp16 = False  # type: ignore[misc]
        if memory_per_class is not None and not self.supports_memory_per_class:
            raise ConfigError(
                f"model.memory_per_class={memory_per_class!r} is not supported by {type(self).__name__}, whose memory "
                "has a fixed size (docs/methods.md); allowed: model.buffer_size"
            )
        self.buffer_size, self.memory_per_class = check_memory_size(buffer_size, memory_per_class)
        if minibatch_size is not None:
            check_positive_int("model.minibatch_size", minibatch_size)
        self.minibatch_size = minibatch_size
        self.buffer_device = check_choice("model.buffer_device", buffer_device, BUFFER_DEVICES)
        # seed 0 until attach() seeds it from the run's generator: building a model draws nothing;
        # a memory per class starts at one class's size and grows at begin_task
        capacity = self.buffer_size if self.buffer_size is not None else self.memory_per_class
        self.buffer = ReplayBuffer(capacity, device="cpu" if self.buffer_device == "cpu" else None, seed=0)

    def memory_capacity(self, task: int) -> int:
        """The memory's total size while training ``task``: ``buffer_size``, or ``memory_per_class``
        times the classes seen by the end of ``task``."""
        if self.memory_per_class is None:
            return self.buffer_size
        return self.memory_per_class * classes_seen(self.context, task)

    def exemplars_per_class(self, classes: int) -> int:
        """What a class-balanced memory keeps of each of ``classes`` classes: ``memory_per_class``,
        or ``buffer_size // classes``."""
        return self.memory_per_class if self.memory_per_class is not None else self.buffer_size // classes

    def begin_task(self, task: int) -> None:
        """Record the task, make the optimizer and schedule; a memory per class grows to
        :meth:`memory_capacity`; then the regulariser's hook (an override must call
        ``super().begin_task(task)``)."""
        super().begin_task(task)
        if self.memory_per_class is not None:
            self.buffer.grow(self.memory_capacity(task))
        if self.regularizer is not None:
            self.regularizer.begin_task(self, task)

    def memory_examples(self) -> Optional[tuple[Tensor, Tensor]]:
        """The stored examples (non-augmented) and their labels, for the nearest-mean-of-exemplars
        evaluation; None while the memory is empty or stores no labels."""
        if self.buffer.is_empty() or self.buffer.labels is None:
            return None
        return self.buffer.examples, self.buffer.labels

    def training_data(self, task: int, data: "DataSource") -> "DataSource":
        """The task's data, joined with the memory's examples when :attr:`trains_on_memory`."""
        if not self.trains_on_memory or self.buffer.is_empty():
            return data
        return concat_sources([data, InMemorySource(self.buffer.examples.cpu(), self.buffer.labels.cpu())])

    def replay_rows(self, batch_size: int) -> int:
        """The rows :meth:`replay_batch` draws in a step on ``batch_size`` examples: ``minibatch_size``
        (else ``batch_size``), at most the buffer's items; 0 while it is empty, and 0 for a method
        that :attr:`trains_on_memory` (no replay minibatch is split over the ranks)."""
        if self.trains_on_memory:
            return 0
        size = self.minibatch_size if self.minibatch_size is not None else batch_size
        return min(size, len(self.buffer))

    def replay_batch(self, batch_size: int, device: Optional[torch.device] = None,
                     augment: bool = True) -> Optional[ReplayBatch]:
        """A replay minibatch of ``minibatch_size`` items, else as many as the batch observed:
        ``batch_size`` (``observe`` passes its inputs' size), or on several processes the whole
        batch's, ``context.shard.size``; on ``device`` (None: the backbone's; ``observe`` passes its
        inputs' device, which is cheaper to get); None while the buffer is empty. On several
        processes it is drawn whole on every rank (the generators stay alike) and each rank gets
        its equal part when the step is split (:attr:`~mammoth.engine.context.TrainingContext.shard`;
        :meth:`replay_rows` says how many it draws). ``augment=False``: normalised by
        ``context.test_transform`` instead of augmented."""
        if self.buffer.is_empty():
            return None
        shard = self.context.shard
        whole = batch_size if shard is None else shard.size
        size = self.minibatch_size if self.minibatch_size is not None else whole
        batch = self.buffer.sample(size, transform=self.context.train_transform if augment else self.context.test_transform)
        if shard is not None:
            rows = shard.of(len(batch.indices))
            batch = ReplayBatch(*(None if value is None else rows.rows(value) for value in batch))
        device = self.device if device is None else device
        return batch if batch.examples.device == device else batch.to(device)

    def attach(self, context: "TrainingContext") -> None:
        """Receive the context (the buffer must fit in the run's training data), seed the buffer's
        generator from the run's generator, and let the buffer gather what a step on several
        processes stores from every rank (``context.gather_shards``: the reservoir sees the whole
        batch, as in one process; nothing is gathered in one process)."""
        if self.memory_per_class is None:
            check_memory_fits(self.buffer_size, context)
        else:
            check_memory_fits(self.memory_per_class, context, classes=classes_seen(context, context.n_tasks - 1))
        super().attach(context)
        self.buffer.generator.manual_seed(int(torch.randint(0, 2**62, (1,), generator=context.generator)))
        self.buffer.gather = context.gather_shards
        if self.regularizer is not None:
            self.regularizer.attach(self)

    def _regularized_observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor) -> float:
        """The method's ``observe``, after the regulariser's ``before_observe`` (with a regulariser only)."""
        self.regularizer.before_observe(self)
        return type(self).observe(self, inputs, labels, not_aug_inputs)

    def step(self, loss: Tensor, clip_grad: float | None = None) -> float:
        """:meth:`ContinualModel.step` on ``loss`` plus the regulariser's term (if any, and if it has one this step)."""
        if self.regularizer is not None:
            term = self.regularizer.loss(self)
            if term is not None:
                loss = loss + term
        return super().step(loss, clip_grad)

    def after_backward(self) -> None:
        """The regulariser's gradients (if any), added to the step's before the optimizer steps."""
        if self.regularizer is not None:
            self.regularizer.after_backward(self)

    def extra_state(self) -> dict[str, Any]:
        """The replay buffer's state (and the regulariser's)."""
        state = {"buffer": self.buffer.state_dict()}
        if self.regularizer is not None:
            state["regularizer"] = self.regularizer.state_dict()
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the replay buffer (on the training device when ``buffer_device`` is ``training``; a
        memory per class first grows to the saved capacity) and the regulariser."""
        if self.memory_per_class is not None:
            self.buffer.grow(int(state["buffer"]["capacity"]))
        self.buffer.load_state_dict(state["buffer"])
        if self.buffer_device == "training" and not self.buffer.is_empty():
            self.buffer.to(self.device)
        if self.regularizer is not None:
            self.regularizer.load_state_dict(state["regularizer"])
