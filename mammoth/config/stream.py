"""The online setting's keys (docs/online.md), checked without torch: the pre-flight checks a command
line with :func:`check_stream` (exit status 2) and the benchmarks check their settings with it.

- ``dataset.stream``: ``tasks`` (the default: each task trained for ``dataset.n_epochs`` epochs) or
  ``online`` (one pass over the stream in mini-batches of ``dataset.batch_size``: no epochs, so a
  ``dataset.n_epochs`` other than 1 or the benchmark's default is refused, and so is
  ``dataset.fitting_mode=iters``);
- ``dataset.boundaries``: ``sharp`` (segment ``t`` is task ``t``'s data) or ``blurry``
  (:func:`blurry_leaks`: ``dataset.blurry_fraction`` of each task's examples go to a neighbouring
  segment);
- ``dataset.task_free``: the method is not told where tasks change (no ``begin_task`` / ``end_task``);
- ``dataset.eval_every``: evaluate every that many samples of the stream (null: at segment ends only).

The last four need ``dataset.stream=online``.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from mammoth.config.value_checks import check_positive_int
from mammoth.errors import ConfigError, MammothError

STREAMS = ("tasks", "online")
BOUNDARIES = ("sharp", "blurry")
#: The fraction of each task's examples that leak into a neighbouring segment with boundaries=blurry.
DEFAULT_BLURRY_FRACTION = 0.1


def check_stream(dataset: str, values: Mapping[str, Any], default_n_epochs: Optional[int] = None,
                 error_type: type[MammothError] = ConfigError) -> dict[str, Any]:
    """The online settings of ``values`` (a dataset config), checked: ``stream``, ``boundaries``,
    ``task_free``, ``blurry_fraction``, ``eval_every``. Each refusal is one line of ``error_type``
    naming the value and what is allowed. ``default_n_epochs`` is the benchmark's: under
    ``stream=online`` any other ``n_epochs`` is refused (None: not checked)."""
    stream = values.get("stream", "tasks")
    boundaries = values.get("boundaries", "sharp")
    task_free = values.get("task_free", False)
    fraction = values.get("blurry_fraction", DEFAULT_BLURRY_FRACTION)
    eval_every = values.get("eval_every")
    if stream not in STREAMS:
        raise error_type(f"dataset.stream={stream!r} is not allowed; allowed: {', '.join(STREAMS)}")
    if boundaries not in BOUNDARIES:
        raise error_type(f"dataset.boundaries={boundaries!r} is not allowed; allowed: {', '.join(BOUNDARIES)}")
    if not isinstance(task_free, bool):
        raise error_type(f"dataset.task_free={task_free!r} is not allowed; allowed: true, false")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise error_type(f"dataset.blurry_fraction={fraction!r} is not allowed; allowed: a number in [0, 1)")
    if eval_every is not None:
        check_positive_int("dataset.eval_every", eval_every, error_type)
    if stream != "online":
        for key, value, default in (("boundaries", boundaries, "sharp"), ("task_free", task_free, False),
                                    ("eval_every", eval_every, None)):
            if value != default:
                raise error_type(f"dataset.{key}={_text(value)} is not allowed with dataset.stream={stream}; "
                                 "allowed: with dataset.stream=online")
        return {"stream": stream, "boundaries": boundaries, "task_free": task_free,
                "blurry_fraction": float(fraction), "eval_every": eval_every}
    n_epochs = values.get("n_epochs")
    if default_n_epochs is not None and n_epochs is not None and n_epochs not in (1, default_n_epochs):
        raise error_type(f"dataset.n_epochs={n_epochs} is not allowed with dataset.stream=online for {dataset}: "
                         "a stream is a single pass; allowed: 1, or leave dataset.n_epochs out")
    if values.get("fitting_mode", "epochs") != "epochs":
        raise error_type(f"dataset.fitting_mode={values.get('fitting_mode')} is not allowed with "
                         "dataset.stream=online (a single pass); allowed: epochs (the default)")
    return {"stream": stream, "boundaries": boundaries, "task_free": task_free,
            "blurry_fraction": float(fraction), "eval_every": eval_every}


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def blurry_leaks(task_sizes: list[int], fraction: float) -> list[tuple[int, int]]:
    """``(count, segment)`` per task under ``boundaries=blurry``: ``floor(fraction * n_t)`` of task
    ``t``'s ``n_t`` examples go to segment ``t + 1`` (the last task's to segment ``t - 1``); one
    task leaks nothing."""
    last = len(task_sizes) - 1
    return [(int(fraction * size + 1e-9) if last > 0 else 0, task + 1 if task < last else task - 1)
            for task, size in enumerate(task_sizes)]
