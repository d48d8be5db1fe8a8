"""mammoth.run(cfg): resolve the config once, build the dataset, the backbone and the CL method,
then train and evaluate task after task and write the results."""

from __future__ import annotations

import contextlib
import copy
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TYPE_CHECKING

import torch
from omegaconf import DictConfig

from mammoth.app.callbacks import error_line, record_interruption, record_rank_failure
from mammoth.app.job import output_directory, run_title
from mammoth.app.resume import interrupted_line, rank_failure_line, resume_command, resumes
from mammoth.app.run_spec import comparable_config, resolve_run
from mammoth.app.safety import check_config_safety
from mammoth.backbones import BACKBONES
from mammoth.backbones.registry import build_resolved_backbone
from mammoth.config import hydra_job
from mammoth.config.hydra_job import JobFacts
from mammoth.datasets import build_dataset
from mammoth.engine.compiled import check_compile, compile_backbone, compiled_run
from mammoth.engine.device import resolve_device, set_threads
from mammoth.engine import distributed
from mammoth.engine.loop import run_tasks
from mammoth.engine.precision import check_method_precision, check_precision
from mammoth.engine.rank_faults import (
    FAILED, INTERRUPTED, RankFailure, RankWatch, from_collective, tell_launcher, timed_out,
)
from mammoth.errors import ConfigError, MammothError, TrainingError
from mammoth.files import RunLock
from mammoth.models import MODELS
from mammoth.models.utils import evaluation_mode
from mammoth.reporting.loggers import build_loggers, close_loggers, RunInfo
from mammoth.reporting.optimized_metric import check_optimized_metric, optimized_value
from mammoth.reporting.metrics import stream_metrics
from mammoth.reporting.results import (
    build_results,
    environment_versions,
    format_table,
    KIND_TITLES,
    Measurements,
    PLOT_NAME,
    plot_results,
    RESULTS_NAME,
    write_json_atomic,
)

if TYPE_CHECKING:
    from mammoth.app.run_spec import RunSpec

log = logging.getLogger("mammoth")


def run(cfg: DictConfig) -> float:
    """Run one continual-learning experiment from a composed config; return the value of its
    ``optimized_metric`` (the final Class-IL average by default; NaN when stopped early). Writes
    results.json, the plot and checkpoints.

    ``cfg`` is checked first (:func:`check_config`). The run directory is locked for the
    duration: a second run in it is refused (ConfigError). SIGTERM interrupts the run like Ctrl-C
    (KeyboardInterrupt); either logs one line with the command that resumes it, and the
    checkpoint of the last finished task stays intact.
    """
    job = hydra_job.read_job_facts()  # the run's one read of Hydra's job facts (empty outside a Hydra job); passed down
    return run_resolved(check_config(cfg, job), job)


def check_config(cfg: DictConfig, job: JobFacts) -> RunSpec:
    """``cfg`` through the safety gate (:func:`mammoth.app.safety.check_config_safety`, with the
    job's Hydra node) and resolved (:func:`mammoth.app.run_spec.resolve_run`): the checks of
    :func:`run`. ``python -m mammoth`` makes them in its pre-flight instead, once."""
    check_config_safety(cfg, hydra=job.hydra, output_dir_in_run_directory=False)  # output_dir: the caller's choice
    return resolve_run(cfg, hydra=job.hydra)


def run_resolved(spec: RunSpec, job: JobFacts) -> float:
    """:func:`run` of a config that passed the safety gate and was resolved into ``spec``, in the
    Hydra job ``job`` describes. On several processes, a rank that dies or hangs ends the others
    with one TrainingError line naming it, the task interrupted and the resume command
    (:func:`_rank_failure`)."""
    progress = TaskProgress()
    with _process_group() as watch:
        main = distributed.is_main_process()
        run_dir = distributed.shared_run_directory(output_directory(spec.output_dir, job))
        distributed.log_to_rank_file(run_dir)
        with RunLock(run_dir) if main else contextlib.nullcontext(), _sigterm_interrupts():
            try:
                return _run(spec, run_dir, job, progress)
            except KeyboardInterrupt as interruption:
                reason = str(interruption) or "SIGINT"
                # under torchrun, a SIGTERM is also how the launcher stops the others when a rank failed
                failure = _failed_ranks(watch)
                if failure is not None:
                    raise _rank_failure(failure, progress, run_dir, job, watch, interruption) from None
                if watch is not None:
                    watch.leave(INTERRUPTED)
                log.error("%s", interrupted_line(run_dir, reason, job))
                if main:
                    record_interruption(run_dir, reason)  # Hydra calls no on_job_end here
                raise
            except MammothError as error:  # this rank's own error (the others find it in the store)
                if watch is not None:
                    watch.leave(f"{FAILED}: {error_line(error)}")
                raise
            except Exception as error:  # a collective another rank broke, or this rank's own error
                failure = _failed_ranks(watch, timed_out(error)) if from_collective(error) else None
                if failure is None:
                    if watch is not None:
                        watch.leave(f"{FAILED}: {error_line(error)}")
                    raise
                raise _rank_failure(failure, progress, run_dir, job, watch, error) from None


@dataclass
class TaskProgress:
    """The task a run is at (counting from 0; None before the first begins) of ``n_tasks``: what
    the line of a failed rank names."""

    task: int | None = None
    n_tasks: int = 0

    def describe(self) -> str | None:
        """``2/5`` (the task running), or None before the first task."""
        return None if self.task is None else f"{self.task + 1}/{self.n_tasks}"


def _failed_ranks(watch: RankWatch | None, waited: bool = False) -> RankFailure | None:
    """On several processes, the ranks that failed (:meth:`RankWatch.failed_ranks`), found with
    SIGTERM ignored from here on: the launcher's SIGTERM to every rank once one failed must not
    cut this rank's report short (it kills a rank still running after its grace period). ``waited``:
    a collective timed out (a live rank that did not come to it is named too)."""
    if watch is None:
        return None
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return watch.failed_ranks(timed_out=waited)


def _rank_failure(failure: RankFailure, progress: TaskProgress, run_dir: Path, job: JobFacts, watch: RankWatch,
                  cause: BaseException) -> TrainingError:
    """The one-line error a surviving rank ends with (:func:`rank_failure_line`); the collective's
    own error and traceback go to the log file, the line to torchrun's summary too. When rank 0
    failed, the lowest surviving rank marks job.json ``failed`` with that line (rank 0 would have:
    its ``on_job_end`` never came; a rank 0 that failed with an error of its own records it itself)."""
    error = TrainingError(rank_failure_line(failure.description, progress.describe(), run_dir, job))
    failure_log = logging.getLogger("mammoth.failure" if distributed.is_main_process() else "mammoth")  # the log file only
    failure_log.info("the error this rank saw: %s", error_line(cause), exc_info=cause)
    watch.leave(INTERRUPTED)  # ended by another rank's failure, not failed itself
    tell_launcher(str(error))
    writer = watch.peers[0]
    if 0 in failure.ranks and 0 not in failure.announced and failure.lowest_survivor(len(watch.peers)) == watch.rank:
        record_rank_failure(run_dir, error, writer.pid, writer.host)
    return error


@contextlib.contextmanager
def _process_group() -> Iterator[RankWatch | None]:
    """Under torchrun (or a submitit job of several tasks), the block runs in the run's process
    group (started here unless ``python -m mammoth`` started it), which is left afterwards, with
    this rank's heartbeat and view of the others (:class:`RankWatch`). Yields None in one process."""
    launch = distributed.detect_launch()
    if launch is None:
        yield None
        return
    distributed.start_process_group(launch)
    watch = RankWatch.start()
    try:
        yield watch
    except BaseException:
        watch.stop(None)  # the run said why it leaves
        distributed.stop_process_group(synchronise=False)  # the other ranks may be gone
        raise
    watch.stop()
    distributed.stop_process_group()


@dataclass(frozen=True)
class BuiltRun:
    """A run ready to train: its specification, directory, device, dataset and method, the
    config it records (with the values the data filled in) and its title."""

    spec: RunSpec
    run_dir: Path
    device: torch.device
    dataset: Any
    model: Any
    config: dict[str, Any]
    title: str
    started: float
    job: JobFacts
    progress: TaskProgress


def _run(spec: RunSpec, run_dir: Path, job: JobFacts, progress: TaskProgress) -> float:
    """:func:`run` in its locked run directory: build, then train and report."""
    started = time.perf_counter()
    check_distributed_support(spec.model.name, spec.model.entry.target)
    check_method_precision(spec.precision, spec.model.name, spec.model.entry.target)
    if not spec.resume and distributed.is_main_process():  # never leave an old, complete-looking file; a refused resume keeps its run's
        (run_dir / RESULTS_NAME).unlink(missing_ok=True)
    device = rank_device(resolve_device(spec.device))
    check_precision(spec.precision, device)
    check_compile(spec.compile, spec.model.name, spec.model.entry.target, device)
    set_threads(spec.threads)
    # torch's global generator, seeded here and nowhere else in a run (global state that stays): the
    # backbone's initial weights, dropout and other torch layers draw from it and take no generator
    # of their own; everything mammoth draws itself comes from the run's generator (seed) instead
    torch.manual_seed(spec.seed)
    dataset = build_dataset_of(spec)
    check_task_free(spec.model.name, spec.model.entry.target, dataset)
    net, backbone_name = build_backbone_of(spec, dataset, device)
    net = distributed.synchronised_batchnorm(net, device)
    if spec.channels_last:
        net = net.to(memory_format=torch.channels_last)
    model = spec.model.entry.target(net=net, dataset=dataset, **spec.model.checked_values()).to(device)
    metric = check_optimized_metric(spec.optimized_metric, dataset, spec.eval_future, model, device)
    config = record_filled_values(copy.deepcopy(dict(spec.config)), dataset, model)
    title = run_title(dataset.name, spec.model.name, backbone_name, job)
    progress.n_tasks = dataset.n_tasks
    with compiled_run(spec.compile):  # every compiled call under the run's dynamo settings
        if spec.compile:  # after the method is built: what it adds to the backbone (adapters) is compiled with it
            compile_backbone(model.net)
        return _train_and_report(BuiltRun(spec, run_dir, device, dataset, model, config, title, started, job, progress),
                                 metric)


def check_task_free(name: str, method: Any, dataset: Any) -> None:
    """Under ``dataset.task_free=true``, a method that needs to be told where tasks change (no
    ``supports_task_free``) is refused in one line, before anything is built or trained."""
    if not getattr(dataset, "online", False) or not dataset.config.task_free or getattr(method, "supports_task_free", False):
        return
    supported = sorted(entry for entry in MODELS.names() if getattr(MODELS.get(entry).target, "supports_task_free", False))
    raise ConfigError(f"model={name} does not support dataset.task_free=true (its begin_task/end_task do work at "
                      f"task changes); allowed: dataset.task_free=false, or one of {', '.join(supported)}")


def check_distributed_support(name: str, method: Any) -> None:
    """On several processes, a method that does not declare ``supports_distributed`` is refused
    in one line, before anything is built or trained."""
    processes = distributed.world_size()
    if processes == 1 or getattr(method, "supports_distributed", False):
        return
    supported = sorted(entry for entry in MODELS.names() if getattr(MODELS.get(entry).target, "supports_distributed", False))
    raise ConfigError(
        f"model={name} does not support training on {processes} processes (its steps keep state of their own "
        f"batch); allowed: one process, or one of {', '.join(supported)}"
    )


def rank_device(requested: torch.device) -> torch.device:
    """The device of this process: ``requested`` in one process; on several, ``cuda:LOCAL_RANK``
    when CUDA is requested, else the CPU."""
    if distributed.world_size() == 1:
        return requested
    return distributed.process_device(distributed.detect_launch(), requested)


def build_dataset_of(spec: RunSpec) -> Any:
    """The run's benchmark, from its resolved registry entry (or, for a config by ``name``, the config)."""
    if spec.dataset is None:
        return build_dataset(spec.dataset_config, seed=spec.seed)
    return spec.dataset.entry.target(spec.dataset.checked_values(), seed=spec.seed)


def final_test_sources(dataset: Any) -> Callable[[], list[Any]] | None:
    """With ``dataset.validation`` (the run evaluates on a validation split): a function returning
    the test data of every task (:meth:`ContinualDataset.final_test_source`, with the run's class
    order), as the original evaluates on the test set at the end; else None."""
    if getattr(dataset.config, "validation", None) is None:
        return None
    return lambda: [dataset.final_test_source(task) for task in range(dataset.n_tasks)]


def build_backbone_of(spec: RunSpec, dataset: Any, device: torch.device) -> tuple[Any, str]:
    """The run's backbone on ``device`` (the dataset's default when none is chosen), its
    ``num_classes`` and ``input_shape`` filled from the data, and its registered name."""
    data = {"num_classes": dataset.n_classes, "input_shape": dataset.input_shape}
    if spec.backbone is None:
        entry = BACKBONES.get(dataset.default_backbone)
        net = build_resolved_backbone(entry, {}, data)
    else:
        entry = spec.backbone.entry
        net = build_resolved_backbone(entry, spec.backbone.values, data, checked=True)
    name = entry.name
    net = net.to(device)
    log.info(summary_line(name, net))
    check_output_size(net, dataset, name)
    return net, name


def summary_line(name: str, net: Any) -> str:
    """``backbone resnet: 11,173,962 parameters, 512 features, 10 classes``."""
    parameters = sum(p.numel() for p in net.parameters())
    return (
        f"backbone {name}: {parameters:,} parameters, {getattr(net, 'num_features', '?')} features, "
        f"{getattr(net, 'num_classes', '?')} classes"
    )


def check_output_size(net: Any, dataset: Any, backbone_name: str) -> None:
    """The backbone must output at least one logit per class of the dataset."""
    device = next(net.parameters()).device
    sample = dataset.test_transform(dataset.test_source(0).read(torch.zeros(1, dtype=torch.long), device))
    with evaluation_mode(net), torch.no_grad():
        logits = net(sample)
    if logits.dim() != 2 or logits.shape[1] < dataset.n_classes:
        raise ConfigError(
            f"backbone {backbone_name!r} outputs logits of shape {tuple(logits.shape)}; "
            f"{dataset.name} needs (batch, {dataset.n_classes}) for its {dataset.n_classes} classes"
        )


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``KeyboardInterrupt("SIGTERM")`` (main thread only:
    elsewhere Python cannot set signal handlers, and nothing changes). Afterwards the previous
    handler is back, unless the block set another (a failed rank's report ignores SIGTERM to its end)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signal_number: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signal_number).name)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is interrupt:
            signal.signal(signal.SIGTERM, previous)


def record_filled_values(config: dict[str, Any], dataset: Any, model: Any = None) -> dict[str, Any]:
    """``config`` with the values the run filled in: the backbone's ``num_classes`` /
    ``input_shape`` (``???`` in the composed config), the arguments the backbone resolved itself
    (its ``resolved_arguments``: a ResNet's ``stem=auto`` as the stem it built) and the method's
    ``lr_milestones`` (null: the dataset's default), as the backbone and the method were built with,
    and an online stream's ``n_epochs`` (1: one pass)."""
    backbone = config.get("backbone")
    if isinstance(backbone, dict):
        for key, value in (("num_classes", dataset.n_classes), ("input_shape", list(dataset.input_shape))):
            if backbone.get(key) == "???":
                backbone[key] = value
        resolved = getattr(getattr(model, "net", None), "resolved_arguments", None) or {}
        backbone.update({key: value for key, value in resolved.items() if key in backbone})
    if isinstance(config.get("dataset"), dict) and getattr(dataset, "online", False):
        config["dataset"]["n_epochs"] = dataset.config.n_epochs  # a stream's one pass, not the benchmark's default
    method = config.get("model")
    if isinstance(method, dict) and method.get("lr_milestones", ...) is None and hasattr(model, "lr_milestones"):
        method["lr_milestones"] = list(model.lr_milestones)
    return config


def _train_and_report(built: BuiltRun, metric: str) -> float:
    """Train every task with the selected loggers, write results.json and the plot; return the
    run's ``metric`` (NaN when ``stop_after_task`` stopped it early)."""
    run_info = RunInfo(run_dir=built.run_dir, title=built.title, config=built.config, n_tasks=built.dataset.n_tasks,
                       n_epochs=built.dataset.config.n_epochs, resume=built.spec.resume,
                       trains_only_at_end=bool(getattr(built.model, "trains_only_at_end", False)))
    loggers = build_loggers(built.spec.loggers, run_info) if distributed.is_main_process() else []  # resolved (config: as recorded)
    try:
        results = _train_and_write(built, loggers)
    except BaseException:
        close_loggers(loggers, failed=True)
        raise
    close_loggers(loggers)
    return float("nan") if results is None else optimized_value(results, metric)


def weights_section(net: Any) -> dict[str, Any]:
    """``{"weights": {"file": ..., "sha256": ..., "strict": ...}}`` for a backbone that loaded
    pretrained weights (``backbone=timm`` with ``pretrained`` or ``weights``; a partial load also
    lists the ``missing`` and ``unexpected`` keys), else nothing: what results.json records."""
    weights = getattr(net, "weights", None)
    if weights is None or not hasattr(weights, "sha256"):
        return {}
    if hasattr(weights, "record"):
        return {"weights": weights.record()}
    return {"weights": {"file": str(weights.path), "sha256": weights.sha256}}


def progress_bars_shown() -> bool:
    """Whether the training progress bars show: tqdm's ``disable=None`` hides them when stderr is not a terminal."""
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def _train_and_write(built: BuiltRun, loggers: list[Any]) -> dict[str, Any] | None:
    """The task loop with its progress reports, then results.json and the plot; None when stopped early."""
    dataset, run_dir, device = built.dataset, built.run_dir, built.device
    comparable = {**comparable_config(built.config), "device": str(device)}  # device=auto resumes as the device it chose
    log_epochs = not progress_bars_shown()

    def on_epoch_end(task: int, epoch: int, loss: float) -> None:
        if log_epochs:
            log.info("task %d/%d, epoch %d/%d: loss %.4f", task + 1, dataset.n_tasks, epoch + 1, dataset.config.n_epochs, loss)
        for logger in loggers:
            logger.log_epoch(task, epoch, loss)

    def on_task_start(task: int) -> None:
        built.progress.task = task

    def on_task_end(task: int, state: Any) -> None:
        log.info("task %d/%d: %s", task + 1, dataset.n_tasks,
                 ", ".join(f"{KIND_TITLES[kind]} {sum(rows[-1]) / len(rows[-1]):.1f}" for kind, rows in state.accuracies.items()))
        for logger in loggers:
            logger.log_task(task, state.accuracies)

    log.info("%s: %d tasks on %s; writing to %s", built.title, dataset.n_tasks, device, run_dir)
    state = run_tasks(
        built.model, dataset, device, run_dir, built.spec.seed, comparable, resume=resumes(built.spec.resume, run_dir, built.job),
        stop_after_task=built.spec.stop_after_task, on_task_start=on_task_start, on_task_end=on_task_end,
        on_epoch_end=on_epoch_end,
        eval_future=built.spec.eval_future, final_test=final_test_sources(dataset),
        precision=built.spec.precision, channels_last=built.spec.channels_last,
    )
    measured = Measurements.of_run(state, dataset, built.model)
    log.info("\n%s", format_table(state.accuracies, dataset.n_tasks, measured))
    if state.next_task < dataset.n_tasks:
        log.info("Stopped after task %d of %d; continue with: %s", state.next_task, dataset.n_tasks, resume_command(run_dir, built.job))
        return None
    results = build_results(
        state.accuracies, dataset.n_tasks, measured=measured,
        config=built.config, dataset=dataset.describe(), **weights_section(built.model.net),
        versions=environment_versions(), device=str(device),
        threads=torch.get_num_threads(), title=built.title,
        timings={"train_seconds": state.train_seconds, "eval_seconds": state.eval_seconds,
                 "total_seconds": time.perf_counter() - built.started},
        **({"online": stream_metrics(state.stream_points, state.stream_accuracies, state.stream_samples,
                                     state.stream_seconds)} if dataset.online else {}),
    )
    if not distributed.is_main_process():
        return results
    plot_results(results, run_dir / PLOT_NAME)
    write_json_atomic(run_dir / RESULTS_NAME, results)
    for logger in loggers:
        logger.log_results(results)
    return results
