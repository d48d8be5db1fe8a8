"""The run directory: checks that it can be written, atomic file writes, and the lock that keeps
two runs out of the same directory."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import socket
import stat
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, BinaryIO, Iterator

from mammoth.errors import ConfigError

LOCK_NAME = ".mammoth.lock"
#: The most characters of a lock file read for its holder (``PID HOST``).
LOCK_HOLDER_BYTES = 300
#: A run's checkpoint (written and read by :mod:`mammoth.engine.checkpoint`), named here for what
#: only looks for it without importing torch (the summary, the run-directory checks, resume).
CHECKPOINT_NAME = "checkpoint.pt"


def _reason(error: OSError) -> str:
    """``[Errno 28] No space left on device`` -> ``no space left on device (the disk is full)``."""
    text = (error.strerror or str(error)).lower()
    return f"{text} (the disk is full)" if error.errno == errno.ENOSPC else text


def prepare_directory(path: Path, key: str) -> Path:
    """Create ``path`` (and its parents) and check that files can be written in it.

    Raises a one-line ConfigError naming ``key`` (``output_dir``, ``hydra.run.dir``) and the
    path when it is a file, cannot be created, or is not writable.
    """
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={path} is a file, not a directory; allowed: a directory mammoth can write to")
    try:
        path.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(dir=path, prefix=".mammoth-write-test-")  # O_EXCL: never a planted link
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise ConfigError(
            f"{key}={path} cannot be written: {_reason(error)}; allowed: a directory mammoth can write to"
        ) from None
    return path


def path_inside(run_dir: Path, value: str | os.PathLike[str], key: str) -> Path:
    """``run_dir / value`` for a path a config gives for output (``logger.csv.filename``,
    ``logger.tensorboard.log_dir``, ...), checked to stay inside ``run_dir``.

    Raises a one-line ConfigError naming ``key`` and ``value`` when ``value`` is empty,
    absolute, contains ``..``, or leads out of ``run_dir`` through a symlink that exists.
    """
    text = os.fspath(value)
    allowed = "allowed: a relative path inside the run directory, without '..' and without symlinks leading out"
    if not text.strip() or "\x00" in text:
        raise ConfigError(f"{key}={text!r} is not a path; {allowed}")
    relative = Path(text)
    if relative.is_absolute() or relative.drive:
        raise ConfigError(f"{key}={text} is an absolute path; {allowed}")
    if ".." in relative.parts:
        raise ConfigError(f"{key}={text} goes up with '..'; {allowed}")
    base = Path(run_dir).resolve()
    resolved = (base / relative).resolve()
    if resolved != base and base not in resolved.parents:
        raise ConfigError(f"{key}={text} leads out of the run directory {run_dir} through a symlink (to {resolved}); {allowed}")
    return Path(run_dir) / relative


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # 0 where it does not exist (Windows): links are checked first
_OPEN_FLAGS = {
    "r": os.O_RDONLY,
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "a+": os.O_RDWR | os.O_CREAT | os.O_APPEND,
}


def open_nofollow(path: Path, mode: str = "w", **options: Any) -> IO[Any]:
    """``open(path, mode, **options)`` for a file in a run directory, never through a symlink.

    ``mode`` is ``r``, ``w``, ``a`` or ``a+``, with ``b`` for bytes. The file is opened with
    ``O_NOFOLLOW`` (and ``O_CREAT`` to write), so a symlink planted at ``path`` is refused,
    its target untouched, in a one-line ConfigError that names the link; so is anything but a
    regular file (a FIFO is not waited on).
    """
    text_mode = mode.replace("b", "")
    if text_mode not in _OPEN_FLAGS:
        raise ValueError(f"mode={mode!r} is not supported; allowed: r, w, a, a+ (with b for bytes)")
    flags = _OPEN_FLAGS[text_mode] | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    if not _NOFOLLOW and os.path.islink(path):  # no O_NOFOLLOW (Windows): check first
        raise link_error(path)
    try:
        descriptor = os.open(path, flags, 0o666)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.EMLINK) and os.path.islink(path):
            raise link_error(path) from None
        if error.errno == errno.ENXIO:  # a FIFO without a reader
            raise _not_regular_error(path) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise _not_regular_error(path)
        if flags & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, mode, **options)
    except BaseException:
        os.close(descriptor)
        raise


def link_error(path: Path) -> ConfigError:
    """The one-line refusal of a symlink planted in a run directory."""
    return ConfigError(
        f"{path} is a symbolic link (to {os.readlink(path)}); mammoth does not follow links in a run "
        "directory; allowed: a regular file or no file at that path (remove the link)"
    )


def _not_regular_error(path: Path) -> ConfigError:
    return ConfigError(f"{path} is not a regular file; allowed: a regular file or no file at that path")


#: ``.NAME.XXXXXXXX.tmp``: the temporary files of :func:`write_atomic` (and :func:`atomic_file`).
TEMPORARY_PATTERN = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_TEMPORARY_LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789_"


@contextlib.contextmanager
def atomic_file(path: Path, what: str) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through, so ``path`` is always whole: the block writes a
    temporary file beside it (``.NAME.XXXXXXXX.tmp``, a unique name, created without following
    symlinks and locked while written), which replaces ``path`` when the block ends.

    The directory is opened once, so the temporary file and the rename stay in it even if its
    path is swapped for a symlink meanwhile. Processes writing the same file at once (a sweep's
    jobs updating its summary) never share a temporary file. On failure (disk full, read-only
    disk, Ctrl-C) the temporary file is removed, ``path`` keeps its previous content, and an
    OSError becomes a one-line ConfigError naming ``what`` (e.g. ``checkpoint``) and ``path``.
    """
    directory = _open_directory(path.parent)
    temporary = None
    try:
        temporary, descriptor = _create_temporary(directory, path)
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(_name(directory, path.parent, temporary), _name(directory, path.parent, path.name),
                   src_dir_fd=directory, dst_dir_fd=directory)
        temporary = None
    except OSError as error:
        kept = f"the previous {what} is kept" if path.exists() else f"no {what} was written"
        raise ConfigError(f"could not write the {what} {path}: {_reason(error)}; {kept}") from None
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(_name(directory, path.parent, temporary), dir_fd=directory)
        if directory is not None:
            os.close(directory)


def write_atomic(path: Path, data: bytes, what: str) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_file`, so ``path`` is always whole; a
    failed write is a one-line ConfigError naming ``what`` and ``path``, and leaves no temporary file."""
    with atomic_file(path, what) as file:
        file.write(data)
    return path


def _open_directory(path: Path) -> int | None:
    """A descriptor of the directory ``path``, or None where ``os.open`` takes no ``dir_fd`` (Windows)."""
    if os.open not in os.supports_dir_fd:
        return None
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as error:
        raise ConfigError(f"could not open the directory {path}: {_reason(error)}") from None


def _name(directory: int | None, parent: Path, name: str) -> str:
    """``name`` relative to the open ``directory``, or the full path when there is none."""
    return name if directory is not None else str(parent / name)


def _create_temporary(directory: int | None, path: Path) -> tuple[str, int]:
    """A new, unique ``.NAME.XXXXXXXX.tmp`` beside ``path``: (its name, a write descriptor),
    locked until closed, so stale-file cleanup leaves a live writer's file alone. A file that a
    cleanup removed between its creation and the lock (no link left) is replaced by a new one."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        name = f".{path.name}.{''.join(secrets.choice(_TEMPORARY_LETTERS) for _ in range(8))}.tmp"
        try:
            descriptor = os.open(_name(directory, path.parent, name), flags, 0o666, dir_fd=directory)
        except FileExistsError:
            continue
        _lock_quietly(descriptor)
        if os.fstat(descriptor).st_nlink > 0:
            return name, descriptor
        os.close(descriptor)
    raise FileExistsError(errno.EEXIST, f"no unused temporary name beside {path}")


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (``fcntl.flock``; created if absent, never
    through a symbolic link) while the block runs, after waiting for any other holder, so
    processes that update the same files take turns. Where there are no locks (Windows, some
    network file systems) the block runs unlocked: the writes in it stay atomic."""
    with open_nofollow(path, "a") as file:
        _lock_quietly(file.fileno())
        yield  # closing the file releases the lock


def _lock_quietly(descriptor: int, blocking: bool = True) -> bool:
    """``flock`` the descriptor exclusively; False where it cannot be locked (held elsewhere, no fcntl)."""
    try:
        import fcntl  # optional: fcntl (POSIX only)
    except ImportError:  # Windows
        return not blocking
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError:
        return False
    return True


def describe_lock_holder(text: str) -> str:
    """``pid 4242 on node7`` from a lock file's ``4242 node7`` (``pid 4242``: a file of an older
    mammoth, without the host)."""
    pid, _, host = text.partition(" ")
    return f"pid {pid} on {host}" if host else f"pid {pid}"


def lock_takeover_line(directory: Path, holder: str, here: str | None = None) -> str:
    """What a run says when it takes the lock of ``directory`` whose file still names ``holder``
    (``PID HOST``): its last run ended without leaving the lock in order. On this host (``here``:
    this machine's name) the pid says whether that process is gone; on another, only that its
    lock was released (by its operating system, or by the file server once that machine was lost)."""
    here = socket.gethostname() if here is None else here
    pid, _, host = holder.partition(" ")
    if host and host != here:
        fate = (f"on {host}, another host: its lock was released (that process ended, or its machine was lost); "
                "its pid cannot be checked from here")
    elif pid.isdigit() and _process_exists(int(pid)):
        fate = f"on {here}: a process that no longer holds the lock (its pid was reused)"
    else:
        fate = f"on {here}: gone, it ended without leaving the lock"
    return f"taking over the lock of {directory}: its last holder was pid {pid} {fate}"


def _process_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (signal 0)."""
    try:
        os.kill(pid, 0)
    except PermissionError:  # another user's process
        return True
    except (ProcessLookupError, OverflowError, ValueError):  # none; a number no pid can be
        return False
    return True


#: The files a run writes through :func:`atomic_file` (results.json, the checkpoint, job.json,
#: the plot): the names whose temporary files the run lock cleans up.
RUN_FILES = ("results.json", "checkpoint.pt", "job.json", "accuracy.png")


def remove_stale_temporaries(directory: Path, before: float, names: tuple[str, ...] | list[str]) -> list[str]:
    """Remove the temporary files a crashed writer of one of ``names`` left in ``directory``
    (``.NAME.XXXXXXXX.tmp``, regular files last changed before ``before``, a ``time.time()``,
    and not locked by a live writer); return their names. Anything else, a file of the user's
    that looks alike included, and files that cannot be removed are left alone."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        try:
            if not (TEMPORARY_PATTERN.match(entry.name) and entry.name[1:-13] in names
                    and entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < before):
                continue
            descriptor = os.open(entry.path, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue
        try:
            if _lock_quietly(descriptor, blocking=False):
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError:
            pass
        finally:
            os.close(descriptor)
    return removed


class RunLock:
    """An exclusive lock on a run directory (``fcntl.flock`` on ``.mammoth.lock``), held from
    ``__enter__`` to ``__exit__``; the operating system releases it if the process dies.

    A second run in the same directory gets a one-line ConfigError instead of both writing. The
    file names its holder (``PID HOST``) while it holds the lock and is emptied when it leaves, so
    a run that finds the lock free but a holder named took over the lock of a run that died (killed,
    crashed, its machine lost): it logs one warning line saying so (:func:`lock_takeover_line`).
    Within one process the lock is re-entrant: ``python -m mammoth`` takes it before Hydra
    writes into the directory, and :func:`mammoth.run` takes it again inside. Where ``fcntl``
    does not exist (Windows) nothing is locked.
    """

    #: The lock files this process holds (a lock is the process's, as flock's is). Global state, on
    #: purpose: ``python -m mammoth`` locks the run directory before Hydra starts the job and
    #: ``mammoth.run`` locks it again inside the job, with nothing between them but Hydra's call
    #: of the task function; a second flock on a new descriptor would refuse this same process, so
    #: the lock must be known process-wide (it goes when the pre-flight hands the run its lock).
    _held: set[str] = set()

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._file = None
        self._key = os.path.abspath(self.path)
        self._nested = False

    def __enter__(self) -> "RunLock":
        if self._key in RunLock._held:
            self._nested = True
            return self
        file = open_nofollow(self.path, "a+")
        if not _lock_quietly(file.fileno(), blocking=False):  # held by another run (Windows: always free)
            file.seek(0)
            holder = file.read(LOCK_HOLDER_BYTES).strip()
            file.close()
            raise ConfigError(
                f"another mammoth run{f' ({describe_lock_holder(holder)})' if holder else ''} is using {self.path.parent}; "
                "wait for it to end, or give this run another hydra.run.dir or output_dir"
            )
        file.seek(0)
        previous = file.read(LOCK_HOLDER_BYTES).strip()
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()} {socket.gethostname()}")
        file.flush()
        self._file = file
        if previous:
            logging.getLogger("mammoth").warning("%s", lock_takeover_line(self.path.parent, previous))
        RunLock._held.add(self._key)
        remove_stale_temporaries(self.path.parent, before=time.time(), names=RUN_FILES)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):  # a full disk: the next run says it took over, no more
                self._file.truncate(0)  # left in order: no holder named
            self._file.close()  # closing the descriptor releases the flock
            self._file = None
            RunLock._held.discard(self._key)
