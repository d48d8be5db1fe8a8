"""Shared helpers of the benchmark scripts: interleaved timing, medians, Markdown tables.

Machines are noisy, so every benchmark times all of its candidates side by side: each
repetition runs every candidate once (in a rotating order), and the reported figure is
the median over many repetitions. Compare ratios taken within one run, not absolute
times taken across runs.
"""

from __future__ import annotations

import math
import os
import platform
import shlex
import statistics
import sys
import time
from typing import Any, Callable, Mapping, Sequence


def command_line() -> str:
    """The exact command that started this process, ready to paste into a shell."""
    return " ".join(shlex.quote(part) for part in [os.path.basename(sys.executable), *sys.argv])


def print_header(title: str, extra: Mapping[str, object] | None = None) -> None:
    """Print the title, command line, interpreter / platform and any extra facts (as a list)."""
    print(f"# {title}\n")
    print(f"- command: `{command_line()}`")
    print(f"- python: {platform.python_version()} ({sys.executable})")
    print(f"- platform: {platform.platform()}; os.cpu_count()={os.cpu_count()}")
    print(f"- load average at start: {load_average()}")
    for key, value in (extra or {}).items():
        print(f"- {key}: {value}")
    print()


def load_average() -> str:
    """The 1/5/15-minute load averages (a busy machine explains noisy figures)."""
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def interleaved(
    candidates: Mapping[str, Callable[[], object]],
    *,
    repetitions: int,
    warmup: int = 2,
    min_sample_s: float = 0.0,
    sync: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Time every candidate side by side; return ``{name: [seconds per call, ...]}``.

    Each candidate first runs ``warmup`` times; then its inner loop count is chosen so that
    one sample takes about ``min_sample_s`` (at least one call). Every repetition then takes
    one sample of each candidate, starting at a different candidate each time so that no
    one always runs first (or right after the same neighbour). ``sync`` (for instance
    ``torch.cuda.synchronize``) runs before starting and before stopping each clock.
    """
    sync = sync or (lambda: None)
    names = list(candidates)
    inner: dict[str, int] = {}
    for name in names:
        function = candidates[name]
        for _ in range(warmup):
            function()
        sync()
        start = time.perf_counter()
        function()
        sync()
        once = max(time.perf_counter() - start, 1e-7)
        inner[name] = max(1, math.ceil(min_sample_s / once)) if min_sample_s > 0 else 1
    samples: dict[str, list[float]] = {name: [] for name in names}
    for repetition in range(repetitions):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            function, count = candidates[name], inner[name]
            sync()
            start = time.perf_counter()
            for _ in range(count):
                function()
            sync()
            samples[name].append((time.perf_counter() - start) / count)
    return samples


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> float:
    """Interquartile range relative to the median (a rough noise figure)."""
    if len(values) < 4:
        return float("nan")
    quartiles = statistics.quantiles(values, n=4)
    return (quartiles[2] - quartiles[0]) / statistics.median(values)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; numbers are right-aligned."""
    text = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(header), *(len(row[i]) for row in text)]) for i, header in enumerate(headers)]
    numeric = [all(_is_number(row[i]) for row in text) and bool(text) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if n else ("-" * (w + 2)) for w, n in zip(widths, numeric)) + "|"
    return "\n".join([line(headers), rule, *(line(row) for row in text)])


def _is_number(cell: str) -> bool:
    try:
        float(cell.rstrip("x").replace(",", ""))
    except ValueError:
        return cell in ("", "-")
    return True


def observe_step(model: Any, context: Any, source: Any, batch_size: int) -> tuple[Callable[[], float], Any]:
    """The step a benchmark times: ``model`` attached to ``context`` and begun on task 0, then
    ``model.observe`` on one fixed batch (the first of ``source`` in batches of ``batch_size``)
    under the context's autocast; returns (the step, that batch)."""
    model.attach(context)
    model.begin_task(0)
    data = next(context.batches(source, batch_size))
    model.train()

    def step() -> float:
        with context.autocast():
            return model.observe(data.inputs, data.labels, data.not_aug_inputs)

    return step, data
