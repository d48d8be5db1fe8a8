"""The task loop: train each task, evaluate on every task seen so far, checkpoint, resume."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from mammoth.errors import ConfigError
from mammoth.evaluation import SETTING_METRICS, evaluate_tasks

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
log = logging.getLogger("mammoth")


@dataclasses.dataclass
class TrainingState:
    """What the loop has produced so far; saved in every checkpoint."""

    next_task: int
    accuracies: dict[str, list[list[float]]]
    train_seconds: list[float]
    eval_seconds: list[float]

    @classmethod
    def empty(cls, setting: str) -> "TrainingState":
        """The state before the first task."""
        return cls(0, {kind: [] for kind in SETTING_METRICS[setting]}, [], [])


def train_task(model: Any, dataset: Any, train_x: torch.Tensor, train_y: torch.Tensor,
               generator: torch.Generator, device: torch.device, description: str = "",
               on_epoch_end: Callable[[int, float], None] | None = None) -> float:
    """Run ``dataset.config.n_epochs`` epochs of ``model.observe`` over one task's data.

    Batches are shuffled with ``generator``, converted and augmented as whole batches on
    ``device``. After each epoch ``model.end_epoch(epoch)`` runs, then
    ``on_epoch_end(epoch, mean loss of the epoch)``; returns the mean loss of the last epoch.
    """
    from tqdm.auto import tqdm

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
                last_epoch_loss += model.observe(inputs, y.index_select(0, index), not_aug_inputs)
                progress.update()
            progress.set_postfix(loss=f"{last_epoch_loss / steps_per_epoch:.3f}")
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
    ``stop_after_task`` stops (resumably) once that task is done. ``on_epoch_end(task, epoch,
    loss)`` and ``on_task_end(task, state)`` report progress.
    """
    generator = torch.Generator().manual_seed(seed)
    state = TrainingState.empty(dataset.setting)
    if resume:
        state = load_checkpoint(run_dir / CHECKPOINT_NAME, model, generator, config)
        log.info("Resuming %s after task %d of %d", run_dir, state.next_task, dataset.n_tasks)
    test_sets = [_test_set(dataset, task) for task in range(state.next_task)]
    for task in range(state.next_task, dataset.n_tasks):
        data = dataset.get_task(task)
        test_sets.append((data.test_x, data.test_y))
        started = time.perf_counter()
        model.begin_task(task)
        train_x, train_y = model.training_data(task, data.train_x, data.train_y)
        train_task(model, dataset, train_x, train_y, generator, device, f"task {task + 1}/{dataset.n_tasks}",
                   on_epoch_end=None if on_epoch_end is None else lambda epoch, loss, t=task: on_epoch_end(t, epoch, loss))
        model.end_task(task)
        state.train_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        for kind, row in evaluate_tasks(model.net, dataset, test_sets, device).items():
            state.accuracies[kind].append(row)
        state.eval_seconds.append(time.perf_counter() - started)
        state.next_task = task + 1
        save_checkpoint(run_dir / CHECKPOINT_NAME, model, generator, state, config)
        if on_task_end is not None:
            on_task_end(task, state)
        if stop_after_task is not None and task + 1 >= stop_after_task:
            break
    return state


def _test_set(dataset: Any, task: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = dataset.get_task(task)
    return data.test_x, data.test_y


def save_checkpoint(path: Path, model: Any, generator: torch.Generator, state: TrainingState, config: dict) -> None:
    """Write the checkpoint atomically (a crash never leaves a half-written file)."""
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "config": config,
        "state": dataclasses.asdict(state),
        "model": model.state_dict(),
        "model_extra": model.extra_state(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    temporary = path.with_suffix(".tmp")
    torch.save(checkpoint, temporary)
    os.replace(temporary, path)


def load_checkpoint(path: Path, model: Any, generator: torch.Generator, config: dict) -> TrainingState:
    """Restore the model, the random generators and the loop state from ``path``."""
    if not path.is_file():
        raise ConfigError(
            f"resume=true but there is no checkpoint at {path}; "
            "point hydra.run.dir at the directory of the run to resume"
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    differences = sorted(key for key in set(config) | set(checkpoint["config"])
                         if config.get(key) != checkpoint["config"].get(key))
    if differences:
        raise ConfigError(
            f"resume=true with a config that differs from the checkpoint's in: {', '.join(differences)}; "
            "resume with the same settings"
        )
    model.load_state_dict(checkpoint["model"])
    model.load_extra_state(checkpoint["model_extra"])
    generator.set_state(checkpoint["generator"])
    torch.set_rng_state(checkpoint["torch_rng"])
    if checkpoint["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
    return TrainingState(**checkpoint["state"])
