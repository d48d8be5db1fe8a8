"""Run summaries: gather the runs under directories into one row per job and one row per
configuration (mean and spread over seeds), print them, and write ``summary.csv``,
``summary.md`` and ``summary.png``.

A job's status comes from its files, so the sweep callback and ``python -m mammoth.summary``
agree: ``results.json`` with status ``complete`` -> complete; else the status recorded in
``job.json`` by :class:`mammoth.app.callbacks.SweepSummaryCallback`; else ``stopped early`` when a
``checkpoint.pt`` exists and ``failed`` when none does. Checkpoints are never opened.

Job directories may come from elsewhere, so what is read is bounded (``results.json`` at most
``MAX_RESULTS_BYTES``, ``job.json`` and ``.hydra/overrides.yaml`` at most ``MAX_SMALL_FILE_BYTES``,
YAML without anchors or aliases; a job whose files break these rules is ``unreadable``), and what
is written is escaped (no spreadsheet formulas in ``summary.csv``, no Markdown or HTML from
overrides in ``summary.md``).

    python -m mammoth.summary multirun/2026-01-01/12-00-00            # print the tables
    python -m mammoth.summary sweep_a sweep_b --write                   # and write the files into sweep_a
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import socket
import stat
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mammoth.config.run_settings import RUN_CONTROL_KEYS
from mammoth.errors import ConfigError
from mammoth.reporting.results import KIND_TITLES, RESULTS_NAME
from mammoth.files import exclusive_lock, remove_stale_temporaries, write_atomic
from mammoth.engine.checkpoint import CHECKPOINT_NAME

STATUS_NAME = "job.json"
OVERRIDES_PATH = Path(".hydra") / "overrides.yaml"
CSV_NAME, MARKDOWN_NAME, PLOT_NAME = "summary.csv", "summary.md", "summary.png"
LOCK_NAME = ".summary.lock"
MAX_PLOTTED = 40  # configurations in summary.png; more would not be readable

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
    "test": " test",  # a run on a validation split: its test average after the last task (results.json "test")
}
ALWAYS_SHOWN = ("average", "forgetting", "bwt")
#: The ``resources`` of results.json the summary reports (a column when a job reports it).
RESOURCE_TITLES = {"train_seconds": "train (s)", "peak_rss_mb": "peak RSS (MiB)", "peak_cuda_mb": "peak CUDA (MiB)"}
#: Overrides that do not define a configuration: rows that differ only in these are one group.
NOT_A_CONFIGURATION = ("seed", *RUN_CONTROL_KEYS)
_OVERRIDE_KEY = re.compile(r"^[+~]*(?P<key>[^=]+)")


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


@dataclass
class ConfigurationRow:
    """The jobs of one configuration (same overrides but for the seed): mean and standard
    deviation of each metric over its complete jobs."""

    overrides: list[str]
    jobs: int
    complete: int
    means: dict[str, float]
    stds: dict[str, float | None]  # None with fewer than two complete jobs
    statuses: dict[str, int] = field(default_factory=dict)  # status -> number of jobs

    @property
    def not_complete(self) -> dict[str, int]:
        """The statuses of the jobs that did not complete: ``{"failed": 2}``."""
        return {status: number for status, number in self.statuses.items() if status != COMPLETE and number}


# --- finding and reading jobs -------------------------------------------------------------


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
    import yaml

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
    import yaml

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
    for kind, fields in [*((kind, METRIC_TITLES) for kind in KIND_TITLES), ("resources", RESOURCE_TITLES)]:
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
    for kind in (*KIND_TITLES, "resources"):
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


# --- grouping -----------------------------------------------------------------------------


def override_key(override: str) -> str:
    """``+model.lr=0.1`` -> ``model.lr``."""
    match = _OVERRIDE_KEY.match(override)
    return match["key"] if match else override


def configuration(overrides: Sequence[str]) -> list[str]:
    """The overrides that define a configuration: all but the seed and the run-control settings."""
    return [item for item in overrides if override_key(item) not in NOT_A_CONFIGURATION]


def metric_names(rows: Sequence[JobRow]) -> list[str]:
    """``class_il_average, class_il_forgetting, class_il_bwt, ...`` for the accuracy kinds any row
    has (Class-IL and Task-IL when no row has metrics), the other metrics of :data:`METRIC_TITLES`
    and the ``resources_*`` ones where a row reports them."""
    present = {name for row in rows for name in row.metrics}
    kinds = [kind for kind in KIND_TITLES if any(name.startswith(kind + "_") for name in present)]
    names = [f"{kind}_{metric}" for kind in kinds or ["class_il", "task_il"] for metric in METRIC_TITLES
             if metric in ALWAYS_SHOWN or f"{kind}_{metric}" in present]
    return names + [f"resources_{field_name}" for field_name in RESOURCE_TITLES if f"resources_{field_name}" in present]


def group_rows(rows: Sequence[JobRow]) -> list[ConfigurationRow]:
    """One row per configuration, in order of first appearance: the number of jobs, of complete
    jobs, and each metric's mean and sample standard deviation (n - 1) over the complete jobs."""
    groups: dict[tuple[str, ...], list[JobRow]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(configuration(row.overrides))), []).append(row)
    names = metric_names(rows) + ["wall_seconds"]
    grouped = []
    for members in groups.values():
        complete = [row for row in members if row.status == COMPLETE]
        means, stds = {}, {}
        for name in names:
            values = [value for row in complete if (value := _value(row, name)) is not None]
            if values:
                means[name], stds[name] = mean_and_std(values)
        statuses: dict[str, int] = {}
        for row in members:
            statuses[row.status] = statuses.get(row.status, 0) + 1
        grouped.append(ConfigurationRow(configuration(members[0].overrides), len(members), len(complete), means, stds, statuses))
    return grouped


def mean_and_std(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and sample standard deviation (n - 1; None for one value) of ``values``, which
    may hold NaN, infinities and finite values near the float limit (from a run that diverged):
    the mean of values with a NaN, or with both infinities, is NaN; with one infinity, that
    infinity; the standard deviation of values with a non-finite one is NaN. Finite values are
    scaled by a power of two first (exact), so ``1e308`` and ``1e308`` average to ``1e308``
    instead of overflowing; a deviation beyond the float range is an infinity."""
    if len(values) == 0:
        raise ValueError("mean_and_std needs at least one value")
    spread_of_one = None if len(values) == 1 else math.nan
    if any(math.isnan(value) for value in values) or (math.inf in values and -math.inf in values):
        return math.nan, spread_of_one
    if math.inf in values or -math.inf in values:
        return (math.inf if math.inf in values else -math.inf), spread_of_one
    _, exponent = math.frexp(max(abs(value) for value in values))
    scaled = [math.ldexp(value, -exponent) for value in values]  # each within [-1, 1]
    mean = math.ldexp(statistics.fmean(scaled), exponent)  # |mean| <= the largest value: no overflow
    if len(values) == 1:
        return mean, None
    return mean, _ldexp_or_inf(statistics.stdev(scaled), exponent)


def _ldexp_or_inf(value: float, exponent: int) -> float:
    """``value * 2**exponent``, an infinity of its sign when beyond the float range."""
    try:
        return math.ldexp(value, exponent)
    except OverflowError:
        return math.copysign(math.inf, value)


def _value(row: JobRow, name: str) -> float | None:
    return row.wall_seconds if name == "wall_seconds" else row.metrics.get(name)


# --- tables -------------------------------------------------------------------------------


def metric_title(name: str) -> str:
    """``class_il_average`` -> ``Class-IL``; ``task_il_bwt`` -> ``Task-IL BWT``."""
    if name == "wall_seconds":
        return "wall (s)"
    kind, metric = split_metric_name(name)
    return RESOURCE_TITLES[metric] if kind == "resources" else KIND_TITLES[kind] + METRIC_TITLES[metric]


#: Values at least this large (in magnitude) are written in exponent notation (``1e+308``),
#: not as hundreds of digits; beyond any accuracy, loss or time a run can report.
LARGE_VALUE = 1e9


def _format(value: float | None, digits: int = 2) -> str:
    """``91.23`` for ``digits`` 2; ``-`` for a missing value; ``nan``, ``inf`` and ``-inf`` as
    such; ``1e+308`` for a value of at least :data:`LARGE_VALUE`."""
    if value is None:
        return "-"
    if math.isfinite(value) and abs(value) >= LARGE_VALUE:
        return f"{value:.4g}"
    return f"{value:.{digits}f}"  # nan, inf and -inf are written as such


def _mean_std(group: ConfigurationRow, name: str) -> str:
    digits = 1 if name == "wall_seconds" else 2
    if name not in group.means:
        return "-"
    std = group.stds.get(name)
    return _format(group.means[name], digits) + ("" if std is None else f" ± {_format(std, digits)}")


_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]|])")
_CONTROL = re.compile(r"\r\n|[\x00-\x1f\x7f]")


def markdown_text(value: object) -> str:
    """``value`` as inert Markdown text on one line: ``\\``, backticks, ``*``, brackets and ``|``
    backslash-escaped, ``&``, ``<`` and ``>`` as HTML entities (no raw HTML), and newlines and
    other control characters shown as ``\\n``-style escapes instead of breaking the line."""
    text = _CONTROL.sub(lambda match: repr(match.group())[1:-1], str(value))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table with padded columns (readable as plain text too); every cell escaped
    with :func:`markdown_text`."""
    cells = [[markdown_text(cell) for cell in line] for line in [header, *rows]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths)) + " |" for line in cells]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def _overrides_text(overrides: Sequence[str]) -> str:
    return " ".join(overrides) or "(none)"


def format_summary(rows: Sequence[JobRow], title: str) -> str:
    """The markdown summary: counts, the configurations table and the jobs table, and the
    error of every failed job."""
    names = metric_names(rows)
    count_text = status_counts(rows)
    groups = group_rows(rows)
    configurations = markdown_table(
        ["configuration", "n", "jobs", *(metric_title(name) for name in names), "wall (s)"],
        [[_overrides_text(group.overrides), str(group.complete), str(group.jobs),
          *(_mean_std(group, name) for name in [*names, "wall_seconds"])] for group in groups],
    )
    jobs = markdown_table(
        ["job", "overrides", "status", *(metric_title(name) for name in names), "wall (s)"],
        [[row.name, _overrides_text(row.overrides), row.status,
          *(_format(row.metrics.get(name)) for name in names), _format(row.wall_seconds, 1)] for row in rows],
    )
    parts = [
        f"# Summary of {markdown_text(title)}",
        f"{len(rows)} job{'s' if len(rows) != 1 else ''}: {count_text}. Accuracies in percent (final "
        "average, forgetting, backward transfer); configurations: the overrides without `seed` and "
        "run-control settings, mean ± sample standard deviation over the n complete jobs.",
        "## Configurations", configurations, "## Jobs", jobs,
    ]
    errors = [f"- {markdown_text(row.name)} ({markdown_text(_overrides_text(row.overrides))}): {markdown_text(row.error)}"
              for row in rows if row.status in (FAILED, UNREADABLE)]
    if errors:
        parts += ["## Failed jobs", "\n".join(errors)]
    return "\n\n".join(parts) + "\n"


def status_counts(rows: Sequence[JobRow], always: Sequence[str] = ()) -> str:
    """``3 complete, 1 failed``: the number of jobs of each status present (and of the
    ``always`` ones, even when 0)."""
    counts = {status: sum(row.status == status for row in rows) for status in (COMPLETE, FAILED, STOPPED, RUNNING, UNREADABLE)}
    return ", ".join(f"{number} {status}" for status, number in counts.items() if number or status in always)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: str) -> str:
    """A text cell that no spreadsheet runs as a formula: one starting with ``=``, ``+``, ``-``,
    ``@``, a tab or a carriage return gets a ``'`` in front (OWASP's CSV injection advice)."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def format_csv(rows: Sequence[JobRow]) -> str:
    """One line per job: job, status, overrides (space-separated), the metrics, wall seconds,
    error; empty cells for missing values. Text cells are escaped with :func:`csv_text`;
    numbers are written as numbers (``-48.0``)."""
    names = metric_names(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["job", "status", "overrides", *names, "wall_seconds", "error"])
    for row in rows:
        values = [row.metrics.get(name) for name in names] + [row.wall_seconds]
        writer.writerow([csv_text(row.name), csv_text(row.status), csv_text(" ".join(row.overrides)),
                         *("" if value is None else repr(value) for value in values), csv_text(row.error or "")])
    return buffer.getvalue()


# --- plot ---------------------------------------------------------------------------------


def plotted_configurations(groups: Sequence[ConfigurationRow]) -> list[ConfigurationRow]:
    """The configurations with complete jobs, in order; when there are more than ``MAX_PLOTTED``,
    the ``MAX_PLOTTED`` with the best final average of the first accuracy kind, best first."""
    shown = [group for group in groups if group.complete]
    if len(shown) <= MAX_PLOTTED:
        return shown
    kind = next(kind for kind in KIND_TITLES if any(f"{kind}_average" in group.means for group in shown))
    return sorted(shown, key=lambda group: _best_first(group.means.get(f"{kind}_average")))[:MAX_PLOTTED]


def _best_first(value: float | None) -> tuple[int, float]:
    """A sort key: the largest finite value first; NaN, infinities and missing values last."""
    return (0, -value) if value is not None and math.isfinite(value) else (1, 0.0)


_FLOAT = re.compile(r"(?<![\w.])-?(?:\d+\.\d*|\.\d+|\d+(?=[eE]))(?:[eE][-+]?\d+)?(?![\w.])")


def short_floats(text: str) -> str:
    """``model.lr=0.10000000001`` -> ``model.lr=0.1``: every decimal number in ``text`` with at
    most 6 significant digits; other text unchanged."""
    return _FLOAT.sub(lambda match: format(float(match.group()), ".6g"), text)


@dataclass
class Study:
    """An Optuna sweep, read from the sweep's ``multirun.yaml``: the searched parameters
    (override key -> search expression), the direction and the optimised metric
    (``class_il_average``; None: the first kind's average)."""

    params: dict[str, str]
    direction: str
    metric: str | None


def sweep_config(root: Path, rows: Sequence[JobRow] = ()) -> dict[str, Any]:
    """The config Hydra saved at the start of the sweep at ``root`` (``multirun.yaml``); when
    there is none (the Optuna sweeper writes none), the sweeper and ``optimized_metric`` of the
    first job in ``rows`` (its ``.hydra/hydra.yaml`` and ``config.yaml``). Read with the
    summary's limits; empty when nothing can be read."""
    document = _read_yaml(root / "multirun.yaml")
    if document or not rows:
        return document
    sweeper = _sweeper(_read_yaml(rows[0].directory / ".hydra" / "hydra.yaml"))
    if not sweeper:
        return {}
    metric = _read_yaml(rows[0].directory / ".hydra" / "config.yaml").get("optimized_metric")
    return {"hydra": {"sweeper": sweeper}, "optimized_metric": metric}


def _read_yaml(path: Path) -> dict[str, Any]:
    """The YAML mapping in ``path`` (size-limited, no aliases); empty when missing or unreadable."""
    try:
        data = read_limited(path, MAX_SMALL_FILE_BYTES, path.name)
        document = safe_yaml(data) if data is not None else None
    except Exception:  # noqa: BLE001  unreadable: summarised without it
        return {}
    return document if isinstance(document, dict) else {}


def _sweeper(document: dict[str, Any]) -> dict[str, Any]:
    hydra = document.get("hydra")
    sweeper = hydra.get("sweeper") if isinstance(hydra, dict) else None
    return sweeper if isinstance(sweeper, dict) else {}


def planned_jobs(document: dict[str, Any]) -> int | None:
    """How many jobs the sweep of ``document`` (:func:`sweep_config`) runs: the product of its
    sweeps for Hydra's basic sweeper, ``n_trials`` for Optuna; None when unknown."""
    sweeper = _sweeper(document)
    target = str(sweeper.get("_target_", ""))
    if "optuna" in target.lower():
        trials = sweeper.get("n_trials")
        return trials if isinstance(trials, int) and not isinstance(trials, bool) else None
    hydra = document.get("hydra") or {}
    if not target.endswith("BasicSweeper") or "overrides" not in hydra:  # a job's own config: its sweep unknown
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from mammoth.config.hydra_private import basic_sweep_jobs

    params = sweeper.get("params") if isinstance(sweeper.get("params"), dict) else {}
    task = (hydra.get("overrides") or {}).get("task") or []
    try:
        overrides = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()]
                                                            + [str(item) for item in task])
        return len(basic_sweep_jobs(overrides))
    except Exception:  # noqa: BLE001  a sweep Hydra's parser cannot read again: unknown
        return None


def has_ended(rows: Sequence[JobRow], planned: int | None) -> bool:
    """Whether a sweep has ended: no job is running and, when the number of ``planned`` jobs is
    known, that many have a result."""
    if any(row.status == RUNNING for row in rows):
        return False
    return planned is None or len(rows) >= planned


def read_study(document: dict[str, Any]) -> Study | None:
    """The Optuna study of a sweep's config (:func:`sweep_config`); None when it is not one."""
    sweeper = _sweeper(document)
    if "optuna" not in str(sweeper.get("_target_", "")).lower():
        return None
    params = sweeper.get("params")
    if not isinstance(params, dict) or not params:
        return None
    direction = sweeper.get("direction")
    metric = document.get("optimized_metric")
    return Study(params={str(key): str(value) for key, value in params.items()},
                 direction=direction if direction in ("maximize", "minimize") else "maximize",
                 metric=metric.replace(".", "_") if isinstance(metric, str) else None)


def figure_heading(rows: Sequence[JobRow], name: str, ended: bool | None, planned: int | None = None) -> str:
    """The first lines of the summary picture: the dataset(s) the runs trained on (``name``, e.g.
    the sweep directory's name, when no complete run says), then the count of jobs by status:
    ``4 complete, 1 failed`` once the sweep has ended (``ended`` None: :func:`has_ended`),
    ``in progress: ... of N jobs`` before (N: the ``planned`` jobs, when known)."""
    datasets = sorted({row.dataset for row in rows if row.dataset})
    heading = ", ".join(datasets) if datasets else name
    if ended is None:
        ended = has_ended(rows, planned)
    if ended:
        return f"{heading}\n{status_counts(rows, always=(COMPLETE, FAILED))}"
    of = f" of {planned} jobs" if planned else ""
    return f"{heading}\nin progress: {status_counts(rows) or 'no job has ended'}{of}"


def summary_figure(rows: Sequence[JobRow], name: str = "", ended: bool | None = None, study: Study | None = None,
                   planned: int | None = None) -> Any:
    """The matplotlib Figure of the summary picture (not saved): for an Optuna ``study``, the
    metric against each searched parameter with the best trial marked; otherwise one bar per
    configuration (see :func:`bar_figure`). Titled by :func:`figure_heading`."""
    heading = figure_heading(rows, name, ended, planned)
    if study is not None and any(row.status == COMPLETE for row in rows):
        return study_figure(rows, study, heading)
    return bar_figure(group_rows(rows), heading)


def bar_figure(groups: Sequence[ConfigurationRow], heading: str) -> Any:
    """A horizontal bar per configuration and accuracy kind (final average), the standard
    deviation over seeds as error bars and the values written on the bars, on an axis that
    spans the values (not from 0). At most ``MAX_PLOTTED`` configurations with complete jobs
    (the best by the first kind's average); then every configuration without a complete job,
    marked with its jobs' statuses. Labels show the overrides that differ between
    configurations (numbers shortened); the ones they share go in the title."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    complete_groups = plotted_configurations(groups)
    unfinished = [group for group in groups if not group.complete][:MAX_PLOTTED]
    shown = complete_groups + unfinished
    kinds = [kind for kind in KIND_TITLES if any(f"{kind}_average" in group.means for group in shown)]
    n_complete = sum(bool(group.complete) for group in groups)
    if len(complete_groups) < n_complete:
        heading += f"\nthe {len(complete_groups)} best of {n_complete} configurations ({KIND_TITLES[kinds[0]]})"
    common = set.intersection(*(set(group.overrides) for group in shown)) if len(shown) > 1 else set()
    labels = [short_floats(_overrides_text([item for item in group.overrides if item not in common])) + "  " + _jobs_note(group)
              for group in shown]
    figure = Figure(figsize=(9, 1.6 + 0.45 * max(len(shown), 1) * max(len(kinds), 1)), layout="constrained")
    axes = figure.subplots()
    if common:
        heading += f"\nall: {short_floats(' '.join(sorted(common)))}"
    figure.suptitle(heading, fontsize=10)
    if not shown:
        axes.text(0.5, 0.5, "no jobs", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return figure
    left, right = _value_range(complete_groups, kinds)
    height = 0.8 / max(len(kinds), 1)
    positions = np.arange(len(shown))
    for k, kind in enumerate(kinds):
        name = f"{kind}_average"
        means = [group.means.get(name) for group in shown]
        errors = [group.stds.get(name) for group in shown]
        offsets = positions + (k - (len(kinds) - 1) / 2) * height
        axes.barh(offsets, [_drawable(mean) for mean in means], height, xerr=[_drawable(error) for error in errors],
                  capsize=3, label=KIND_TITLES[kind])  # NaN, infinities, 1e308: no bar, the value written
        for y, mean, error in zip(offsets, means, errors):
            if mean is not None:
                text = _format(mean, 1) + ("" if error is None else f" ± {_format(error, 1)}")
                axes.text(left + 0.01 * (right - left), y, text, va="center", ha="left", fontsize=8)
    for position, group in zip(positions, shown):
        if not group.complete:
            axes.text(left + 0.01 * (right - left), position, f"✗ no complete job ({_status_text(group)})",
                      va="center", ha="left", fontsize=8, color="tab:red")
    axes.set_yticks(positions, labels)
    for tick, group in zip(axes.get_yticklabels(), shown):
        if not group.complete:
            tick.set_color("tab:red")
    axes.set_ylim(len(shown) - 0.5, -0.5)  # top to bottom; rows without bars keep their place
    axis_note = f"; the axis starts at {left:g}" if left > 0 else ""
    axes.set(xlim=(left, right), xlabel=f"final average accuracy (%), mean ± std over seeds{axis_note}")
    axes.grid(axis="x", alpha=0.3)
    if kinds:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    return figure


def _drawable(value: float | None) -> float:
    """``value`` when a bar can show it (finite, below :data:`LARGE_VALUE`); NaN otherwise (for
    None, NaN, infinities, 1e308), which matplotlib does not draw: the value is written instead."""
    return value if value is not None and math.isfinite(value) and abs(value) < LARGE_VALUE else math.nan


def _jobs_note(group: ConfigurationRow) -> str:
    """``(n=2)``, ``(n=1, 1 failed)`` or ``(2 failed)``: a configuration's complete jobs and the others."""
    parts = [f"n={group.complete}"] if group.complete else []
    parts += [f"{number} {status}" for status, number in group.not_complete.items()]
    return f"({', '.join(parts)})"


def _status_text(group: ConfigurationRow) -> str:
    return ", ".join(f"{number} {status}" for status, number in group.not_complete.items()) or "no jobs"


def _value_range(groups: Sequence[ConfigurationRow], kinds: Sequence[str]) -> tuple[float, float]:
    """An x range that shows the differences between the plotted averages (± std), within 0..100."""
    lows, highs = [], []
    for group in groups:
        for kind in kinds:
            mean = _drawable(group.means.get(f"{kind}_average"))
            if not math.isnan(mean):  # NaN, infinities and 1e308 have no bar: they do not stretch the axis
                std = _drawable(group.stds.get(f"{kind}_average"))
                std = 0.0 if math.isnan(std) else std
                lows.append(mean - std)
                highs.append(mean + std)
    if not lows:
        return 0.0, 100.0
    low, high = min(lows), max(highs)
    pad = max(0.25 * (high - low), 2.0)
    left = max(0.0, math.floor(low - pad))
    right = max(min(100.0, math.ceil(high + pad)), high)
    return left, max(right, left + 1.0)


def study_figure(rows: Sequence[JobRow], study: Study, heading: str) -> Any:
    """For an Optuna study: the optimised metric of each trial against each searched parameter
    (one panel each; log scale for ``log`` searches; choices as categories), the best trial
    marked with a star and its value, failed trials as red crosses along the bottom."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    metric = study.metric or next(name for name in metric_names(rows) if name.endswith("_average"))
    trials = [(row, row.metrics.get(metric)) for row in rows]
    # NaN, infinities and 1e308 (a diverged trial) are neither plotted nor the best
    scored = [(row, value) for row, value in trials if row.status == COMPLETE and not math.isnan(_drawable(value))]
    pick = max if study.direction == "maximize" else min
    best = pick(scored, key=lambda item: item[1])[0] if scored else None
    unfinished = [row for row, value in trials if row.status != COMPLETE]
    columns = min(len(study.params), 3)
    rows_of_panels = math.ceil(len(study.params) / columns)
    figure = Figure(figsize=(max(4.5 * columns, 6.5), 1.2 + 3.4 * rows_of_panels), layout="constrained")
    panels = figure.subplots(rows_of_panels, columns, squeeze=False).ravel()
    metric_label = _metric_label(metric)
    values = [value for _, value in scored]
    bottom = min(values) - 0.08 * ((max(values) - min(values)) or 1.0) if values else 0.0  # failed trials, below the rest
    figure.suptitle(f"{heading}\nOptuna study: {metric_label}, {study.direction}", fontsize=10)
    for axes, (key, expression) in zip(panels, study.params.items()):
        positions, ticks = _parameter_positions([_override_value(row, key) for row in rows])
        xs = [positions.get(_override_value(row, key)) for row, _ in scored]
        axes.scatter([x for x in xs if x is not None], [v for x, (_, v) in zip(xs, scored) if x is not None],
                     color="tab:blue", label="trial")
        crosses = [positions.get(_override_value(row, key)) for row in unfinished]
        crosses = [x for x in crosses if x is not None]
        if crosses:
            axes.scatter(crosses, [bottom] * len(crosses), marker="x", color="tab:red", label="failed or unfinished")
        if best is not None and positions.get(_override_value(best, key)) is not None:
            x, y = positions[_override_value(best, key)], best.metrics[metric]
            axes.scatter([x], [y], marker="*", s=250, color="tab:orange", edgecolor="black", zorder=3,
                         label=f"best {_format(y)} ({key}={short_floats(_override_value(best, key) or '')})")
        if ticks:
            axes.set_xticks(range(len(ticks)), ticks)
        elif "log" in expression and all(isinstance(x, float) and x > 0 for x in positions.values()):
            axes.set_xscale("log")
        axes.set(title=key, xlabel=short_floats(expression), ylabel=metric_label)
        axes.margins(x=0.12, y=0.15)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="best")
    for axes in panels[len(study.params):]:
        axes.set_axis_off()
    return figure


def _metric_label(metric: str) -> str:
    kind, field_name = split_metric_name(metric)
    if kind == "resources":
        return RESOURCE_TITLES.get(field_name, field_name)
    words = {"average": "average accuracy (%)", "forgetting": "forgetting", "bwt": "backward transfer",
             "forward_transfer": "forward transfer", "average_incremental": "average incremental accuracy (%)",
             "old_accuracy": "accuracy on old classes (%)", "new_accuracy": "accuracy on new classes (%)",
             "top5": "top-5 accuracy (%)", "test": "test accuracy (%)"}
    return f"{KIND_TITLES.get(kind, kind)} {words.get(field_name, field_name)}"


def _override_value(row: JobRow, key: str) -> str | None:
    """The value ``row``'s overrides give ``key`` (``model.lr=0.01`` -> ``0.01``), or None."""
    for item in row.overrides:
        if override_key(item) == key and "=" in item:
            return item.split("=", 1)[1]
    return None


def _parameter_positions(values: Sequence[str | None]) -> tuple[dict[str, float], list[str]]:
    """x positions of a parameter's values: the numbers themselves, or (when some value is not a
    number) one position per category, with the category names as tick labels."""
    present = [value for value in dict.fromkeys(values) if value is not None]
    try:
        return {value: float(value) for value in present}, []
    except ValueError:
        return {value: float(index) for index, value in enumerate(present)}, present


def plot_summary(rows: Sequence[JobRow], name: str = "", ended: bool | None = None, study: Study | None = None,
                 planned: int | None = None) -> bytes:
    """PNG bytes of :func:`summary_figure`."""
    buffer = io.BytesIO()
    summary_figure(rows, name, ended, study, planned).savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


# --- writing ------------------------------------------------------------------------------


def write_summary(root: Path, rows: Sequence[JobRow], title: str | None = None, ended: bool | None = None) -> list[Path]:
    """Write summary.csv, summary.md and summary.png of ``rows`` into ``root``; return their
    paths. ``ended``: whether the sweep has ended (None: :func:`has_ended`, with the jobs its
    ``multirun.yaml`` plans)."""
    title = title or str(root)
    sweep = sweep_config(root, rows)
    picture = plot_summary(rows, root.absolute().name, ended, read_study(sweep), planned_jobs(sweep))
    return [
        write_atomic(root / CSV_NAME, format_csv(rows).encode(), "summary"),
        write_atomic(root / MARKDOWN_NAME, format_summary(rows, title).encode(), "summary"),
        write_atomic(root / PLOT_NAME, picture, "summary"),
    ]


def update_summary(root: Path, others: Sequence[Path] = (), ended: bool | None = None) -> list[JobRow]:
    """Under the lock of ``root``: gather the runs under ``root`` and ``others`` and write the
    summary files into ``root`` (``ended`` as in :func:`write_summary`). Returns the rows."""
    check_directory(root)
    with exclusive_lock(root / LOCK_NAME):  # processes that update one summary take turns
        remove_stale_temporaries(root, before=time.time(), names=(CSV_NAME, MARKDOWN_NAME, PLOT_NAME))  # a writer killed mid-write
        rows = gather([root, *others])
        write_summary(root, rows, " ".join(str(path) for path in [root, *others]), ended)
    return rows


# --- command line -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mammoth.summary DIR [DIR ...] [--write]``: print the summary tables of the
    runs under the directories; with ``--write`` also write the files into the first one.
    Returns the exit status (2: a usage error, such as a directory without runs; 1: the files
    cannot be written)."""
    parser = argparse.ArgumentParser(
        prog="python -m mammoth.summary",
        description="Summarise mammoth runs and sweeps: one row per job, one row per configuration "
                    "(mean ± std over seeds).",
    )
    parser.add_argument("directories", nargs="+", type=Path, metavar="DIR", help="a run or sweep directory")
    parser.add_argument("--write", action="store_true",
                        help=f"also write {CSV_NAME}, {MARKDOWN_NAME} and {PLOT_NAME} into the first DIR")
    arguments = parser.parse_args(argv)
    roots = list(arguments.directories)
    title = " ".join(str(path) for path in roots)
    try:
        rows = update_summary(roots[0], roots[1:]) if arguments.write else gather(roots)
    except FileNotFoundError as error:  # a directory that does not exist or holds no runs
        print(f"Error: {error}", file=sys.stderr)
        return 2
    except (OSError, ConfigError) as error:  # the summary files cannot be written
        print(f"Error: cannot write the summary into {str(roots[0])!r}: {error}", file=sys.stderr)
        return 1
    print(format_summary(rows, title), end="")
    if arguments.write:
        print(f"Wrote {', '.join(str(roots[0] / name) for name in (CSV_NAME, MARKDOWN_NAME, PLOT_NAME))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
