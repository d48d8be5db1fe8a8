"""Evaluation after each task: Class-IL, Task-IL and Domain-IL accuracy on every task seen so far."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

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
    model: nn.Module, dataset: Any, test_sets: list[tuple[Tensor, Tensor]], device: torch.device, batch_size: int = 512
) -> dict[str, list[float]]:
    """Accuracy in percent on ``test_sets`` (uint8 images, labels of tasks ``0, 1, ...``, all seen
    so far), for each accuracy kind of the dataset's setting.

    Predictions come from the method itself: ``model(x)`` (``ContinualModel.forward``, the one
    prediction hook) returns scores over all classes; a method that predicts differently
    (nearest-mean, a bias correction) overrides ``forward``. The backbone is never called
    behind the method's back. ``model`` (and with it ``model.net``) is put in eval mode for the
    duration and restored afterwards.

    Scores that are NaN or ``+inf``, or a row without one finite score, raise a TrainingError
    naming the task evaluated, as a non-finite loss does in training (``-inf`` is allowed: a
    method may rule a class out, as iCaRL does for classes without exemplars).
    """
    kinds = SETTING_METRICS[dataset.setting]
    last_task = len(test_sets) - 1
    seen_classes = dataset.n_classes if dataset.setting == "domain-il" else dataset.task_classes(last_task).stop
    accuracies: dict[str, list[float]] = {kind: [] for kind in kinds}
    was_training = model.training
    model.eval()
    try:
        for task, (test_x, test_y) in enumerate(test_sets):
            correct = dict.fromkeys(kinds, 0)
            valid = torch.ones((), dtype=torch.bool, device=device)
            for start in range(0, len(test_y), batch_size):
                x = dataset.test_transform(dataset.to_float(test_x[start : start + batch_size].to(device)))
                y = test_y[start : start + batch_size].to(device)
                logits = model(x)
                valid &= _scores_are_valid(logits)
                for kind in kinds:
                    predicted = predictions(logits, kind, seen_classes, dataset.task_classes(task))
                    correct[kind] += int((predicted == y).sum())
            if not bool(valid):  # one device sync per task
                raise TrainingError(
                    f"the model's outputs became non-finite (nan or inf) on the test data of task {task + 1}, "
                    f"evaluated after task {last_task + 1}/{dataset.n_tasks}; the run stopped without results "
                    "(lower model.lr, or check the data)"
                )
            for kind in kinds:
                accuracies[kind].append(100.0 * correct[kind] / max(len(test_y), 1))
    finally:
        model.train(was_training)
    return accuracies


def _scores_are_valid(logits: Tensor) -> Tensor:
    """A boolean scalar tensor: no score is NaN or ``+inf`` and every row has a finite score."""
    finite = torch.isfinite(logits)
    return ~(torch.isnan(logits) | (logits == float("inf"))).any() & finite.any(dim=1).all()
