"""Run summaries: gather the runs under directories into one row per job and one row per
configuration (mean and spread over seeds), print them, and write ``summary.csv``,
``summary.md`` and ``summary.png``.

A job's status comes from its files, so the sweep callback and ``python -m mammoth.summary``
agree: ``results.json`` with status ``complete`` -> complete; else the status recorded in
``job.json`` by :class:`mammoth.callbacks.SweepSummaryCallback`; else ``stopped early`` when a
``checkpoint.pt`` exists and ``failed`` when none does. Checkpoints are never opened.

    python -m mammoth.summary multirun/2026-01-01/12-00-00            # print the tables
    python -m mammoth.summary sweep_a sweep_b --write                   # and write the files into sweep_a
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import re
import socket
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from mammoth.errors import ConfigError
from mammoth.results import KIND_TITLES, RESULTS_NAME
from mammoth.rundir import write_atomic
from mammoth.training import CHECKPOINT_NAME

STATUS_NAME = "job.json"
OVERRIDES_PATH = Path(".hydra") / "overrides.yaml"
CSV_NAME, MARKDOWN_NAME, PLOT_NAME = "summary.csv", "summary.md", "summary.png"
LOCK_NAME = ".summary.lock"
MAX_PLOTTED = 40  # configurations in summary.png; more would not be readable

COMPLETE, FAILED, STOPPED, RUNNING = "complete", "failed", "stopped early", "running"
METRIC_TITLES = {"average": "", "forgetting": " forgetting", "bwt": " BWT"}
#: Overrides that do not define a configuration: rows that differ only in these are one group.
NOT_A_CONFIGURATION = ("seed", "resume", "stop_after_task", "threads", "output_dir")
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


@dataclass
class ConfigurationRow:
    """The jobs of one configuration (same overrides but for the seed): mean and standard
    deviation of each metric over its complete jobs."""

    overrides: list[str]
    jobs: int
    complete: int
    means: dict[str, float]
    stds: dict[str, float | None]  # None with fewer than two complete jobs


# --- finding and reading jobs -------------------------------------------------------------


def is_job_dir(path: Path) -> bool:
    """Whether ``path`` holds a run: a results.json, job.json, checkpoint.pt or .hydra/overrides.yaml."""
    return any((path / name).is_file() for name in (RESULTS_NAME, STATUS_NAME, CHECKPOINT_NAME, OVERRIDES_PATH))


def find_job_dirs(root: Path) -> list[Path]:
    """The run directories at or under ``root`` (a run, a sweep with job subdirectories, or
    deeper nesting such as ``outputs/DATE/TIME``), in natural order (``2`` before ``10``).
    Hidden directories and the inside of a run are not searched."""
    if is_job_dir(root):
        return [root]
    found = []
    for directory, subdirectories, _ in os.walk(root):
        path = Path(directory)
        if path != root and is_job_dir(path):
            found.append(path)
            subdirectories.clear()
            continue
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
    return sorted(found, key=lambda path: _natural_key(str(path.relative_to(root))))


def _natural_key(text: str) -> list[Any]:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)]


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def read_overrides(directory: Path) -> list[str] | None:
    """The job's overrides from Hydra's ``.hydra/overrides.yaml`` (a plain YAML list, read with
    ``yaml.safe_load``); None when there is no such readable list."""
    import yaml

    try:
        overrides = yaml.safe_load((directory / OVERRIDES_PATH).read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(overrides, list):
        return None
    return [str(item) for item in overrides]


def read_job(directory: Path, name: str) -> JobRow:
    """The row of the run in ``directory``, from its results.json, job.json and overrides."""
    results = _read_json(directory / RESULTS_NAME)
    recorded = _read_json(directory / STATUS_NAME) or {}
    overrides = read_overrides(directory)
    if overrides is None:
        overrides = [str(item) for item in recorded.get("overrides") or []]
    status, error = job_status(directory, results, recorded)
    row = JobRow(name=name, directory=directory, overrides=overrides, status=status, error=error)
    if status == COMPLETE and results is not None:
        row.metrics = _final_metrics(results)
    row.wall_seconds = _number(recorded.get("wall_seconds"))  # the whole job, measured by the callback
    if row.wall_seconds is None and status == COMPLETE and results is not None:
        row.wall_seconds = _number((results.get("timings") or {}).get("total_seconds"))  # the run alone
    return row


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
    if recorded.get("host") != socket.gethostname() or not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _final_metrics(results: dict[str, Any]) -> dict[str, float]:
    metrics = {}
    for kind in KIND_TITLES:
        block = results.get(kind)
        if isinstance(block, dict):
            for metric in METRIC_TITLES:
                value = _number(block.get(metric))
                if value is not None:
                    metrics[f"{kind}_{metric}"] = value
    return metrics


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
    """``class_il_average, class_il_forgetting, ...`` for the accuracy kinds any row has
    (Class-IL and Task-IL when no row has metrics)."""
    present = {name for row in rows for name in row.metrics}
    kinds = [kind for kind in KIND_TITLES if any(name.startswith(kind + "_") for name in present)]
    return [f"{kind}_{metric}" for kind in kinds or ["class_il", "task_il"] for metric in METRIC_TITLES]


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
                means[name] = statistics.fmean(values)
                stds[name] = statistics.stdev(values) if len(values) > 1 else None
        grouped.append(ConfigurationRow(configuration(members[0].overrides), len(members), len(complete), means, stds))
    return grouped


def _value(row: JobRow, name: str) -> float | None:
    return row.wall_seconds if name == "wall_seconds" else row.metrics.get(name)


# --- tables -------------------------------------------------------------------------------


def metric_title(name: str) -> str:
    """``class_il_average`` -> ``Class-IL``; ``task_il_bwt`` -> ``Task-IL BWT``."""
    if name == "wall_seconds":
        return "wall (s)"
    kind, metric = name.rsplit("_", 1)
    return KIND_TITLES[kind] + METRIC_TITLES[metric]


def _format(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _mean_std(group: ConfigurationRow, name: str) -> str:
    digits = 1 if name == "wall_seconds" else 2
    if name not in group.means:
        return "-"
    std = group.stds.get(name)
    return _format(group.means[name], digits) + ("" if std is None else f" ± {_format(std, digits)}")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table with padded columns (readable as plain text too); ``|`` in cells escaped."""
    cells = [[str(cell).replace("|", "\\|") for cell in line] for line in [header, *rows]]
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
    counts = {status: sum(row.status == status for row in rows) for status in (COMPLETE, FAILED, STOPPED, RUNNING)}
    count_text = ", ".join(f"{number} {status}" for status, number in counts.items() if number)
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
        f"# Summary of {title}",
        f"{len(rows)} job{'s' if len(rows) != 1 else ''}: {count_text}. Accuracies in percent (final "
        "average, forgetting, backward transfer); configurations: the overrides without `seed` and "
        "run-control settings, mean ± sample standard deviation over the n complete jobs.",
        "## Configurations", configurations, "## Jobs", jobs,
    ]
    errors = [f"- `{row.name}` ({_overrides_text(row.overrides)}): {row.error}" for row in rows if row.status == FAILED]
    if errors:
        parts += ["## Failed jobs", "\n".join(errors)]
    return "\n\n".join(parts) + "\n"


def format_csv(rows: Sequence[JobRow]) -> str:
    """One line per job: job, status, overrides (space-separated), the metrics, wall seconds,
    error; empty cells for missing values."""
    names = metric_names(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["job", "status", "overrides", *names, "wall_seconds", "error"])
    for row in rows:
        values = [row.metrics.get(name) for name in names] + [row.wall_seconds]
        writer.writerow([row.name, row.status, " ".join(row.overrides),
                         *("" if value is None else repr(value) for value in values), row.error or ""])
    return buffer.getvalue()


# --- plot ---------------------------------------------------------------------------------


def plotted_configurations(groups: Sequence[ConfigurationRow]) -> list[ConfigurationRow]:
    """The configurations with complete jobs, in order; when there are more than ``MAX_PLOTTED``,
    the ``MAX_PLOTTED`` with the best final average of the first accuracy kind, best first."""
    shown = [group for group in groups if group.complete]
    if len(shown) <= MAX_PLOTTED:
        return shown
    kind = next(kind for kind in KIND_TITLES if any(f"{kind}_average" in group.means for group in shown))
    return sorted(shown, key=lambda group: -group.means.get(f"{kind}_average", -math.inf))[:MAX_PLOTTED]


def plot_summary(groups: Sequence[ConfigurationRow], title: str) -> bytes:
    """PNG bytes: a horizontal bar per configuration and accuracy kind (final average), with
    the standard deviation over seeds as error bars (at most ``MAX_PLOTTED`` configurations: the
    best by the first kind's average). Labels show the overrides that differ
    between configurations; the ones they share go in the title."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    shown = plotted_configurations(groups)
    kinds = [kind for kind in KIND_TITLES if any(f"{kind}_average" in group.means for group in shown)]
    complete = sum(bool(group.complete) for group in groups)
    if len(shown) < complete:
        title = f"{title}: the {len(shown)} best of {complete} configurations ({KIND_TITLES[kinds[0]]})"
    common = set.intersection(*(set(group.overrides) for group in shown)) if shown else set()
    labels = [_overrides_text([item for item in group.overrides if item not in common]) for group in shown]
    if len(shown) == 1:
        labels = [_overrides_text(shown[0].overrides)]
    figure = Figure(figsize=(9, 1.6 + 0.45 * max(len(shown), 1) * max(len(kinds), 1)), layout="constrained")
    axes = figure.subplots()
    if not shown:
        axes.text(0.5, 0.5, "no complete jobs yet", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
    height = 0.8 / max(len(kinds), 1)
    positions = np.arange(len(shown))
    for k, kind in enumerate(kinds):
        name = f"{kind}_average"
        means = [group.means.get(name, np.nan) for group in shown]
        errors = [np.nan if group.stds.get(name) is None else group.stds[name] for group in shown]
        axes.barh(positions + (k - (len(kinds) - 1) / 2) * height, means, height, xerr=errors, capsize=3,
                  label=KIND_TITLES[kind])
    if shown:
        axes.set_yticks(positions, [f"{label}  (n={group.complete})" for label, group in zip(labels, shown)])
        axes.invert_yaxis()
        axes.set(xlim=(0, 100), xlabel="final average accuracy (%), mean ± std over seeds")
        axes.grid(axis="x", alpha=0.3)
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    subtitle = f"\nall: {' '.join(sorted(common))}" if common and len(shown) > 1 else ""
    figure.suptitle(f"Summary of {title}{subtitle}", fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


# --- writing ------------------------------------------------------------------------------


def write_summary(root: Path, rows: Sequence[JobRow], title: str | None = None) -> list[Path]:
    """Write summary.csv, summary.md and summary.png of ``rows`` into ``root``; return their paths."""
    title = title or str(root)
    return [
        write_atomic(root / CSV_NAME, format_csv(rows).encode(), "summary"),
        write_atomic(root / MARKDOWN_NAME, format_summary(rows, title).encode(), "summary"),
        write_atomic(root / PLOT_NAME, plot_summary(group_rows(rows), title), "summary"),
    ]


@contextlib.contextmanager
def summary_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``root/.summary.lock`` (``fcntl.flock``; no lock where fcntl
    does not exist), so processes that update one summary take turns."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(root / LOCK_NAME, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError:  # a file system without locks (some network mounts): writes stay atomic
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update_summary(root: Path, others: Sequence[Path] = ()) -> list[JobRow]:
    """Under the lock of ``root``: gather the runs under ``root`` and ``others`` and write the
    summary files into ``root``. Returns the rows."""
    check_directory(root)
    with summary_lock(root):
        rows = gather([root, *others])
        write_summary(root, rows, " ".join(str(path) for path in [root, *others]))
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
