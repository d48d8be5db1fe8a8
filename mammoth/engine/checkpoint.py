"""The checkpoint format: one verified file per run (magic, header with sha256 and size, a
``torch.save`` payload read back with ``weights_only=True``), and the loop state it carries."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Optional

import torch

from mammoth.datasets.image_files import files_change
from mammoth.engine.distributed import is_main_process
from mammoth.engine.evaluation import SETTING_METRICS, accuracy_kinds
from mammoth.errors import ConfigError
from mammoth.files import open_nofollow, write_atomic

#: Version of the checkpoint layout; a checkpoint of another version is refused on resume.
CHECKPOINT_FORMAT = 4
#: First bytes of every checkpoint file.
CHECKPOINT_MAGIC = b"MAMMOTH-CHECKPOINT\n"
CHECKPOINT_KEYS = ("format", "config", "data", "state", "model", "model_extra", "generator", "torch_rng", "cuda_rng")
#: The longest header line a checkpoint has (``format N sha256 HEX size BYTES``).
MAX_HEADER_BYTES = 256
RESTART = "start the run again without resume=true (or in another directory)"
log = logging.getLogger("mammoth")


@dataclasses.dataclass
class TrainingState:
    """What the loop has produced so far; saved in every checkpoint."""

    next_task: int
    accuracies: dict[str, list[list[float]]]
    train_seconds: list[float]
    eval_seconds: list[float]
    #: With ``eval_future``: each kind's accuracy on every task of the network before the first task.
    random_init: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    #: With ``eval_future``: each kind's rows of accuracies on the tasks not trained yet (row ``i``: tasks ``i+1..``).
    future: dict[str, list[list[float]]] = dataclasses.field(default_factory=dict)
    #: Class-IL top-5 accuracy rows (as ``accuracies``), where every task has more than 5 classes; else empty.
    top5: list[list[float]] = dataclasses.field(default_factory=list)
    #: The nearest-mean-of-exemplars top-5 rows (as ``top5``), for a method with a memory; else empty.
    nme_top5: list[list[float]] = dataclasses.field(default_factory=list)
    #: The process's peak resident memory (MiB, ``getrusage`` max RSS: a process-lifetime peak) after each task.
    peak_rss_mb: list[float] = dataclasses.field(default_factory=list)
    #: On CUDA, the peak memory allocated by tensors (MiB) during each task (reset per task); else empty.
    peak_cuda_mb: list[float] = dataclasses.field(default_factory=list)
    #: With ``dataset.validation``: each kind's accuracy on the test data of every task after the last task.
    final_test: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    #: With ``dataset.stream=online``: the samples of the stream trained on at each evaluation point
    #: (every ``dataset.eval_every`` samples and each segment's end) and the first kind's accuracy on
    #: each task seen so far there; the samples trained on and the seconds spent training them.
    stream_points: list[int] = dataclasses.field(default_factory=list)
    stream_accuracies: list[list[float]] = dataclasses.field(default_factory=list)
    stream_samples: int = 0
    stream_seconds: float = 0.0
    #: An online stream's checkpoint inside segment ``next_task`` (docs/online.md): the steps of the
    #: segment done and the run generator's state at the segment's start (its order is drawn again
    #: from it); 0 and None at a segment's end.
    segment_steps: int = 0
    segment_rng: Optional[torch.Tensor] = None

    @classmethod
    def empty(cls, setting: str, kinds: tuple[str, ...] | None = None) -> "TrainingState":
        """The state before the first task, with rows for ``kinds`` (None: the setting's kinds;
        a run passes :func:`~mammoth.engine.evaluation.accuracy_kinds` of its model)."""
        return cls(0, {kind: [] for kind in (SETTING_METRICS[setting] if kinds is None else kinds)}, [], [])


def save_checkpoint(path: Path, model: Any, generator: torch.Generator, state: TrainingState, config: dict,
                    data: dict | None = None) -> None:
    """Write the checkpoint atomically: a crash or a full disk never leaves a half-written file,
    and a failed write keeps the previous checkpoint (a one-line ConfigError says so).
    ``data`` is the fingerprint of the data trained on (``ContinualDataset.fingerprint``).

    The file is ``CHECKPOINT_MAGIC``, a header line ``format N sha256 HEX size BYTES``, then the
    ``torch.save`` payload, which holds only what ``torch.load(weights_only=True)`` reads.
    On several processes only rank 0 writes it (every rank holds the same state).
    """
    if not is_main_process():
        return
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "config": config,
        "data": data,
        "state": dataclasses.asdict(state),
        "model": model.state_dict(),
        "model_extra": model.extra_state(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    _check_plain(checkpoint, "checkpoint")
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    payload = buffer.getbuffer()
    header = f"format {CHECKPOINT_FORMAT} sha256 {hashlib.sha256(payload).hexdigest()} size {len(payload)}\n"
    write_atomic(path, CHECKPOINT_MAGIC + header.encode("ascii") + payload, "checkpoint")


def _check_plain(value: Any, where: str) -> None:
    """Refuse what ``torch.load(weights_only=True)`` would not read back (e.g. a numpy array in
    ``model.extra_state()``), naming where it is."""
    if isinstance(value, (torch.Tensor, str, int, float, bool, type(None))):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise ConfigError(f"{where} has a key of type {type(key).__name__}; a checkpoint allows str and int keys")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    raise ConfigError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}; a checkpoint holds only tensors, "
        "numbers, strings, None, lists, tuples and dicts (convert it in extra_state())"
    )


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save_checkpoint`; nothing in it can run code.

    A missing, foreign, truncated, corrupted or crafted file gives a one-line ConfigError naming
    ``path`` and what to do. The file is opened without following a symbolic link (a link is
    refused), and its size must be the one its header declares before the rest is read.
    """
    fields, payload = _read_verified_payload(path)
    if hashlib.sha256(payload).hexdigest() != fields[3]:
        raise ConfigError(f"checkpoint {path} is corrupt (its sha256 checksum does not match); {RESTART}")
    try:
        checkpoint = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - whatever the payload holds, refuse it in one line
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f"it references {found.group(1)}" if found else type(error).__name__
        raise ConfigError(
            f"checkpoint {path} holds objects mammoth does not write ({what}); it was refused unread; {RESTART}"
        ) from None
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise ConfigError(f"checkpoint {path} lacks {', '.join(missing)}; {RESTART}")
    malformed = [key for key in ("config", "state", "model", "model_extra") if not isinstance(checkpoint[key], dict)]
    if malformed:
        raise ConfigError(f"checkpoint {path} has a malformed {', '.join(malformed)}; {RESTART}")
    return checkpoint


def _read_verified_payload(path: Path) -> tuple[list[str], bytes]:
    """The header fields and the payload of the checkpoint ``path``: the magic and the header are
    read first, then the file's size (``fstat`` of a descriptor opened with ``O_NOFOLLOW``) is
    compared with the header's, and only then is the payload read."""
    try:
        file = open_nofollow(path, "rb")  # a symbolic link or a FIFO: a one-line ConfigError naming it
    except FileNotFoundError:
        raise ConfigError(
            f"resume=true but there is no checkpoint at {path}; point hydra.run.dir at the directory of the run to resume"
        ) from None
    except OSError as error:
        raise ConfigError(f"checkpoint {path} cannot be read: {(error.strerror or str(error)).lower()}; {RESTART}") from None
    with file:
        status = os.fstat(file.fileno())
        if file.read(len(CHECKPOINT_MAGIC)) != CHECKPOINT_MAGIC:
            raise ConfigError(f"{path} is not a mammoth checkpoint (or one from an older mammoth); {RESTART}")
        header = file.readline(MAX_HEADER_BYTES)
        if not header.endswith(b"\n"):
            if len(header) < MAX_HEADER_BYTES:
                raise ConfigError(f"checkpoint {path} is truncated (it ends inside its header); {RESTART}")
            raise ConfigError(f"checkpoint {path} has a corrupt header; {RESTART}")
        fields = header.decode("ascii", errors="replace").split()
        if len(fields) != 6 or fields[0::2] != ["format", "sha256", "size"] or not fields[5].isdigit():
            raise ConfigError(f"checkpoint {path} has a corrupt header; {RESTART}")
        if fields[1] != str(CHECKPOINT_FORMAT):
            raise ConfigError(
                f"checkpoint {path} has format {fields[1]}; this mammoth reads format {CHECKPOINT_FORMAT}; {RESTART}"
            )
        declared, available = int(fields[5]), status.st_size - file.tell()
        if available != declared:
            raise ConfigError(
                f"checkpoint {path} is truncated or padded ({available} bytes of data, its header says {declared}); {RESTART}"
            )
        payload = file.read(declared + 1)  # one more: a file that grew since fstat is caught too
    if len(payload) != declared:
        raise ConfigError(
            f"checkpoint {path} is truncated or padded ({len(payload)} bytes of data, its header says {declared}); {RESTART}"
        )
    return fields, payload


def load_checkpoint(path: Path, model: Any, generator: torch.Generator, config: dict, dataset: Any = None) -> TrainingState:
    """Restore the model, the random generators and the loop state from ``path`` (verified by
    :func:`read_checkpoint`); the checkpoint's config must equal ``config``.

    Its contents must be consistent before anything is restored: one accuracy row per finished
    task, row ``i`` with ``i + 1`` percentages, one time per task, every ``num_seen`` counter of
    ``model_extra`` a count of examples. With ``dataset`` (what :func:`run_tasks` passes) the
    checkpoint must also have been trained on the same data (``dataset.fingerprint()``), have at
    most ``dataset.n_tasks`` tasks and the accuracy kinds of its setting, and its counters must
    not exceed the examples a run of that many tasks can have seen, nor a replay buffer's labels
    the classes seen so far.
    """
    checkpoint = read_checkpoint(path)
    saved = checkpoint["config"]
    differences = sorted(key for key in set(config) | set(saved) if config.get(key) != saved.get(key))
    if differences:
        raise ConfigError(
            f"resume=true with a config that differs from the checkpoint's in: {', '.join(differences)}; "
            "resume with the same settings"
        )
    if dataset is not None:
        _check_same_data(path, checkpoint["data"], dataset)
    state = _checked_state(path, checkpoint["state"], dataset, model)
    started = state.next_task + (1 if state.segment_steps else 0)  # a checkpoint inside a segment: its data too
    _check_counters(path, checkpoint["model_extra"], "model_extra", _examples_bound(dataset, started),
                    *_seen_classes_and_tasks(dataset, started))
    try:
        model.load_state_dict(checkpoint["model"])
        model.load_extra_state(checkpoint["model_extra"])
        generator.set_state(checkpoint["generator"])
        torch.set_rng_state(checkpoint["torch_rng"])
        if checkpoint["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
        return state
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        reason = (str(error).strip().splitlines() or [""])[0]
        raise ConfigError(f"checkpoint {path} does not fit this run ({type(error).__name__}: {reason}); {RESTART}") from None


def _check_same_data(path: Path, recorded: Any, dataset: Any) -> None:
    """Refuse a checkpoint whose data fingerprint is not ``dataset``'s, naming what changed."""
    current = dataset.fingerprint()
    if recorded == current:
        return
    if not isinstance(recorded, dict):
        raise ConfigError(f"checkpoint {path} does not record the data it was trained on; {RESTART}")
    changed = []
    for part in [*current, *(part for part in recorded if part not in current)]:
        before, now = recorded.get(part), current.get(part)
        if before == now:
            continue
        if isinstance(before, dict) and isinstance(now, dict) and before.get("shape") != now.get("shape"):
            changed.append(f"{part} (shape {before.get('shape')} then, {now.get('shape')} now)")
        elif isinstance(before, dict) and isinstance(now, dict) and "files" in now:  # a streamed benchmark's files
            changed.append(f"{part} ({files_change(before, now)})")
        else:
            changed.append(f"{part} (different contents)")
    raise ConfigError(
        f"resume=true on different data: the {dataset.name} data under {dataset.config.root} changed since the "
        f"checkpoint {path} was written: {', '.join(changed)}; resume with the data the run started on, or {RESTART}"
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _checked_state(path: Path, state: dict, dataset: Any, model: Any = None) -> TrainingState:
    """The loop state of a checkpoint, once its counts agree with each other (and with ``dataset``:
    the accuracy kinds a run of ``model`` on it reports)."""
    def refuse(what: str) -> ConfigError:
        return ConfigError(f"checkpoint {path} is inconsistent: {what}; {RESTART}")

    names = [field.name for field in dataclasses.fields(TrainingState)]
    if isinstance(state, dict) and "nme_top5" not in state:  # a checkpoint written before NME accuracy
        state = {**state, "nme_top5": []}
    if sorted(state) != sorted(names):
        raise refuse(f"its state has the keys {', '.join(sorted(map(str, state)))}; expected {', '.join(names)}")
    next_task, accuracies = state["next_task"], state["accuracies"]
    n_tasks = None if dataset is None else dataset.n_tasks
    if isinstance(next_task, bool) or not isinstance(next_task, int) or not 0 <= next_task <= (n_tasks or next_task):
        raise refuse(f"next_task={next_task!r}; allowed: 0..{n_tasks if n_tasks is not None else 'the number of tasks'}")
    kinds = None if dataset is None else list(accuracy_kinds(dataset.setting, model))
    if not isinstance(accuracies, dict) or not accuracies or (kinds is not None and sorted(accuracies) != sorted(kinds)):
        found = ", ".join(map(str, accuracies)) if isinstance(accuracies, dict) else type(accuracies).__name__
        raise refuse(f"its accuracies are of {found or 'no kind'}; expected {', '.join(kinds or ['one kind or more'])}")
    for kind, rows in accuracies.items():
        if not isinstance(rows, list) or len(rows) != next_task:
            raise refuse(f"{kind} has {len(rows) if isinstance(rows, list) else 'no'} accuracy rows for {next_task} finished task(s)")
        for index, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != index + 1 or not all(_is_number(v) and 0 <= v <= 100 for v in row):
                raise refuse(f"{kind} row {index + 1} is {row!r}; expected {index + 1} percentage(s) in 0..100")
    for key in ("train_seconds", "eval_seconds"):
        times = state[key]
        if not isinstance(times, list) or len(times) != next_task or not all(_is_number(v) and v >= 0 for v in times):
            raise refuse(f"{key} is {times!r}; expected {next_task} time(s) >= 0")
    _check_measurements(state, next_task, refuse)
    steps, rng = state["segment_steps"], state["segment_rng"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0 or (steps > 0) != isinstance(rng, torch.Tensor) \
            or (steps > 0 and n_tasks is not None and next_task >= n_tasks):
        raise refuse(f"segment_steps={steps!r} with {'a' if isinstance(rng, torch.Tensor) else 'no'} generator state; "
                     "expected 0 and none, or a step count >= 1 inside an unfinished segment with one")
    return TrainingState(**state)


def _check_measurements(state: dict, next_task: int, refuse: Any) -> None:
    """The optional measurements of a state (``random_init``, ``future``, ``top5``, peak memory):
    empty, or one entry per finished task with percentages in 0..100 and memory sizes >= 0."""
    def percentages(values: Any) -> bool:
        return isinstance(values, list) and all(_is_number(v) and 0 <= v <= 100 for v in values)

    for key in ("peak_rss_mb", "peak_cuda_mb"):
        values = state[key]
        if not isinstance(values, list) or len(values) not in (0, next_task) or not all(_is_number(v) and v >= 0 for v in values):
            raise refuse(f"{key} is {values!r}; expected none or {next_task} size(s) >= 0")
    kinds = sorted(state["accuracies"])
    for key in ("top5", "nme_top5"):
        top5 = state[key]
        if not isinstance(top5, list) or len(top5) not in (0, next_task) or not all(
                percentages(row) and len(row) == index + 1 for index, row in enumerate(top5)):
            raise refuse(f"{key} is {top5!r}; expected none or {next_task} row(s) of percentages")
    final_test = state["final_test"]
    if not isinstance(final_test, dict) or (final_test and (sorted(final_test) != kinds or not all(
            percentages(row) and len(row) == next_task for row in final_test.values()))):
        raise refuse(f"final_test is {final_test!r}; expected none or {next_task} percentage(s) per kind")
    random_init, future = state["random_init"], state["future"]
    if not isinstance(random_init, dict) or not isinstance(future, dict) or (
            (random_init or future) and (sorted(random_init) != kinds or sorted(future) != kinds)):
        raise refuse(f"its random_init and future accuracies are not of the kinds {', '.join(kinds)}")
    for kind in random_init:
        if not percentages(random_init[kind]) or not random_init[kind]:
            raise refuse(f"random_init[{kind!r}] is {random_init[kind]!r}; expected one percentage per task")
        rows, n_tasks = future[kind], len(random_init[kind])
        if not isinstance(rows, list) or len(rows) != next_task or not all(
                percentages(row) and len(row) == n_tasks - index - 1 for index, row in enumerate(rows)):
            raise refuse(f"future[{kind!r}] is {rows!r}; expected {next_task} row(s), row i with the tasks after i")


def _examples_bound(dataset: Any, finished_tasks: int) -> int | None:
    """The most examples a method can have been given in ``finished_tasks`` tasks: each task's
    training data (at most the whole training set) every epoch and once more at the task's end,
    and the re-inserts of a memory rebuilt from what it holds (as many again); None without a dataset."""
    if dataset is None:
        return None
    n_train = len(dataset.train_labels())
    return 2 * finished_tasks * (dataset.config.n_epochs + 1) * n_train


def _seen_classes_and_tasks(dataset: Any, finished_tasks: int) -> tuple[int | None, int | None]:
    """The labels and task labels a memory can hold after ``finished_tasks`` tasks (None, None without a dataset)."""
    if dataset is None or finished_tasks == 0:
        return None, None
    classes = dataset.task_classes(finished_tasks - 1).stop if dataset.setting == "class-il" else dataset.n_classes
    return classes, finished_tasks


def _check_counters(path: Path, value: Any, where: str, bound: int | None, labels: int | None = None,
                    tasks: int | None = None) -> None:
    """Every ``num_seen`` in ``value`` (a method's extra state: replay buffers) must be an integer
    in ``0..bound``, and a replay buffer's stored ``labels`` below ``labels`` (the classes seen so
    far) and ``task_labels`` below ``tasks``; a ConfigError names the first that is not."""
    if isinstance(value, dict):
        fields = value.get("fields") if "num_seen" in value else None
        if isinstance(fields, dict):
            for key, limit in (("labels", labels), ("task_labels", tasks)):
                stored = fields.get(key)
                if limit is not None and isinstance(stored, torch.Tensor) and stored.numel() and (
                        stored.is_floating_point() or int(stored.min()) < 0 or int(stored.max()) >= limit):
                    raise ConfigError(
                        f"checkpoint {path} is inconsistent: {where}['fields'][{key!r}] holds "
                        f"{stored.dtype} values {stored.min().item()}..{stored.max().item()}; allowed: integers "
                        f"0..{limit - 1}, the {'classes' if key == 'labels' else 'tasks'} seen so far; {RESTART}"
                    )
        for key, item in value.items():
            name = f"{where}[{key!r}]"
            if key == "num_seen":
                bad = isinstance(item, bool) or not isinstance(item, int) or item < 0 or (bound is not None and item > bound)
                if bad:
                    limit = f"0..{bound}, the most examples this run can have seen" if bound is not None else "an integer >= 0"
                    raise ConfigError(f"checkpoint {path} is inconsistent: {name}={item!r}; allowed: {limit}; {RESTART}")
            else:
                _check_counters(path, item, name, bound, labels, tasks)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_counters(path, item, f"{where}[{index}]", bound, labels, tasks)
