"""What a run directory records, read as one row per job: find the runs under a directory
(:func:`find_job_dirs`) and read each one's status, overrides and final metrics (:func:`read_job`,
:func:`gather`).

A job's status comes from its files, so the sweep callback and ``python -m mammoth.summary``
agree: ``results.json`` with status ``complete`` -> complete; else the status recorded in
``job.json`` by :class:`mammoth.app.callbacks.SweepSummaryCallback`; else ``stopped early`` when a
``checkpoint.pt`` exists and ``failed`` when none does. Checkpoints are never opened.

Job directories may come from elsewhere, so what is read is bounded (``results.json`` at most
``MAX_RESULTS_BYTES``, ``job.json`` and ``.hydra/overrides.yaml`` at most ``MAX_SMALL_FILE_BYTES``,
YAML without anchors or aliases; a job whose files break these rules is ``unreadable``).
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from mammoth.files import CHECKPOINT_NAME
from mammoth.reporting.results import KIND_TITLES, RESULTS_NAME


STATUS_NAME = "job.json"
OVERRIDES_PATH = Path(".hydra") / "overrides.yaml"
COMPLETE, FAILED, STOPPED, RUNNING = "complete", "failed", "stopped early", "running"
UNREADABLE = "unreadable"  # a job file that is too large, malformed, or not a regular file
#: The most bytes read from a job's results.json, and from its job.json or .hydra/overrides.yaml;
#: a larger file makes the job ``unreadable`` without being read.
MAX_RESULTS_BYTES, MAX_SMALL_FILE_BYTES = 8 * 2**20, 2**20
MAX_ERROR_CHARACTERS = 500
#: The final metrics of each accuracy kind, as column titles after the kind's (``Class-IL BWT``);
#: the first three always have a column, the others when a job reports them.
METRIC_TITLES = {
    "average": "", "forgetting": " forgetting", "bwt": " BWT", "forward_transfer": " FWT",
    "average_incremental": " avg incr.", "old_accuracy": " old", "new_accuracy": " new", "top5": " top-5",
    # tasks of unequal size (dataset.base_classes): the averages over every test example seen
    "average_weighted": " over examples", "average_incremental_weighted": " avg incr. over examples",
    "test": " test",  # a run on a validation split: its test average after the last task (results.json "test")
}
#: The ``resources`` of results.json the summary reports (a column when a job reports it).
RESOURCE_TITLES = {"train_seconds": "train (s)", "peak_rss_mb": "peak RSS (MiB)", "peak_cuda_mb": "peak CUDA (MiB)"}
#: The ``online`` section of an online run's results.json (docs/online.md) the summary reports.
ONLINE_TITLES = {"anytime_accuracy": "anytime acc.", "forgetting": "online forgetting", "throughput": "samples/s"}


@dataclass
class JobRow:
    """One job (a run directory): its overrides, status and final metrics."""

    name: str
    directory: Path
    overrides: list[str]
    status: str
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # "class_il_average": 91.2, ...
    wall_seconds: float | None = None
    dataset: str | None = None  # from a complete job's results.json


def is_job_dir(path: Path) -> bool:
    """Whether ``path`` holds a run: a results.json, job.json, checkpoint.pt or .hydra/overrides.yaml
    (False when the path cannot be examined, such as one longer than the system allows)."""
    try:
        return any((path / name).is_file() for name in (RESULTS_NAME, STATUS_NAME, CHECKPOINT_NAME, OVERRIDES_PATH))
    except OSError:
        return False


def find_job_dirs(root: Path) -> list[Path]:
    """The run directories at or under ``root`` (a run, a sweep with job subdirectories, or
    deeper nesting such as ``outputs/DATE/TIME``), in natural order (``2`` before ``10``).
    Hidden directories, the inside of a run, symbolic links to directories and directories that
    cannot be listed are not searched. The walk keeps its own stack, so any depth of nesting is
    searched without Python's recursion limit."""
    if is_job_dir(root):
        return [root]
    found = []
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as entries:
                names = [entry.name for entry in entries
                         if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False)]
        except OSError:  # no permission, removed meanwhile, a path longer than the system allows
            continue
        for name in names:
            path = directory / name
            if is_job_dir(path):
                found.append(path)
            else:
                pending.append(path)
    return sorted(found, key=lambda path: _natural_key(str(path.relative_to(root))))


def _natural_key(text: str) -> list[Any]:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)]


class UnreadableFile(Exception):
    """A job file that is present but cannot be used; the message says which and why."""


def read_limited(path: Path, limit: int, name: str) -> bytes | None:
    """The bytes of the regular file ``path``, or None when there is none. Raises UnreadableFile
    naming it (as ``name``) when it is larger than ``limit`` bytes (checked before reading), is
    not a regular file (a FIFO is not waited on), or cannot be read."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        return None
    except OSError as error:
        raise UnreadableFile(f"{name} cannot be read: {(error.strerror or str(error)).lower()}") from None
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile(f"{name} is not a regular file")
        if info.st_size > limit:
            raise UnreadableFile(f"{name} is {info.st_size:,} bytes, over the limit of {limit:,}")
        data = file.read(limit + 1)
    if len(data) > limit:  # it grew while being read
        raise UnreadableFile(f"{name} is over the limit of {limit:,} bytes")
    return data


def _read_json(path: Path, limit: int, name: str) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when there is no such file; UnreadableFile when it is
    too large, not JSON or not an object."""
    data = read_limited(path, limit, name)
    if data is None:
        return None
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise UnreadableFile(f"{name} is not valid JSON: {str(error).splitlines()[0] if str(error) else 'too deeply nested'}") from None
    if not isinstance(document, dict):
        raise UnreadableFile(f"{name} is not a JSON object")
    return document


def safe_yaml(data: bytes | str) -> Any:
    """``yaml.safe_load`` that refuses anchors and aliases (a few hundred bytes of aliases expand
    to gigabytes); raises ``yaml.YAMLError`` for them as for malformed YAML."""
    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise yaml.YAMLError("YAML anchors and aliases are refused")
            return super().compose_node(parent, index)

    loader = NoAliasLoader(data)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _read_overrides_file(directory: Path) -> list[str] | None:
    """The list in ``.hydra/overrides.yaml``; None when there is none; UnreadableFile otherwise."""
    name = OVERRIDES_PATH.as_posix()
    data = read_limited(directory / OVERRIDES_PATH, MAX_SMALL_FILE_BYTES, name)
    if data is None:
        return None
    try:
        overrides = safe_yaml(data)
    except (yaml.YAMLError, RecursionError) as error:
        raise UnreadableFile(f"{name} is not readable YAML: {str(error).splitlines()[0] if str(error) else 'too deeply nested'}") from None
    if not isinstance(overrides, list) or not all(isinstance(item, (str, int, float, bool)) for item in overrides):
        raise UnreadableFile(f"{name} is not a list of overrides")
    return [str(item) for item in overrides]


def read_overrides(directory: Path) -> list[str] | None:
    """The job's overrides from Hydra's ``.hydra/overrides.yaml`` (a plain YAML list, at most
    ``MAX_SMALL_FILE_BYTES``, read without anchors or aliases); None when there is no such
    readable list."""
    try:
        return _read_overrides_file(directory)
    except UnreadableFile:
        return None


def read_job(directory: Path, name: str) -> JobRow:
    """The row of the run in ``directory``, from its results.json, job.json and overrides; a
    file that is too large or malformed makes the row ``unreadable``, with the reason as its error."""
    problems: list[str] = []

    def attempt(read: Any, *arguments: Any) -> Any:
        try:
            return read(*arguments)
        except UnreadableFile as problem:
            problems.append(str(problem))
            return None

    results = attempt(_read_json, directory / RESULTS_NAME, MAX_RESULTS_BYTES, RESULTS_NAME)
    recorded = attempt(_read_json, directory / STATUS_NAME, MAX_SMALL_FILE_BYTES, STATUS_NAME) or {}
    overrides = attempt(_read_overrides_file, directory)
    if overrides is None:
        listed = recorded.get("overrides")
        overrides = [str(item) for item in listed] if isinstance(listed, list) else []
    if problems:
        return JobRow(name=name, directory=directory, overrides=overrides, status=UNREADABLE, error="; ".join(problems))
    status, error = job_status(directory, results, recorded)
    row = JobRow(name=name, directory=directory, overrides=overrides, status=status, error=_error_text(error))
    if status == COMPLETE and results is not None:
        row.metrics = _final_metrics(results)
        row.dataset = _dataset_name(results)
    row.wall_seconds = _number(recorded.get("wall_seconds"))  # the whole job, measured by the callback
    if row.wall_seconds is None and status == COMPLETE and results is not None:
        timings = results.get("timings")
        row.wall_seconds = _number(timings.get("total_seconds")) if isinstance(timings, dict) else None  # the run alone
    return row


def _error_text(error: Any) -> str | None:
    """The first line of a recorded error, at most ``MAX_ERROR_CHARACTERS`` long."""
    if error is None:
        return None
    lines = str(error).strip().splitlines() or [""]
    line = lines[0]
    return line if len(line) <= MAX_ERROR_CHARACTERS else line[: MAX_ERROR_CHARACTERS - 1] + "…"


def _dataset_name(results: dict[str, Any]) -> str | None:
    """The dataset a results document names (``seq-digits``), or None."""
    config = results.get("config") if isinstance(results.get("config"), dict) else {}
    for block in (results.get("dataset"), config.get("dataset")):
        if isinstance(block, dict) and isinstance(block.get("name"), str):
            return block["name"]
    return None


def job_status(directory: Path, results: dict[str, Any] | None, recorded: dict[str, Any]) -> tuple[str, str | None]:
    """(status, error message or None) of the run in ``directory``.

    A complete results.json wins; then the status the callback recorded in job.json (a
    ``running`` job whose process is gone from this machine counts as if nothing were
    recorded); then ``stopped early`` when a checkpoint exists, else ``failed``.
    """
    if results is not None and results.get("status") == COMPLETE:
        return COMPLETE, None
    status = recorded.get("status")
    if status in (FAILED, STOPPED):
        return status, recorded.get("error")
    if status == RUNNING and _may_be_running(recorded):
        return RUNNING, None
    if (directory / CHECKPOINT_NAME).is_file():
        return STOPPED, None
    if status == RUNNING:
        return FAILED, "ended without recording a result (killed or crashed)"
    return FAILED, "no results.json and no checkpoint"


def _may_be_running(recorded: dict[str, Any]) -> bool:
    """False only when the recording process was on this machine and no longer exists."""
    pid = recorded.get("pid")
    if recorded.get("host") != socket.gethostname() or not isinstance(pid, int) or not 0 < pid < 2**31:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a JSON number (NaN and infinities kept; an integer too
    large for a float becomes an infinity of its sign); None otherwise."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _final_metrics(results: dict[str, Any]) -> dict[str, float]:
    """``{"class_il_average": ..., "resources_train_seconds": ...}``: the numbers of a results document's
    accuracy blocks and ``resources`` the summary reports (a null metric is left out)."""
    metrics = {}
    for kind, fields in [*((kind, METRIC_TITLES) for kind in KIND_TITLES), ("resources", RESOURCE_TITLES),
                         ("online", ONLINE_TITLES)]:
        block = results.get(kind)
        if isinstance(block, dict):
            for metric in fields:
                value = _number(block.get(metric))
                if value is not None:
                    metrics[f"{kind}_{metric}"] = value
    tested = results.get("test")
    for kind, block in (tested.items() if isinstance(tested, dict) else ()):
        value = _number(block.get("average")) if isinstance(block, dict) and kind in KIND_TITLES else None
        if value is not None:
            metrics[f"{kind}_test"] = value
    return metrics


def split_metric_name(name: str) -> tuple[str, str]:
    """``class_il_forward_transfer`` -> ``("class_il", "forward_transfer")``; ``resources_peak_rss_mb``
    -> ``("resources", "peak_rss_mb")``."""
    for kind in (*KIND_TITLES, "resources", "online"):
        if name.startswith(kind + "_"):
            return kind, name[len(kind) + 1:]
    kind, field_name = name.rsplit("_", 1)
    return kind, field_name


def check_directory(root: Path) -> None:
    """Raise FileNotFoundError naming ``root`` when it does not exist or is not a directory."""
    if not root.exists():
        raise FileNotFoundError(f"directory {str(root)!r} does not exist; allowed: a run or sweep directory")
    if not root.is_dir():
        raise FileNotFoundError(f"{str(root)!r} is not a directory; allowed: a run or sweep directory")


def gather(roots: Sequence[Path]) -> list[JobRow]:
    """One row per run under ``roots``. A job's name is its path relative to the root (the root's
    name when the root is the run), or its path as given when there are several roots. Raises FileNotFoundError naming a root that does not
    exist, is not a directory, or holds no runs."""
    rows = []
    for root in roots:
        check_directory(root)
        directories = find_job_dirs(root)
        if not directories:
            raise FileNotFoundError(
                f"no runs under {str(root)!r}; allowed: a directory with runs "
                f"(each has {RESULTS_NAME}, {STATUS_NAME}, {CHECKPOINT_NAME} or {OVERRIDES_PATH.as_posix()})"
            )
        for directory in directories:
            relative = directory.relative_to(root)
            if len(roots) > 1:
                name = directory.as_posix()
            else:
                name = (root.name or str(root)) if relative == Path(".") else relative.as_posix()
            rows.append(read_job(directory, name))
    return rows
