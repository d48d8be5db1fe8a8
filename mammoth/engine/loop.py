"""The task loop: train each task, evaluate on every task seen so far, checkpoint, resume."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from mammoth.config.value_checks import check_positive_int
from mammoth.datasets.source import DataSource
from mammoth.engine.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from mammoth.engine.context import EpochReport, TrainingContext, build_context
from mammoth.engine.distributed import average_batchnorm_statistics, evaluate_on_ranks, observe_on_shard
from mammoth.engine.evaluation import accuracy_kinds, evaluate_tasks, reports_top5
from mammoth.errors import TrainingError
from mammoth.files import CHECKPOINT_NAME

log = logging.getLogger("mammoth")


def train_task(model: Any, context: TrainingContext, task: int, data: DataSource) -> float:
    """Train ``model`` on ``task`` in the harness's order: ``begin_task(task)``, ``source =
    training_data(task, data)``, ``context.fit`` of ``observe`` over ``source`` for
    ``context.n_epochs`` (``end_epoch`` after each epoch; nothing on an empty source), then
    ``end_task(task, data)``. Returns the mean loss of the last epoch (0 without training)."""
    model.begin_task(task)
    source = model.training_data(task, data)
    loss = context.fit(
        observe_on_shard(model, context), source, context.n_epochs, task_description(task, context.n_tasks),
        end_epoch=model.end_epoch, iterations=context.n_iters,
    )
    average_batchnorm_statistics(model)
    model.end_task(task, data)
    return loss


def train_segment(model: Any, context: TrainingContext, segment: int, data: DataSource, task_free: bool,
                  on_step: Callable[[int], None], resume_at: tuple[int, torch.Tensor] | None = None) -> float:
    """One segment of an online stream (``dataset.stream=online``): a single pass of ``observe``
    over ``data`` in batches of ``context.batch_size``, in an order drawn from the run's generator,
    then ``on_step(samples)`` after each step. Told where tasks change: ``begin_task(segment)``,
    ``training_data``, ... ``end_task(segment, data)`` as :func:`train_task`; with ``task_free`` no
    hook but ``observe`` (and ``end_epoch``, once per segment). ``resume_at`` continues the pass
    after its first steps (:meth:`TrainingContext.batches`). Returns the segment's mean loss."""
    if not task_free:
        model.begin_task(segment)
        data = model.training_data(segment, data)
    observe = observe_on_shard(model, context)

    def step(batch: Any) -> float:
        loss = observe(batch)
        on_step(len(batch.labels))
        return loss

    loss = context.fit(step, data, 1, task_description(segment, context.n_tasks), end_epoch=model.end_epoch,
                       resume_at=resume_at)
    average_batchnorm_statistics(model)
    if not task_free:
        model.end_task(segment, data)
    return loss


class StreamClock:
    """The stream's evaluation points (``dataset.eval_every``) and training time: ``step(samples)``
    after each step counts the samples and, each time a multiple of ``eval_every`` is passed,
    evaluates on the tasks seen so far (the segment's own included) outside the training time."""

    def __init__(self, model: Any, context: TrainingContext, state: TrainingState, eval_every: int | None,
                 test_sources: list[DataSource], checkpoint: Callable[[], None] | None = None) -> None:
        self.model, self.context, self.state, self.eval_every = model, context, state, eval_every
        self.test_sources = test_sources
        #: Called after each evaluation inside a segment (a checkpoint there), with ``state.segment_steps`` set.
        self.checkpoint = checkpoint
        self.mark = time.perf_counter()

    def step(self, samples: int) -> None:
        before = self.state.stream_samples
        self.state.stream_samples += samples
        if self.checkpoint is not None:
            self.state.segment_steps += 1
        if self.eval_every is not None and self.state.stream_samples // self.eval_every > before // self.eval_every:
            self.pause()
            self.evaluate()
            if self.checkpoint is not None:
                self.checkpoint()
            self.mark = time.perf_counter()

    def pause(self) -> None:
        """Add the training time since the last mark to ``state.stream_seconds``."""
        self.state.stream_seconds += time.perf_counter() - self.mark

    def evaluate(self) -> None:
        """Record an evaluation point: the first kind's accuracy on each task seen so far."""
        scores = evaluate_on_ranks(evaluate_tasks, self.model, self.context, self.test_sources,
                                   trained_tasks=len(self.test_sources))
        self.record(scores[next(iter(self.state.accuracies))][: len(self.test_sources)])

    def record(self, row: list[float]) -> None:
        if self.state.stream_points and self.state.stream_points[-1] == self.state.stream_samples:
            self.state.stream_accuracies[-1] = list(row)  # a segment's end on a multiple of eval_every
        else:
            self.state.stream_points.append(self.state.stream_samples)
            self.state.stream_accuracies.append(list(row))


def _segment_resume(state: TrainingState, generator: torch.Generator) -> tuple[int, torch.Tensor] | None:
    """Before a segment: None, after recording the generator's state at its start in ``state``; for
    a segment resumed from a checkpoint inside it, ``(steps done, the generator's state then)``,
    with the generator set back to the segment's start (its order is drawn again from there)."""
    if state.segment_steps == 0:
        state.segment_rng = generator.get_state()
        return None
    resume_at = (state.segment_steps, generator.get_state())
    generator.set_state(state.segment_rng)
    return resume_at


def task_description(task: int, n_tasks: int) -> str:
    """``task 2/5``: the main loop's name in progress bars, errors and epoch reports."""
    return f"task {task + 1}/{n_tasks}"


def run_tasks(model: Any, dataset: Any, device: torch.device, run_dir: Path, seed: int, config: dict,
              resume: bool = False, stop_after_task: int | None = None,
              on_task_end: Callable[[int, TrainingState], None] | None = None,
              on_task_start: Callable[[int], None] | None = None,
              on_epoch_end: Callable[[int, int, float], None] | None = None,
              eval_future: bool = False,
              final_test: Callable[[], list[DataSource]] | None = None,
              precision: str = "fp32", channels_last: bool = False) -> TrainingState:
    """Train and evaluate task after task, with a checkpoint in ``run_dir`` after each one.

    With ``resume`` the loop continues after the last task of the checkpoint, whose config
    must match ``config``; it ends with the same results as an uninterrupted run.
    ``stop_after_task`` stops (resumably) once that many tasks of the whole run are done (a
    resume past it trains nothing). ``on_task_start(task)``, ``on_epoch_end(task, epoch, loss)`` and
    ``on_task_end(task, state)`` report progress. A non-finite loss or weight raises a
    TrainingError; the checkpoint of the last finished task stays.

    With ``eval_future`` the network is also evaluated on every task before the first one (the
    random initialisation forward transfer is measured against) and, after each task, on the
    tasks not trained yet (:func:`evaluate_after_task`). Each task's peak memory is recorded.
    ``final_test`` (given when the run evaluates on a validation split) returns the test data of
    every task, evaluated once after the last task (``state.final_test``). ``precision`` and
    ``channels_last`` go to the context (:mod:`mammoth.engine.precision`).
    """
    if stop_after_task is not None:
        check_positive_int("stop_after_task", stop_after_task)
    generator = torch.Generator().manual_seed(seed)
    context = build_context(dataset, device, generator, _epoch_report(dataset.n_tasks, on_epoch_end),
                            precision=precision, channels_last=channels_last)
    model.attach(context)
    state = TrainingState.empty(dataset.setting, accuracy_kinds(dataset.setting, model))
    fingerprint = dataset.fingerprint()
    if resume:
        state = load_checkpoint(run_dir / CHECKPOINT_NAME, model, generator, config, dataset=dataset)
        log.info("Resuming %s after task %d of %d", run_dir, state.next_task, dataset.n_tasks)
    elif eval_future:
        state.random_init = evaluate_on_ranks(evaluate_tasks, model, context, _test_sources(dataset), trained_tasks=0)
        state.future = {kind: [] for kind in state.accuracies}
    top5 = reports_top5(context)
    test_sources = [dataset.test_source(task) for task in range(state.next_task)]
    online = bool(getattr(dataset, "online", False))
    segments = dataset.stream_segments() if online else None
    # checkpoints inside a segment only where resuming there is exact: a method whose hooks do nothing at
    # task changes (its begin_task, called again on resume, only creates the optimizer)
    mid_segment = online and bool(getattr(model, "supports_task_free", False))
    if online and dataset.config.task_free:
        model.begin_stream()  # on resume too: the optimizer's state is not checkpointed (docs/online.md)
    for task in range(state.next_task, dataset.n_tasks):
        if stop_after_task is not None and task >= stop_after_task:
            break
        if on_task_start is not None:
            on_task_start(task)
        started = time.perf_counter()
        _reset_peak_memory(device)
        if online:
            resume_at = _segment_resume(state, generator)
            clock = StreamClock(model, context, state, dataset.config.eval_every, [*test_sources, dataset.test_source(task)],
                                checkpoint=(lambda: save_checkpoint(run_dir / CHECKPOINT_NAME, model, generator, state, config,
                                                                    data=fingerprint)) if mid_segment else None)
            train_segment(model, context, task, segments[task], dataset.config.task_free, clock.step, resume_at)
            clock.pause()
            state.segment_steps, state.segment_rng = 0, None
        else:
            train_task(model, context, task, dataset.task_source(task))
        _check_finite_weights(model, task, dataset.n_tasks)
        state.train_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        test_sources.append(dataset.test_source(task))
        evaluate_after_task(model, context, test_sources, state, _test_sources(dataset) if eval_future else None, top5)
        if online:
            clock.record(state.accuracies[next(iter(state.accuracies))][-1])
        if final_test is not None and task == dataset.n_tasks - 1:
            state.final_test = evaluate_on_ranks(evaluate_tasks, model, context, final_test())
        state.eval_seconds.append(time.perf_counter() - started)
        _record_peak_memory(state, device)
        state.next_task = task + 1
        save_checkpoint(run_dir / CHECKPOINT_NAME, model, generator, state, config, data=fingerprint)
        if on_task_end is not None:
            on_task_end(task, state)
    return state


def evaluate_after_task(model: Any, context: TrainingContext, test_sources: list[DataSource], state: TrainingState,
                        all_sources: list[DataSource] | None = None, top5: bool = False) -> None:
    """Append to ``state`` the accuracies after training ``len(test_sources)`` tasks: on the tasks
    trained (``accuracies``, and ``top5`` and ``nme_top5`` when asked), and with ``all_sources`` (``eval_future``)
    on the tasks after them (``future``), scored as :func:`evaluate_tasks` scores a task not trained yet."""
    trained = len(test_sources)
    scores = evaluate_on_ranks(evaluate_tasks, model, context, all_sources or test_sources, trained_tasks=trained, top5=top5)
    for kind in state.accuracies:
        state.accuracies[kind].append(scores[kind][:trained])
        if all_sources is not None:
            state.future[kind].append(scores[kind][trained:])
    if top5:
        state.top5.append(scores["top5"][:trained])
    if "nme_top5" in scores:
        state.nme_top5.append(scores["nme_top5"][:trained])


def _test_sources(dataset: Any) -> list[DataSource]:
    """The test data of every task of ``dataset``."""
    return [dataset.test_source(task) for task in range(dataset.n_tasks)]


def _reset_peak_memory(device: torch.device) -> None:
    """Start a task's CUDA peak-memory count (nothing on another device)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _record_peak_memory(state: TrainingState, device: torch.device) -> None:
    """Append the task's peak memory to ``state``: the process's max RSS (a process-lifetime peak,
    where ``resource`` exists) and, on CUDA, the peak allocated since :func:`_reset_peak_memory`."""
    try:
        import resource  # optional: resource (POSIX only)
    except ImportError:  # Windows
        resource = None
    if resource is not None:
        # ru_maxrss is in KiB on Linux, in bytes on macOS
        scale = 1 if sys.platform == "darwin" else 1024
        state.peak_rss_mb.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20)
    if device.type == "cuda":
        state.peak_cuda_mb.append(torch.cuda.max_memory_allocated(device) / 2**20)


def _epoch_report(n_tasks: int, on_epoch_end: Callable[[int, int, float], None] | None) -> EpochReport:
    """The context's epoch report: the main loop's epochs go to ``on_epoch_end(task, epoch, loss)``,
    an inner loop's (a method's warm-up, correction, ...) to the log, named by its description."""
    main = {task_description(task, n_tasks): task for task in range(n_tasks)}

    def report(description: str, epoch: int, loss: float) -> None:
        if description in main:
            if on_epoch_end is not None:
                on_epoch_end(main[description], epoch, loss)
        else:
            log.info("%s, epoch %d: loss %.4f", description, epoch + 1, loss)

    return report


def _check_finite_weights(model: Any, task: int, n_tasks: int) -> None:
    """Raise a TrainingError if a weight of the model became NaN or infinite in ``task``."""
    flags = [torch.isfinite(parameter).all() for parameter in model.parameters()]
    if flags and not bool(torch.stack(flags).all()):  # one device sync for all parameters
        raise TrainingError(
            f"the weights became non-finite (nan or inf) in task {task + 1}/{n_tasks}; the run stopped "
            "without results (lower model.lr, or check the data)"
        )
