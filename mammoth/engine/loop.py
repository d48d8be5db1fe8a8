"""The task loop: train each task, evaluate on every task seen so far, checkpoint, resume."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from mammoth.config.value_checks import check_positive_int
from mammoth.engine.checkpoint import CHECKPOINT_NAME, TrainingState, load_checkpoint, save_checkpoint
from mammoth.engine.evaluation import evaluate_tasks
from mammoth.errors import TrainingError

log = logging.getLogger("mammoth")


def train_task(model: Any, dataset: Any, train_x: torch.Tensor, train_y: torch.Tensor,
               generator: torch.Generator, device: torch.device, description: str = "",
               on_epoch_end: Callable[[int, float], None] | None = None) -> float:
    """Run ``dataset.config.n_epochs`` epochs of ``model.observe`` over one task's data.

    Batches are shuffled with ``generator``, converted and augmented as whole batches on
    ``device``. After each epoch ``model.end_epoch(epoch)`` runs, then
    ``on_epoch_end(epoch, mean loss of the epoch)``; returns the mean loss of the last epoch.
    Without data (a method that does not train on this task, e.g. ``joint`` before the last
    task) nothing runs, no hook included, and the loss is 0.
    """
    from tqdm.auto import tqdm

    if len(train_y) == 0:
        return 0.0
    batch_size, epochs = dataset.config.batch_size, dataset.config.n_epochs
    x, y = train_x.to(device), train_y.to(device)
    steps_per_epoch = -(-len(y) // batch_size)
    last_epoch_loss = 0.0
    with tqdm(total=epochs * steps_per_epoch, desc=description, disable=None, leave=False) as progress:
        for epoch in range(epochs):
            order = torch.randperm(len(y), generator=generator).to(device)
            last_epoch_loss = 0.0
            for start in range(0, len(y), batch_size):
                index = order[start : start + batch_size]
                not_aug_inputs = dataset.to_float(x.index_select(0, index))  # faster than x[index]
                inputs = dataset.train_transform(not_aug_inputs, generator)
                loss = model.observe(inputs, y.index_select(0, index), not_aug_inputs)
                if not math.isfinite(loss):
                    raise TrainingError(
                        f"the loss became {loss} in {description or 'training'}, epoch {epoch + 1}/{epochs}, "
                        f"step {start // batch_size + 1}/{steps_per_epoch}; the run stopped without results "
                        "(lower model.lr, or check the data)"
                    )
                last_epoch_loss += loss
                progress.update()
            progress.set_postfix(loss=f"{last_epoch_loss / max(steps_per_epoch, 1):.3f}")
            model.end_epoch(epoch)
            if on_epoch_end is not None:
                on_epoch_end(epoch, last_epoch_loss / max(steps_per_epoch, 1))
    return last_epoch_loss / max(steps_per_epoch, 1)


def run_tasks(model: Any, dataset: Any, device: torch.device, run_dir: Path, seed: int, config: dict,
              resume: bool = False, stop_after_task: int | None = None,
              on_task_end: Callable[[int, TrainingState], None] | None = None,
              on_epoch_end: Callable[[int, int, float], None] | None = None) -> TrainingState:
    """Train and evaluate task after task, with a checkpoint in ``run_dir`` after each one.

    With ``resume`` the loop continues after the last task of the checkpoint, whose config
    must match ``config``; it ends with the same results as an uninterrupted run.
    ``stop_after_task`` stops (resumably) once that many tasks of the whole run are done (a
    resume past it trains nothing). ``on_epoch_end(task, epoch, loss)`` and
    ``on_task_end(task, state)`` report progress. A non-finite loss or weight raises a
    TrainingError; the checkpoint of the last finished task stays.
    """
    if stop_after_task is not None:
        check_positive_int("stop_after_task", stop_after_task)
    generator = torch.Generator().manual_seed(seed)
    state = TrainingState.empty(dataset.setting)
    fingerprint = dataset.fingerprint()
    if resume:
        state = load_checkpoint(run_dir / CHECKPOINT_NAME, model, generator, config, dataset=dataset)
        log.info("Resuming %s after task %d of %d", run_dir, state.next_task, dataset.n_tasks)
    test_sets = [_test_set(dataset, task) for task in range(state.next_task)]
    for task in range(state.next_task, dataset.n_tasks):
        if stop_after_task is not None and task >= stop_after_task:
            break
        data = dataset.get_task(task)
        test_sets.append((data.test_x, data.test_y))
        started = time.perf_counter()
        model.begin_task(task)
        train_x, train_y = model.training_data(task, data.train_x, data.train_y)
        train_task(model, dataset, train_x, train_y, generator, device, f"task {task + 1}/{dataset.n_tasks}",
                   on_epoch_end=None if on_epoch_end is None else lambda epoch, loss, t=task: on_epoch_end(t, epoch, loss))
        model.end_task(task)
        _check_finite_weights(model, task, dataset.n_tasks)
        state.train_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        for kind, row in evaluate_tasks(model, dataset, test_sets, device).items():
            state.accuracies[kind].append(row)
        state.eval_seconds.append(time.perf_counter() - started)
        state.next_task = task + 1
        save_checkpoint(run_dir / CHECKPOINT_NAME, model, generator, state, config, data=fingerprint)
        if on_task_end is not None:
            on_task_end(task, state)
    return state


def _check_finite_weights(model: Any, task: int, n_tasks: int) -> None:
    """Raise a TrainingError if a weight of the model became NaN or infinite in ``task``."""
    flags = [torch.isfinite(parameter).all() for parameter in model.parameters()]
    if flags and not bool(torch.stack(flags).all()):  # one device sync for all parameters
        raise TrainingError(
            f"the weights became non-finite (nan or inf) in task {task + 1}/{n_tasks}; the run stopped "
            "without results (lower model.lr, or check the data)"
        )


def _test_set(dataset: Any, task: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = dataset.get_task(task)
    return data.test_x, data.test_y
