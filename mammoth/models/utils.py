"""Helpers shared by several CL methods: frozen network copies, class ranges, buffer shrinking,
batch-norm statistics, and the train/eval mode of a network for a block (:func:`training_mode`)."""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from mammoth.errors import ConfigError


@contextlib.contextmanager
def training_mode(module: nn.Module, training: bool) -> Iterator[nn.Module]:
    """``module`` in train mode (``training``) or eval mode for the ``with`` block, then back in
    the mode it was in, even if the block raises."""
    was_training = module.training
    module.train(training)
    try:
        yield module
    finally:
        module.train(was_training)


def evaluation_mode(module: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """``with evaluation_mode(module):`` the block runs with ``module`` in eval mode, then its mode is restored."""
    return training_mode(module, False)


class Frozen:
    """A frozen copy of a network, kept outside the method's module tree.

    Being no submodule, it is never put back in train mode by ``model.train()``, never
    optimised, never in ``state_dict()``; a method that needs it across a checkpoint saves
    :meth:`state_dict` in its ``extra_state``. Calls run in eval mode without gradients.
    """

    def __init__(self, net: nn.Module) -> None:
        self.net = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, x: Tensor, returnt: str = "out") -> Any:
        """The frozen network's output for ``x`` (``returnt`` as in ``MammothBackbone.forward``)."""
        return self.net(x, returnt=returnt)

    def state_dict(self) -> dict[str, Tensor]:
        """The frozen weights."""
        return self.net.state_dict()

    @classmethod
    def restore(cls, like: nn.Module, state: dict[str, Tensor]) -> "Frozen":
        """A frozen copy of ``like`` with the weights ``state`` (from :meth:`state_dict`)."""
        frozen = cls(like)
        frozen.net.load_state_dict(state)
        return frozen


def class_bounds(benchmark: Any, task: int) -> tuple[int, int]:
    """``(past, seen)``: the number of classes of the tasks before ``task``, and up to ``task`` included
    (``benchmark``: anything with ``task_classes``, e.g. the model's ``context``)."""
    classes = benchmark.task_classes(task)
    return classes.start, classes.stop


def require_class_il(name: str, dataset: Any) -> None:
    """Refuse a dataset that is not class-incremental (the method splits logits by task)."""
    if getattr(dataset, "setting", "class-il") != "class-il":
        raise ConfigError(
            f"model={name} does not support {dataset.setting} datasets ({getattr(dataset, 'name', '?')}); "
            "allowed: class-il datasets"
        )


def squared_norm(net: nn.Module) -> Tensor:
    """The sum of the squares of all parameters (differentiable)."""
    return sum(parameter.pow(2).sum() for parameter in net.parameters())


def keep_first(buffer: Any, per_group: int, by: str = "labels") -> None:
    """Shrink ``buffer`` to the first ``per_group`` items of every value of its field ``by``
    (``labels``: per class; ``task_labels``: per task), values in increasing order, items in
    slot order, as the original Mammoth's ``fill_buffer`` does before adding a task."""
    if buffer.is_empty():
        return
    fields = {name: getattr(buffer, name).clone() for name in buffer.fields}
    buffer.clear()
    groups = fields[by]
    for value in groups.unique():
        index = (groups == value).nonzero().flatten()[:per_group]
        buffer.add(**{name: stored[index] for name, stored in fields.items()})


def seen_classes(dataset: Any, task: int) -> int:
    """How many classes the tasks up to ``task`` have shown, counted as the original Mammoth does
    (``classes per task * (task + 1)``; in domain-IL each task counts its classes again)."""
    if dataset.setting == "class-il":
        return dataset.task_classes(task).stop
    return dataset.n_classes * (task + 1)


class bn_track_stats:
    """``with bn_track_stats(net, False):`` batch-norm layers in train mode normalise with the batch's
    statistics without updating their running ones (the original Mammoth's ``bn_track_stats``)."""

    def __init__(self, net: nn.Module, enabled: bool) -> None:
        self.layers = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.enabled = enabled

    def __enter__(self) -> None:
        self.previous = [layer.track_running_stats for layer in self.layers]
        if not self.enabled:
            for layer in self.layers:
                layer.track_running_stats = False

    def __exit__(self, *exc: Any) -> None:
        for layer, previous in zip(self.layers, self.previous):
            layer.track_running_stats = previous


def weighted_distance(net: nn.Module, weights: Tensor, anchor: Tensor) -> Tensor:
    """``sum(weights * (theta - anchor)**2)``, differentiable in the trainable parameters ``theta`` of
    ``net``; ``weights`` and ``anchor`` are flat vectors in ``parameters()`` order (as
    ``get_params`` returns them; frozen parameters, which do not move, add nothing). The sum runs
    one parameter at a time, in that order, as the per-parameter penalties of EWC, MAS and RWalk do."""
    total = torch.zeros((), device=weights.device, dtype=weights.dtype)
    offset = 0
    for parameter in net.parameters():
        size = parameter.numel()
        if parameter.requires_grad:
            weight = weights[offset : offset + size].view_as(parameter)
            total = total + (weight * (parameter - anchor[offset : offset + size].view_as(parameter)).pow(2)).sum()
        offset += size
    return total


def flat_gradient(net: nn.Module, loss: Tensor) -> Tensor:
    """The gradient of ``loss`` with respect to every parameter of ``net``, as one flat vector in
    ``parameters()`` order (zeros for frozen parameters and those ``loss`` does not use), by
    ``torch.autograd.grad``: the parameters' ``.grad`` is left untouched, so an importance pass
    outside the training step (run in float32, outside autocast) needs no gradient scaler and
    arms no gradient averaging."""
    parameters = list(net.parameters())
    trainable = [parameter for parameter in parameters if parameter.requires_grad]
    grads = iter(torch.autograd.grad(loss, trainable, allow_unused=True))
    pieces = []
    for parameter in parameters:
        grad = next(grads) if parameter.requires_grad else None
        pieces.append(torch.zeros(parameter.numel(), device=parameter.device, dtype=parameter.dtype)
                      if grad is None else grad.reshape(-1))
    return torch.cat(pieces)
