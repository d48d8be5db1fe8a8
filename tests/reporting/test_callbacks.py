"""record_interruption: after Ctrl-C or SIGTERM the job's own job.json says ``stopped early``
(Hydra calls no on_job_end for a KeyboardInterrupt); nothing else is written or followed.
record_rank_failure: a surviving rank marks the job.json of a failed rank 0 ``failed``."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

from mammoth.app.callbacks import record_interruption, record_rank_failure
from mammoth.errors import TrainingError


def _write_status(directory, **fields) -> dict:
    document = {"status": "running", "overrides": ["model=er"], "started": "2026-01-01T00:00:00+00:00",
                "updated": "2026-01-01T00:00:00+00:00", "host": "here", "pid": os.getpid(), **fields}
    (directory / "job.json").write_text(json.dumps(document))
    return document


def test_a_running_job_of_this_process_is_marked_stopped_early(tmp_path):
    before = _write_status(tmp_path)
    record_interruption(tmp_path, "SIGTERM")
    after = json.loads((tmp_path / "job.json").read_text())
    assert after["status"] == "stopped early" and after["interrupted"] == "SIGTERM"
    assert {key: after[key] for key in ("overrides", "started", "host", "pid")} == {
        key: before[key] for key in ("overrides", "started", "host", "pid")}
    started = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    updated = datetime.fromisoformat(after["updated"]).timestamp()
    assert abs(after["wall_seconds"] - (updated - started)) < 2  # "updated" is rounded to the second
    assert sorted(path.name for path in tmp_path.iterdir()) == ["job.json"]  # no temporary file left


def test_another_process_job_or_a_finished_one_is_left_alone(tmp_path):
    for fields in ({"pid": os.getpid() + 1}, {"status": "complete"}):
        _write_status(tmp_path, **fields)
        before = (tmp_path / "job.json").read_bytes()
        record_interruption(tmp_path, "SIGINT")
        assert (tmp_path / "job.json").read_bytes() == before


def test_without_a_job_json_nothing_is_written(tmp_path):
    record_interruption(tmp_path, "SIGINT")  # the callback is off: no status file to update
    assert list(tmp_path.iterdir()) == []


def test_a_symlinked_job_json_is_not_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _write_status(elsewhere)
    before = (elsewhere / "job.json").read_bytes()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "job.json").symlink_to(elsewhere / "job.json")
    record_interruption(run_dir, "SIGTERM")
    assert (elsewhere / "job.json").read_bytes() == before and (run_dir / "job.json").is_symlink()


def test_a_survivor_marks_the_running_job_of_the_failed_rank_0_failed_with_its_line(tmp_path):
    line = "task 2/5 interrupted: rank 0 of 2 (pid 4242 on here) died; nothing to resume: start the run again"
    for fields in ({"pid": 4243}, {"host": "elsewhere"}, {"status": "complete"}):  # another process's, or finished
        _write_status(tmp_path, **{"pid": 4242, **fields})
        before = (tmp_path / "job.json").read_bytes()
        record_rank_failure(tmp_path, TrainingError(line), 4242, "here")
        assert (tmp_path / "job.json").read_bytes() == before
    before = _write_status(tmp_path, pid=4242)
    record_rank_failure(tmp_path, TrainingError(line), 4242, "here")
    after = json.loads((tmp_path / "job.json").read_text())
    assert after["status"] == "failed" and after["error"] == f"TrainingError: {line}"
    assert after["pid"] == 4242 and after["overrides"] == before["overrides"] and after["wall_seconds"] > 0
