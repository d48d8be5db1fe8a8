"""Evaluation after each task: Class-IL, Task-IL and Domain-IL accuracy on every task seen so far."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mammoth.datasets.source import DataSource
from mammoth.engine.context import TrainingContext, evaluation_mode
from mammoth.errors import TrainingError

#: The accuracy kinds of each setting, as keys of the results file.
SETTING_METRICS = {"class-il": ("class_il", "task_il"), "domain-il": ("domain_il",)}


def predictions(logits: Tensor, kind: str, seen_classes: int, task_classes: range) -> Tensor:
    """Predicted labels for one accuracy kind.

    ``class_il``: argmax over the classes seen so far; ``task_il``: argmax over the classes of
    the example's task (the other tasks' logits masked); ``domain_il``: argmax over all
    ``seen_classes`` (every task shares the label space).
    """
    if kind == "task_il":
        return logits[:, task_classes.start : task_classes.stop].argmax(dim=1) + task_classes.start
    return logits[:, :seen_classes].argmax(dim=1)


@torch.no_grad()
def evaluate_tasks(
    model: nn.Module, context: TrainingContext, test_sources: Sequence[DataSource], batch_size: int = 512
) -> dict[str, list[float]]:
    """Accuracy in percent on ``test_sources`` (the test data of tasks ``0, 1, ...``, all seen so
    far), for each accuracy kind of the context's setting; each source is read batch by batch,
    normalised, on ``context.device``.

    Predictions come from the method itself: ``model(x)`` (``ContinualModel.forward``, the one
    prediction hook) returns scores over all classes; a method that predicts differently
    (nearest-mean, a bias correction) overrides ``forward``. The backbone is never called
    behind the method's back. ``model`` (and with it ``model.net``) is put in eval mode for the
    duration and restored afterwards.

    Scores that are NaN or ``+inf``, or a row without one finite score, raise a TrainingError
    naming the task evaluated, as a non-finite loss does in training (``-inf`` is allowed: a
    method may rule a class out, as iCaRL does for classes without exemplars).
    """
    kinds = SETTING_METRICS[context.setting]
    last_task = len(test_sources) - 1
    seen_classes = context.n_classes if context.setting == "domain-il" else context.task_classes(last_task).stop
    accuracies: dict[str, list[float]] = {kind: [] for kind in kinds}
    with evaluation_mode(model):
        for task, source in enumerate(test_sources):
            correct = dict.fromkeys(kinds, 0)
            valid = torch.ones((), dtype=torch.bool, device=context.device)
            for batch in context.batches(source, batch_size, shuffle=False, augment=False):
                logits = model(batch.inputs)
                valid &= _scores_are_valid(logits)
                for kind in kinds:
                    predicted = predictions(logits, kind, seen_classes, context.task_classes(task))
                    correct[kind] += int((predicted == batch.labels).sum())
            if not bool(valid):  # one device sync per task
                raise TrainingError(
                    f"the model's outputs became non-finite (nan or inf) on the test data of task {task + 1}, "
                    f"evaluated after task {last_task + 1}/{context.n_tasks}; the run stopped without results "
                    "(lower model.lr, or check the data)"
                )
            for kind in kinds:
                accuracies[kind].append(100.0 * correct[kind] / max(len(source), 1))
    return accuracies


def _scores_are_valid(logits: Tensor) -> Tensor:
    """A boolean scalar tensor: no score is NaN or ``+inf`` and every row has a finite score."""
    finite = torch.isfinite(logits)
    return ~(torch.isnan(logits) | (logits == float("inf"))).any() & finite.any(dim=1).all()
