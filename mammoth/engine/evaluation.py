"""Evaluation after each task: Class-IL, Task-IL and Domain-IL accuracy on every task seen so far,
and for a method with a memory the Class-IL accuracy of the nearest mean of its exemplars (NME)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from mammoth.datasets.source import DataSource, InMemorySource
from mammoth.engine.context import TrainingContext
from mammoth.models.utils import evaluation_mode
from mammoth.errors import TrainingError

#: The accuracy kinds of each setting, as keys of the results file.
SETTING_METRICS = {"class-il": ("class_il", "task_il"), "domain-il": ("domain_il",)}

#: The accuracy kind of the nearest-mean-of-exemplars classifier (Class-IL), beside the classifier's.
NME_KIND = "nme_class_il"

#: Added to a feature's norm before dividing by it, as PyCIL's ``EPSILON`` (a zero feature stays zero).
NME_EPSILON = 1e-8

#: The evaluation batch of a benchmark held in memory: its test data is in memory already, so a
#: large batch adds little and evaluates faster than the dataset's batch size.
IN_MEMORY_EVAL_BATCH_SIZE = 512


def evaluation_batch_size(context: TrainingContext) -> int:
    """The batch size :func:`evaluate_tasks` reads test data in: a streamed benchmark's
    ``dataset.batch_size`` (as the original Mammoth evaluates every benchmark; each batch of
    decoded 224-pixel images and its activations is what evaluation adds to peak memory), else
    :data:`IN_MEMORY_EVAL_BATCH_SIZE`."""
    return context.batch_size if context.streaming else IN_MEMORY_EVAL_BATCH_SIZE


def accuracy_kinds(setting: str, model: object) -> tuple[str, ...]:
    """The accuracy kinds a run of ``model`` reports: its setting's (:data:`SETTING_METRICS`), and
    :data:`NME_KIND` for a class-IL method with a memory (``has_memory``)."""
    kinds = SETTING_METRICS[setting]
    return (*kinds, NME_KIND) if setting == "class-il" and getattr(model, "has_memory", False) else kinds


def normalized(features: Tensor) -> Tensor:
    """Each row of ``features`` divided by its L2 norm plus :data:`NME_EPSILON` (PyCIL's normalisation)."""
    return features / (features.norm(dim=1, keepdim=True) + NME_EPSILON)


@torch.no_grad()
def memory_class_means(model: nn.Module, context: TrainingContext, batch_size: int) -> tuple[Tensor, Tensor] | None:
    """``(classes, means)``: the classes in ``model.memory_examples()`` (increasing) and each one's
    mean of the normalised ``model.nme_features`` of its stored examples under the test transform
    (no flips), normalised again, as PyCIL's class means; None without a memory or while it is
    empty. The memory is the same on every rank, and so are the means."""
    memory = model.memory_examples()
    if memory is None:
        return None
    examples, labels = memory
    source = InMemorySource(examples, labels.cpu())
    parts = []
    for batch in context.batches(source, batch_size, shuffle=False, augment=False):
        with context.autocast():  # as the test features are computed
            parts.append(normalized(model.nme_features(batch.inputs).float()))
    features = torch.cat(parts)
    labels = labels.to(features.device)
    classes = labels.unique()
    sums = features.new_zeros(len(classes), features.shape[1]).index_add_(0, torch.searchsorted(classes, labels), features)
    means = sums / torch.bincount(torch.searchsorted(classes, labels), minlength=len(classes))[:, None]
    return classes, means / means.norm(dim=1, keepdim=True)


def nme_scores(features: Tensor, classes: Tensor, means: Tensor, n_classes: int) -> Tensor:
    """Scores over ``n_classes`` classes: ``-||mean_c - f / (||f|| + eps)||**2`` for the classes with a
    mean (``classes``, ``means``), ``-inf`` for the others (no exemplar: never predicted)."""
    distances = torch.cdist(normalized(features.float()), means.to(features.device)).pow(2)
    scores = distances.new_full((features.shape[0], n_classes), float("-inf"))
    scores[:, classes.to(features.device)] = -distances
    return scores


def predictions(logits: Tensor, kind: str, seen_classes: int, task_classes: range) -> Tensor:
    """Predicted labels for one accuracy kind.

    ``class_il``: argmax over the classes seen so far; ``task_il``: argmax over the classes of
    the example's task (the other tasks' logits masked); ``domain_il``: argmax over all
    ``seen_classes`` (every task shares the label space).
    """
    start, stop = (task_classes.start, task_classes.stop) if kind == "task_il" else (0, seen_classes)
    scores = logits[:, start:stop]
    predicted = scores.argmax(dim=1) + start
    # a row that rules out every class it may choose from (-inf: no prototype yet) predicts nothing
    return predicted.masked_fill(~torch.isfinite(scores).any(dim=1), -1)


@torch.no_grad()
def evaluate_tasks(
    model: nn.Module, context: TrainingContext, test_sources: Sequence[DataSource], batch_size: int | None = None,
    trained_tasks: int | None = None, top5: bool = False,
    sum_counts: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, list[float]]:
    """Accuracy in percent on ``test_sources`` (the test data of tasks ``0, 1, ...``), for each
    accuracy kind of the context's setting; each source is read batch by batch (``batch_size``,
    None: :func:`evaluation_batch_size`), normalised, on ``context.device``.

    ``trained_tasks`` (default: every source's task) is how many tasks the model has trained:
    Class-IL scores the classes of those tasks, and a task not trained yet (``eval_future``, or
    the randomly initialised network with ``trained_tasks=0``) the classes up to its own, as the
    original Mammoth scores the next task before training it. With ``top5`` the result also has
    ``top5``: how often the label is among the five best Class-IL scores (each task its own).

    With ``sum_counts`` (a sum over the ranks of a distributed run), each source is this rank's
    shard of the task's data: the correct counts and the sizes of every task are summed with it,
    in one call, before the percentages are taken.

    For a class-IL method with a memory (:func:`accuracy_kinds`) the result also has
    :data:`NME_KIND`: Class-IL accuracy of the nearest class mean (:func:`memory_class_means`,
    computed once per call from the memory; :func:`nme_scores` of ``model.nme_features``), and
    with ``top5`` ``nme_top5``; a class without exemplars is never predicted.

    Predictions come from the method itself: ``model(x)`` (``ContinualModel.forward``, the one
    prediction hook) returns scores over all classes; a method that predicts differently
    (nearest-mean, a bias correction) overrides ``forward``. The backbone is never called
    behind the method's back. ``model`` (and with it ``model.net``) is put in eval mode for the
    duration and restored afterwards.

    Scores that are NaN or ``+inf``, or a row without one finite score, raise a TrainingError
    naming the task evaluated, as a non-finite loss does in training (``-inf`` is allowed: a
    method may rule a class out, as iCaRL does for classes without exemplars; a row that rules
    out every class of a task it scores counts as wrong, and before the first task a row may
    rule out every class).
    """
    kinds = SETTING_METRICS[context.setting]
    nme = NME_KIND in accuracy_kinds(context.setting, model)
    batch_size = evaluation_batch_size(context) if batch_size is None else batch_size
    trained = len(test_sources) if trained_tasks is None else trained_tasks
    scored = (*kinds, *(("top5",) if top5 else ()), *((NME_KIND, "nme_top5") if nme and top5 else (NME_KIND,) if nme else ()))
    counts = torch.zeros(len(test_sources), len(scored) + 1, dtype=torch.int64)  # correct per kind, then size
    with evaluation_mode(model):
        means = memory_class_means(model, context, batch_size) if nme else None
        for task, source in enumerate(test_sources):
            seen_classes = visible_classes(context, task, trained)
            correct = dict.fromkeys(scored, 0)
            valid = torch.ones((), dtype=torch.bool, device=context.device)
            for batch in context.batches(source, batch_size, shuffle=False, augment=False):
                with context.autocast():
                    logits = model(batch.inputs).float()
                valid &= _scores_are_valid(logits, every_row_finite=trained > 0)
                for kind in kinds:
                    predicted = predictions(logits, kind, seen_classes, context.task_classes(task))
                    correct[kind] += int((predicted == batch.labels).sum())
                if top5:
                    correct["top5"] += int(top5_hits(logits, batch.labels, seen_classes).sum())
                if nme and means is not None:
                    with context.autocast():
                        features = model.nme_features(batch.inputs)
                    scores = nme_scores(features, *means, context.n_classes)
                    predicted = predictions(scores, "class_il", seen_classes, context.task_classes(task))
                    correct[NME_KIND] += int((predicted == batch.labels).sum())
                    if top5:
                        correct["nme_top5"] += int(top5_hits(scores, batch.labels, seen_classes).sum())
            if not bool(valid):  # one device sync per task
                after = f"after task {trained}/{context.n_tasks}" if trained else "before the first task"
                raise TrainingError(
                    f"the model's outputs became non-finite (nan or inf) on the test data of task {task + 1}, "
                    f"evaluated {after}; the run stopped without results (lower model.lr, or check the data)"
                )
            counts[task] = torch.tensor([correct[kind] for kind in scored] + [len(source)])
    if sum_counts is not None:
        counts = sum_counts(counts)
    sizes = counts[:, -1].clamp(min=1)
    return {kind: [100.0 * int(correct) / int(size) for correct, size in zip(counts[:, column], sizes)]
            for column, kind in enumerate(scored)}


def visible_classes(context: TrainingContext, task: int, trained_tasks: int) -> int:
    """How many classes (from 0) Class-IL scores on ``task`` after ``trained_tasks`` tasks: those
    of the tasks trained, or up to ``task``'s own when it is not trained yet; all in Domain-IL."""
    if context.setting == "domain-il":
        return context.n_classes
    return context.task_classes(max(task, trained_tasks - 1)).stop


def top5_hits(logits: Tensor, labels: Tensor, seen_classes: int) -> Tensor:
    """A boolean per example: its label is among the five best of the first ``seen_classes`` scores."""
    best = logits[:, :seen_classes].topk(min(5, seen_classes), dim=1)
    return ((best.indices == labels[:, None]) & torch.isfinite(best.values)).any(dim=1)


def reports_top5(context: TrainingContext) -> bool:
    """Whether a run reports top-5 accuracy: Class-IL with more than 5 classes in every task."""
    return context.setting == "class-il" and all(len(context.task_classes(t)) > 5 for t in range(context.n_tasks))


def _scores_are_valid(logits: Tensor, every_row_finite: bool = True) -> Tensor:
    """A boolean scalar tensor: no score is NaN or ``+inf`` and (with ``every_row_finite``) every
    row has a finite score; before the first task a method may have no class to score (a
    prototype method), and its rows then predict nothing."""
    valid = ~(torch.isnan(logits) | (logits == float("inf"))).any()
    return valid & torch.isfinite(logits).any(dim=1).all() if every_row_finite else valid
