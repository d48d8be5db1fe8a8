"""The run directory's files are its own: output paths stay inside it, files are never opened
through a planted symlink, and temporary files a crash left are removed by the next run."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from mammoth.errors import ConfigError
from mammoth.files import (
    LOCK_NAME, RunLock, atomic_file, exclusive_lock, open_nofollow, path_inside, remove_stale_temporaries, write_atomic,
)

ALLOWED = "allowed: a relative path inside the run directory, without '..' and without symlinks leading out"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the run directory that a planted symlink points to."""
    path = tmp_path / "outside" / "precious.txt"
    path.parent.mkdir()
    path.write_bytes(b"do not touch\n")
    return path


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path


def test_a_relative_path_resolves_inside_the_run_directory(run_dir: Path):
    assert path_inside(run_dir, "metrics.csv", "logger.csv.filename") == run_dir / "metrics.csv"
    assert path_inside(run_dir, "logs/tb", "logger.tensorboard.log_dir") == run_dir / "logs" / "tb"
    (run_dir / "real").mkdir()
    (run_dir / "alias").symlink_to(run_dir / "real")  # a link that stays inside is fine
    assert path_inside(run_dir, Path("alias/x.csv"), "logger.csv.filename") == run_dir / "alias" / "x.csv"


@pytest.mark.parametrize(("value", "problem"), [
    ("/tmp/metrics.csv", "is an absolute path"),
    ("../../metrics.csv", "goes up with '..'"),
    ("logs/../../metrics.csv", "goes up with '..'"),
])
def test_absolute_and_upward_paths_are_refused_naming_the_key(run_dir: Path, value: str, problem: str):
    with pytest.raises(ConfigError) as error:
        path_inside(run_dir, value, "logger.csv.filename")
    assert str(error.value) == f"logger.csv.filename={value} {problem}; {ALLOWED}"


def test_a_symlink_leading_out_is_refused(run_dir: Path, outside: Path):
    (run_dir / "tb").symlink_to(outside.parent)
    with pytest.raises(ConfigError) as error:
        path_inside(run_dir, "tb/events", "logger.tensorboard.log_dir")
    assert str(error.value) == (
        f"logger.tensorboard.log_dir=tb/events leads out of the run directory {run_dir} through a symlink "
        f"(to {outside.parent.resolve() / 'events'}); {ALLOWED}"
    )


def test_an_empty_path_is_refused(run_dir: Path):
    with pytest.raises(ConfigError, match=rf"^logger.csv.filename='' is not a path; {ALLOWED}$"):
        path_inside(run_dir, "", "logger.csv.filename")


@pytest.mark.parametrize("mode", ["w", "a", "a+", "r"])
def test_a_planted_symlink_is_refused_naming_it_and_its_target_untouched(run_dir: Path, outside: Path, mode: str):
    link = run_dir / "metrics.csv"
    link.symlink_to(outside)
    with pytest.raises(ConfigError) as error:
        open_nofollow(link, mode)
    assert str(error.value) == (
        f"{link} is a symbolic link (to {outside}); mammoth does not follow links in a run directory; "
        "allowed: a regular file or no file at that path (remove the link)"
    )
    assert outside.read_bytes() == b"do not touch\n"


def test_open_nofollow_writes_appends_and_refuses_a_fifo(run_dir: Path):
    with open_nofollow(run_dir / "a.txt", "w") as file:
        file.write("one\n")
    with open_nofollow(run_dir / "a.txt", "a") as file:
        file.write("two\n")
    assert (run_dir / "a.txt").read_text() == "one\ntwo\n"
    os.mkfifo(run_dir / "pipe")
    with pytest.raises(ConfigError, match=rf"^{run_dir / 'pipe'} is not a regular file; allowed: "):
        open_nofollow(run_dir / "pipe", "w")  # refused at once, not blocked waiting for a reader


def test_the_lock_refuses_a_planted_symlink_and_does_not_truncate_its_target(run_dir: Path, outside: Path):
    (run_dir / LOCK_NAME).symlink_to(outside)
    with pytest.raises(ConfigError, match=rf"^{run_dir / LOCK_NAME} is a symbolic link \(to {outside}\)"):
        with RunLock(run_dir):
            pass
    assert outside.read_bytes() == b"do not touch\n"


def test_write_atomic_replaces_a_planted_symlink_not_its_target(run_dir: Path, outside: Path):
    (run_dir / "results.json").symlink_to(outside)
    write_atomic(run_dir / "results.json", b"{}\n", "results file")
    assert not (run_dir / "results.json").is_symlink() and (run_dir / "results.json").read_bytes() == b"{}\n"
    assert outside.read_bytes() == b"do not touch\n"
    assert sorted(path.name for path in run_dir.iterdir()) == ["results.json"]


def test_an_interrupted_atomic_write_keeps_the_previous_file_and_no_temporary(run_dir: Path):
    write_atomic(run_dir / "job.json", b"old", "job status")
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(run_dir / "job.json", "job status") as file:
            file.write(b"half")
            raise KeyboardInterrupt
    assert (run_dir / "job.json").read_bytes() == b"old"
    assert sorted(path.name for path in run_dir.iterdir()) == ["job.json"]


def stale(path: Path, age: float = 3600) -> Path:
    """Write ``path`` and date it ``age`` seconds back."""
    path.write_bytes(b"half a checkpoint")
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_taking_the_lock_removes_the_temporary_files_a_crash_left(run_dir: Path, outside: Path):
    stale(run_dir / ".checkpoint.pt.ab12cd_9.tmp")
    stale(run_dir / ".results.json.zzzzzzzz.tmp")
    stale(run_dir / "notes.tmp")  # not a name write_atomic uses: the user's
    stale(run_dir / ".notes.txt.abcdefgh.tmp")  # the pattern, but not a file a run writes: the user's too
    stale(run_dir / ".checkpoint.pt.tmp")  # no random part: not ours either
    (run_dir / ".metrics.csv.abcdefgh.tmp").symlink_to(outside)  # a link: left alone, its target too
    with RunLock(run_dir):
        remaining = sorted(path.name for path in run_dir.iterdir())
    assert remaining == [".checkpoint.pt.tmp", LOCK_NAME, ".metrics.csv.abcdefgh.tmp", ".notes.txt.abcdefgh.tmp", "notes.tmp"]
    assert outside.read_bytes() == b"do not touch\n"


def test_a_live_writers_temporary_file_and_a_new_one_are_kept(run_dir: Path):
    old = stale(run_dir / ".summary.csv.aaaaaaaa.tmp")
    new = run_dir / ".summary.md.bbbbbbbb.tmp"
    new.write_bytes(b"being written")
    with atomic_file(run_dir / "summary.png", "summary") as file:  # a live writer holds its file locked
        (writing,) = [path for path in run_dir.iterdir() if path.name.startswith(".summary.png.")]
        os.utime(writing, (time.time() - 3600, time.time() - 3600))
        removed = remove_stale_temporaries(run_dir, before=time.time() - 60, names=["summary.csv", "summary.md", "summary.png"])
        file.write(b"png")
    assert removed == [old.name]
    assert sorted(path.name for path in run_dir.iterdir()) == [new.name, "summary.png"]


def test_a_directory_swapped_for_a_symlink_mid_write_is_not_followed(tmp_path: Path, outside: Path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with atomic_file(run_dir / "results.json", "results file") as file:
        file.write(b"{}\n")
        run_dir.rename(tmp_path / "moved")
        run_dir.symlink_to(outside.parent)  # the path now leads elsewhere; the open directory does not
    assert (tmp_path / "moved" / "results.json").read_bytes() == b"{}\n"
    assert sorted(path.name for path in outside.parent.iterdir()) == ["precious.txt"]


def test_a_run_replaces_a_planted_plot_link_and_removes_a_crashs_temporary_file(run_dir: Path, outside: Path):
    import json

    import mammoth
    from composing import compose_run

    (run_dir / "accuracy.png").symlink_to(outside)
    crashed = stale(run_dir / ".checkpoint.pt.zz99yy88.tmp")
    mammoth.run(compose_run(run_dir, "dataset.n_epochs=1", "threads=1"))
    assert json.loads((run_dir / "results.json").read_text())["status"] == "complete"
    assert not (run_dir / "accuracy.png").is_symlink() and (run_dir / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert outside.read_bytes() == b"do not touch\n"
    assert not crashed.exists() and not list(run_dir.glob(".*.tmp"))


def can_lock(path: Path) -> bool:
    """Whether a new open file of ``path`` gets an exclusive flock at once (flock locks are held by
    open files, so this conflicts with a lock taken through another open file, in any process)."""
    import fcntl

    with open(path, "a") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def test_the_exclusive_lock_is_held_for_the_block_and_released_after(run_dir: Path):
    path = run_dir / ".summary.lock"
    with exclusive_lock(path):
        assert path.is_file() and not can_lock(path)
    assert can_lock(path)
    with pytest.raises(RuntimeError), exclusive_lock(path):
        raise RuntimeError("a failed update")
    assert can_lock(path)


def test_the_exclusive_lock_refuses_a_planted_symlink(run_dir: Path, outside: Path):
    (run_dir / ".summary.lock").symlink_to(outside)
    with pytest.raises(ConfigError, match=rf"^{run_dir / '.summary.lock'} is a symbolic link \(to {outside}\)"):
        with exclusive_lock(run_dir / ".summary.lock"):
            pass
    assert outside.read_bytes() == b"do not touch\n"


def test_the_run_lock_refuses_a_second_holder_naming_its_pid_and_is_free_after(run_dir: Path):
    with open(run_dir / LOCK_NAME, "w") as other:  # another process's lock: another open file
        import fcntl

        other.write("4242")
        other.flush()
        fcntl.flock(other, fcntl.LOCK_EX)
        with pytest.raises(ConfigError, match=rf"^another mammoth run \(pid 4242\) is using {run_dir}; wait for it"):
            RunLock(run_dir).__enter__()
    with RunLock(run_dir) as lock:
        assert not can_lock(lock.path) and (run_dir / LOCK_NAME).read_text() == f"{os.getpid()} {socket.gethostname()}"
    assert can_lock(run_dir / LOCK_NAME) and (run_dir / LOCK_NAME).read_text() == ""  # left in order: no holder named


def test_a_lock_whose_holder_died_is_taken_over_with_a_line_saying_so(run_dir: Path, caplog) -> None:
    """The file still names a holder but nobody holds the lock: a run killed while holding it (the
    operating system released the flock, the name stays)."""
    import subprocess
    import sys

    holder = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(holder.stdout)  # a pid that was this host's and is gone
    here = socket.gethostname()
    for named, fate in [
        (f"{dead} {here}", f"pid {dead} on {here}: gone, it ended without leaving the lock"),
        ("4242 node7", "pid 4242 on node7, another host: its lock was released (that process ended, or its machine "
                       "was lost); its pid cannot be checked from here"),
        (f"{os.getpid()} {here}", f"pid {os.getpid()} on {here}: a process that no longer holds the lock (its pid was reused)"),
    ]:
        (run_dir / LOCK_NAME).write_text(named)
        caplog.clear()
        with RunLock(run_dir):
            assert (run_dir / LOCK_NAME).read_text() == f"{os.getpid()} {here}"
        assert [record.getMessage() for record in caplog.records if record.levelname == "WARNING"] == [
            f"taking over the lock of {run_dir}: its last holder was {fate}"]
    caplog.clear()
    with RunLock(run_dir):  # the last run left in order: nothing to say
        pass
    assert not caplog.records
