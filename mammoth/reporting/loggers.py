"""Experiment loggers: where a run reports its per-epoch loss and its accuracies after each task.

The ``logger`` config group selects them: ``logger=csv`` (the default), ``logger=tensorboard``,
``logger=wandb``, several at once with ``logger=[csv,tensorboard]``, none with ``logger=[]`` (or ``~logger``).
Each selected option adds one entry to the run config, ``logger.LABEL: {name: NAME, ...options}``;
``name`` (default: ``LABEL``) is looked up in :data:`LOGGERS`, never imported from a path, so a
config file cannot make mammoth run arbitrary code.

Every logger sees the same events, numbered from 1 like the console (``task 1/5``):

- ``log_epoch(task, epoch, loss)``: the mean training loss of one epoch;
- ``log_task(task, accuracies)``: after each task, the accuracy rows so far of every kind;
- ``log_results(results)``: the results document of a complete run;
- ``close(failed)``: always, last.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import inspect
import logging
from pathlib import Path
from typing import Any, Mapping

from mammoth.config.registry import Registry, canonical_name
from mammoth.errors import ConfigError
from mammoth.files import open_nofollow, path_inside
from mammoth.reporting.metrics import summarise

log = logging.getLogger("mammoth")

#: Columns of metrics.csv (see :class:`CsvLogger`).
CSV_COLUMNS = ("task", "epoch", "kind", "metric", "evaluated_task", "value")
#: The summary metrics reported after each task, for every accuracy kind.
SUMMARY_FIELDS = ("average", "forgetting", "bwt")
#: The final metrics of each accuracy kind in a wandb run's summary (those results.json has).
FINAL_FIELDS = (*SUMMARY_FIELDS, "forward_transfer", "average_incremental", "old_accuracy", "new_accuracy", "top5")


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What every logger knows about the run: where it writes, its title and resolved config."""

    run_dir: Path
    title: str
    config: dict[str, Any]
    n_tasks: int
    n_epochs: int
    resume: bool = False
    #: The method trains only after the last task (joint, gdumb): no forgetting or bwt is logged.
    trains_only_at_end: bool = False

    @property
    def summary_fields(self) -> tuple[str, ...]:
        """The summary metrics logged after each task: :data:`SUMMARY_FIELDS`, or only the average
        for a method that trains only at the end (its earlier rows score an untrained network)."""
        return ("average",) if self.trains_only_at_end else SUMMARY_FIELDS


def task_metrics(accuracies: Mapping[str, list[list[float]]], fields: tuple[str, ...] = SUMMARY_FIELDS) -> dict[str, float]:
    """Flat metrics after the last row of ``accuracies``: ``KIND/accuracy_task_J`` (J from 1) for
    every task seen, and ``KIND/average``, ``KIND/forgetting``, ``KIND/bwt`` (those of ``fields``) over the rows so far."""
    metrics: dict[str, float] = {}
    for kind, rows in accuracies.items():
        for j, value in enumerate(rows[-1]):
            metrics[f"{kind}/accuracy_task_{j + 1}"] = value
        summary = summarise(rows)
        for field in fields:
            metrics[f"{kind}/{field}"] = summary[field]
    return metrics


class RunLogger:
    """Base class of the loggers: every hook does nothing; subclasses write somewhere.

    ``PATH_OPTIONS`` names the options that are paths inside the run directory (checked with
    :func:`mammoth.files.path_inside` before the logger is built); ``DIRECTORIES`` the fixed
    subdirectories it writes into.
    """

    PATH_OPTIONS: tuple[str, ...] = ()
    DIRECTORIES: tuple[str, ...] = ()

    def __init__(self, run: RunInfo) -> None:
        self.run = run

    def log_epoch(self, task: int, epoch: int, loss: float) -> None:
        """The mean loss of epoch ``epoch`` of task ``task`` (both from 0)."""

    def log_task(self, task: int, accuracies: Mapping[str, list[list[float]]]) -> None:
        """The accuracy rows of every kind after training task ``task`` (from 0)."""

    def log_results(self, results: Mapping[str, Any]) -> None:
        """The results document of a complete run (as in results.json)."""

    def close(self, failed: bool = False) -> None:
        """Flush and release; ``failed`` when the run ended with an error."""


class CsvLogger(RunLogger):
    """``metrics.csv`` in the run directory, one row per value, flushed as it is written.

    Columns: ``task,epoch,kind,metric,evaluated_task,value`` (task, epoch and evaluated_task
    count from 1; empty where they do not apply):

    - per epoch: ``1,3,train,loss,,0.0412``;
    - per task, for each accuracy kind (``class_il``, ``task_il`` or ``domain_il``): one
      ``accuracy`` row per task seen (``2,,class_il,accuracy,1,97.5`` is the accuracy on task 1
      after training task 2, ``results.json``'s ``matrix[1][0]``), then ``average``,
      ``forgetting`` and ``bwt`` over the tasks so far (those of the last task are the
      run's final values).

    A resumed run keeps the rows of the tasks finished before it and rewrites the rest.
    """

    PATH_OPTIONS = ("filename",)

    def __init__(self, run: RunInfo, filename: str = "metrics.csv") -> None:
        super().__init__(run)
        self.path = path_inside(run.run_dir, filename, "logger.csv.filename")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = None
        if not run.resume or not self.path.is_file():
            self._open(keep_before_task=None)

    def _open(self, keep_before_task: int | None) -> None:
        kept: list[list[str]] = []
        try:
            if keep_before_task is not None:
                with open_nofollow(self.path, "r", newline="") as existing:
                    kept = [row for row in list(csv.reader(existing))[1:] if row and int(row[0]) <= keep_before_task]
            self._file = open_nofollow(self.path, "w", newline="")
        except OSError as error:  # a directory at that path, a read-only run directory
            raise ConfigError(
                f"logger.csv.filename: cannot write {self.path}: {(error.strerror or str(error)).lower()}; "
                "allowed: a file name inside the run directory"
            ) from None
        self._writer = csv.writer(self._file)
        self._writer.writerows([list(CSV_COLUMNS), *kept])
        self._file.flush()

    def _write(self, task: int, rows: list[tuple[Any, ...]]) -> None:
        if self._file is None:  # resuming: drop what a previous attempt wrote about this task and later ones
            self._open(keep_before_task=task)
        self._writer.writerows(rows)
        self._file.flush()

    def log_epoch(self, task: int, epoch: int, loss: float) -> None:
        self._write(task, [(task + 1, epoch + 1, "train", "loss", "", loss)])

    def log_task(self, task: int, accuracies: Mapping[str, list[list[float]]]) -> None:
        rows: list[tuple[Any, ...]] = []
        for kind, kind_rows in accuracies.items():
            rows += [(task + 1, "", kind, "accuracy", j + 1, value) for j, value in enumerate(kind_rows[-1])]
            summary = summarise(kind_rows)
            rows += [(task + 1, "", kind, field, "", summary[field]) for field in self.run.summary_fields]
        self._write(task, rows)

    def close(self, failed: bool = False) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TensorBoardLogger(RunLogger):
    """TensorBoard event files in ``RUN_DIR/log_dir`` (tensorboardX; ``pip install 'mammoth-cl[loggers]'``).

    Scalars: ``train/loss`` at step = epochs trained so far over all tasks; after each task,
    at step = tasks trained so far, the :func:`task_metrics` (``class_il/average``, ...).
    View with ``tensorboard --logdir RUN_DIR``.
    """

    PATH_OPTIONS = ("log_dir",)

    def __init__(self, run: RunInfo, log_dir: str = "tensorboard") -> None:
        super().__init__(run)
        self.log_dir = path_inside(run.run_dir, log_dir, "logger.tensorboard.log_dir")
        SummaryWriter = _optional_import("tensorboardX", "tensorboard").SummaryWriter
        self._writer = SummaryWriter(logdir=str(self.log_dir))

    def log_epoch(self, task: int, epoch: int, loss: float) -> None:
        self._writer.add_scalar("train/loss", loss, task * self.run.n_epochs + epoch + 1)

    def log_task(self, task: int, accuracies: Mapping[str, list[list[float]]]) -> None:
        for tag, value in task_metrics(accuracies, self.run.summary_fields).items():
            self._writer.add_scalar(tag, value, task + 1)
        self._writer.flush()

    def close(self, failed: bool = False) -> None:
        self._writer.close()


class WandbLogger(RunLogger):
    """A Weights & Biases run (``pip install 'mammoth-cl[loggers]'``), its files under ``RUN_DIR/wandb``.

    Logs ``train/loss`` with ``task`` and ``epoch`` each epoch, the :func:`task_metrics` with
    ``task`` after each task, and the final results in the run summary. ``mode``: ``online``,
    ``offline`` (sync later with ``wandb sync``) or ``disabled``; null uses ``WANDB_MODE`` or
    wandb's default. ``run_name`` null: the run title.
    """

    DIRECTORIES = ("wandb",)

    def __init__(self, run: RunInfo, project: str = "mammoth", entity: str | None = None, mode: str | None = None,
                 group: str | None = None, tags: list[str] | None = None, run_name: str | None = None) -> None:
        super().__init__(run)
        path_inside(run.run_dir, "wandb", "logger.wandb")
        wandb = _optional_import("wandb", "wandb")
        self._run = wandb.init(
            project=project, entity=entity, mode=mode, group=group, tags=list(tags or []),
            name=run_name or run.title, dir=str(run.run_dir), config=run.config,
            settings=wandb.Settings(console="off", silent=True),
        )

    def log_epoch(self, task: int, epoch: int, loss: float) -> None:
        self._run.log({"train/loss": loss, "task": task + 1, "epoch": epoch + 1})

    def log_task(self, task: int, accuracies: Mapping[str, list[list[float]]]) -> None:
        self._run.log({**task_metrics(accuracies, self.run.summary_fields), "task": task + 1})

    def log_results(self, results: Mapping[str, Any]) -> None:
        for kind in ("class_il", "task_il", "domain_il", "nme_class_il"):
            if kind in results:
                self._run.summary.update({f"{kind}/{field}": results[kind][field] for field in FINAL_FIELDS
                                          if field in results[kind]})

    def close(self, failed: bool = False) -> None:
        self._run.finish(exit_code=1 if failed else 0)


#: The registered loggers: the only classes a ``logger`` config can select (by ``name``). Their
#: options are given under ``logger.LABEL``, not as a config group, so nothing is put in Hydra's ConfigStore.
LOGGERS = Registry(kind="logger", group="logger", error_type=ConfigError, schema_suffix="LoggerConfig",
                   runtime_arguments=("run",), stored=False)


def register_logger(name: str, cls: type[RunLogger]) -> type[RunLogger]:
    """Add a logger class under ``name`` (e.g. from a plugin); returns it unchanged. Names are
    case-insensitive, ``_`` equals ``-``, and a duplicate raises."""
    if not (inspect.isclass(cls) and issubclass(cls, RunLogger)):
        raise ConfigError(f"cannot register {cls!r} as logger {name!r}: not a subclass of mammoth.reporting.loggers.RunLogger")
    return LOGGERS.register(name)(cls)


register_logger("csv", CsvLogger)
register_logger("tensorboard", TensorBoardLogger)
register_logger("wandb", WandbLogger)


def build_loggers(selection: Mapping[str, Any] | None, run: RunInfo) -> list[RunLogger]:
    """The loggers of the ``logger`` config (``{label: {name: ..., options}}``; None or empty: none).

    Unknown names and options raise a ConfigError listing the allowed ones.
    """
    check_output_paths(selection, run.run_dir)
    loggers: list[RunLogger] = []
    try:
        for label, options in (selection or {}).items():
            loggers.append(_build_one(str(label), dict(options or {}), run))
    except BaseException:
        close_loggers(loggers, failed=True)
        raise
    return loggers


def output_paths(selection: Mapping[str, Any] | None) -> dict[str, str]:
    """The paths inside the run directory that the loggers of the ``logger`` config would write,
    defaults included: ``{"logger.csv.filename": "metrics.csv", ...}`` (a fixed directory such
    as wandb's under ``logger.LABEL``). Unknown logger names are left to :func:`build_loggers`."""
    paths: dict[str, str] = {}
    for label, options in (selection or {}).items():
        options = dict(options or {})
        name = canonical_name(options.get("name", label))
        if name not in LOGGERS.names():
            continue
        cls = LOGGERS.get(name).target
        defaults = inspect.signature(cls.__init__).parameters
        for option in cls.PATH_OPTIONS:
            value = options.get(option, defaults[option].default if option in defaults else None)
            if value is not None:
                paths[f"logger.{label}.{option}"] = str(value)
        for directory in cls.DIRECTORIES:
            paths[f"logger.{label}"] = directory
    return paths


def check_output_paths(selection: Mapping[str, Any] | None, run_dir: Path) -> None:
    """Raise a one-line ConfigError for a logger path that would leave ``run_dir`` (see
    :func:`mammoth.files.path_inside`)."""
    for key, value in output_paths(selection).items():
        path_inside(run_dir, value, key)


def close_loggers(loggers: list[RunLogger], failed: bool = False) -> None:
    """Close every logger; one that fails to close is reported as a warning, not raised, so it
    neither hides the run's own error nor fails a run whose results are written."""
    for logger in loggers:
        try:
            logger.close(failed)
        except Exception as error:  # noqa: BLE001 - the other loggers must still be closed
            log.warning("logger %s failed to close: %s", type(logger).__name__, error)


def _build_one(label: str, options: dict[str, Any], run: RunInfo) -> RunLogger:
    entry = LOGGERS.get(options.pop("name", label))
    name, cls = entry.name, entry.target
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "run")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r} for logger {name!r} (logger.{label}.{unknown[0]}); "
            f"its options: {', '.join(allowed) or 'none'}"
        )
    return cls(run, **options)


def _optional_import(module: str, logger: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ConfigError(
            f"logger={logger} needs the {module} package, which is not installed; "
            "install it with: pip install 'mammoth-cl[loggers]'"
        ) from error
