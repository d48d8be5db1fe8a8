"""The run directory: checks that it can be written, atomic file writes, and the lock that keeps
two runs out of the same directory."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from types import TracebackType

from mammoth.errors import ConfigError

LOCK_NAME = ".mammoth.lock"


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
        probe = path / f".mammoth-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ConfigError(
            f"{key}={path} cannot be written: {_reason(error)}; allowed: a directory mammoth can write to"
        ) from None
    return path


def write_atomic(path: Path, data: bytes, what: str) -> Path:
    """Write ``data`` to ``path`` through a temporary file, so ``path`` is always whole.

    The temporary file has a unique name beside ``path``, so processes writing the same file at
    once (a sweep's jobs updating its summary) never share one. On failure (disk full, read-only
    disk) the temporary file is removed, ``path`` keeps its previous content, and a one-line
    ConfigError names ``what`` (e.g. ``checkpoint``) and ``path``.
    """
    temporary = None
    try:
        descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        temporary = Path(name)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        kept = f"the previous {what} is kept" if path.exists() else f"no {what} was written"
        raise ConfigError(f"could not write the {what} {path}: {_reason(error)}; {kept}") from None
    except BaseException:  # Ctrl-C or SIGTERM mid-write: the previous file stays, no .tmp is left
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise
    return path


class RunLock:
    """An exclusive lock on a run directory (``fcntl.flock`` on ``.mammoth.lock``), held from
    ``__enter__`` to ``__exit__``; the operating system releases it if the process dies.

    A second run in the same directory gets a one-line ConfigError instead of both writing.
    Where ``fcntl`` does not exist (Windows) nothing is locked.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._file = None

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; runs are not kept apart
            return self
        file = open(self.path, "a+")
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.seek(0)
            holder = file.read().strip()
            file.close()
            raise ConfigError(
                f"another mammoth run{f' (pid {holder})' if holder else ''} is using {self.path.parent}; "
                "wait for it to end, or give this run another hydra.run.dir or output_dir"
            ) from None
        file.seek(0)
        file.truncate()
        file.write(str(os.getpid()))
        file.flush()
        self._file = file
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the flock
            self._file = None
