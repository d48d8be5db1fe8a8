"""Checkpoint files: a round trip restores everything, only what mammoth writes is loaded (a
crafted pickle runs nothing), and damaged or foreign files or a full disk give one line."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mammoth.errors import ConfigError
from mammoth.engine.loop import TrainingState
from mammoth.engine.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_MAGIC, read_checkpoint, load_checkpoint, save_checkpoint

CONFIG = {"seed": 3, "model": {"lr": 0.1}}


class TinyModel(nn.Module):
    """A model with parameters, a buffer and the kinds of extra state mammoth's methods keep."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(3, 2)
        self.register_buffer("steps", torch.zeros(1, dtype=torch.long))
        self.kept: dict = {}

    def extra_state(self) -> dict:
        return self.kept

    def load_extra_state(self, state: dict) -> None:
        self.kept = state


def _filled_model() -> TinyModel:
    model = TinyModel()
    with torch.no_grad():
        model.net.weight.copy_(torch.arange(6, dtype=torch.float32).view(2, 3))
    model.steps += 7
    buffer_generator = torch.Generator().manual_seed(11)
    model.kept = {
        "buffer": {"capacity": 4, "num_seen": 5, "generator": buffer_generator.get_state(),
                   "fields": {"examples": torch.ones(4, 3), "labels": torch.tensor([0, 1, 0, 1])}},
        "seen_data": {0: {"x": torch.zeros(2, 3, dtype=torch.uint8), "y": torch.tensor([1, 0])}},
        "names": ["a", "b"], "ratio": 0.5, "nothing": None,
    }
    return model


def _state() -> TrainingState:
    return TrainingState(2, {"class_il": [[90.0], [45.0, 80.0]]}, [1.0, 2.0], [0.1, 0.2])


class RunsCode:
    """Unpickling this calls os.system, which would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _with_header(payload: bytes, version: int = CHECKPOINT_FORMAT) -> bytes:
    digest = hashlib.sha256(payload).hexdigest()
    return CHECKPOINT_MAGIC + f"format {version} sha256 {digest} size {len(payload)}\n".encode() + payload


def test_round_trip_restores_weights_extra_state_generators_and_loop_state(tmp_path):
    path = tmp_path / "checkpoint.pt"
    model, generator = _filled_model(), torch.Generator().manual_seed(5)
    torch.randperm(10, generator=generator)  # advance it: the saved state is not the seed's
    save_checkpoint(path, model, generator, _state(), CONFIG)
    expected_next = torch.randperm(10, generator=generator).tolist()
    assert path.read_bytes().startswith(CHECKPOINT_MAGIC)

    restored, restored_generator = TinyModel(), torch.Generator()
    state = load_checkpoint(path, restored, restored_generator, CONFIG)
    assert state == _state()
    assert restored.net.weight.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert restored.steps.item() == 7
    assert torch.randperm(10, generator=restored_generator).tolist() == expected_next
    kept = restored.kept
    assert kept["buffer"]["num_seen"] == 5 and kept["buffer"]["fields"]["labels"].tolist() == [0, 1, 0, 1]
    assert torch.equal(kept["buffer"]["generator"], torch.Generator().manual_seed(11).get_state())
    assert kept["seen_data"][0]["y"].tolist() == [1, 0] and kept["names"] == ["a", "b"] and kept["nothing"] is None


def test_a_crafted_pickle_runs_nothing_and_is_refused_naming_the_file(tmp_path):
    marker = tmp_path / "marker"
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(RunsCode(marker)))
    with pytest.raises(ConfigError) as raw_error:
        read_checkpoint(raw)
    assert f"{raw} is not a mammoth checkpoint" in str(raw_error.value)

    # The same object behind a valid header and checksum: weights_only refuses it.
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "model": RunsCode(marker)}, buffer)
    crafted = tmp_path / "checkpoint.pt"
    crafted.write_bytes(_with_header(buffer.getvalue()))
    with pytest.raises(ConfigError) as crafted_error:
        read_checkpoint(crafted)
    message = str(crafted_error.value)
    assert message.startswith(f"checkpoint {crafted} holds objects mammoth does not write")
    assert "system" in message and "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[: len(data) - 100], "is truncated or padded"),
        (lambda data: data[:-500] + bytes([data[-500] ^ 0x01]) + data[-499:], "is corrupt (its sha256 checksum does not match)"),
        (lambda data: data[:40], "is truncated (it ends inside its header)"),
        (lambda data: data[:10], "is not a mammoth checkpoint"),
        (lambda data: data.replace(f"format {CHECKPOINT_FORMAT} ".encode(), b"format 9 ", 1),
         f"has format 9; this mammoth reads format {CHECKPOINT_FORMAT}"),
        (lambda data: CHECKPOINT_MAGIC + b"garbage\n" + data, "has a corrupt header"),
    ],
    ids=["truncated", "flipped-byte", "header-only", "cut-in-magic", "other-version", "bad-header"],
)
def test_damaged_checkpoints_give_one_line_naming_the_file(tmp_path, damage, message):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _filled_model(), torch.Generator(), _state(), CONFIG)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ConfigError) as error:
        load_checkpoint(path, TinyModel(), torch.Generator(), CONFIG)
    text = str(error.value)
    assert f"{path}" in text and message in text and "\n" not in text
    assert "without resume=true" in text  # what to do


def test_a_foreign_torch_file_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": 1, "model": TinyModel().state_dict()}, path)  # what mammoth 0.1 wrote
    with pytest.raises(ConfigError, match="is not a mammoth checkpoint"):
        read_checkpoint(path)
    buffer = io.BytesIO()
    torch.save({"weights": torch.ones(2)}, buffer)
    path.write_bytes(_with_header(buffer.getvalue()))
    with pytest.raises(ConfigError, match="lacks format, config, data, state"):
        read_checkpoint(path)
    buffer = io.BytesIO()
    torch.save({key: [] for key in ("format", "config", "data", "state", "model", "model_extra", "generator",
                                    "torch_rng", "cuda_rng")}, buffer)
    path.write_bytes(_with_header(buffer.getvalue()))
    with pytest.raises(ConfigError, match="has a malformed config, state, model, model_extra; start the run again"):
        read_checkpoint(path)


def test_a_failed_save_keeps_the_last_good_checkpoint_and_no_tmp_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _filled_model(), torch.Generator(), _state(), CONFIG)
    good = path.read_bytes()

    def disk_full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("mammoth.files.os.fsync", disk_full)
    later = TrainingState(3, {"class_il": [[1.0], [2.0, 3.0], [4.0, 5.0, 6.0]]}, [1.0] * 3, [0.1] * 3)
    with pytest.raises(ConfigError) as error:
        save_checkpoint(path, TinyModel(), torch.Generator(), later, CONFIG)
    assert str(error.value) == (
        f"could not write the checkpoint {path}: no space left on device (the disk is full); "
        "the previous checkpoint is kept"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert path.read_bytes() == good
    assert read_checkpoint(path)["state"]["next_task"] == 2


def test_extra_state_that_weights_only_cannot_read_is_refused_at_save(tmp_path):
    model = _filled_model()
    model.kept = {"buffer": {"examples": np.zeros(3)}}
    with pytest.raises(ConfigError, match=r"checkpoint\['model_extra'\]\['buffer'\]\['examples'\] is a numpy.ndarray"):
        save_checkpoint(tmp_path / "checkpoint.pt", model, torch.Generator(), _state(), CONFIG)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_resume_without_a_checkpoint_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match=f"no checkpoint at {tmp_path / 'checkpoint.pt'}"):
        read_checkpoint(tmp_path / "checkpoint.pt")


def test_a_results_file_that_cannot_be_written_is_one_line_and_leaves_no_tmp(tmp_path, monkeypatch):
    from mammoth.reporting.results import write_json_atomic

    path = tmp_path / "results.json"
    monkeypatch.setattr("mammoth.files.os.fsync", lambda descriptor: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(ConfigError) as error:
        write_json_atomic(path, {"status": "complete"})
    assert str(error.value) == (
        f"could not write the results file {path}: full (the disk is full); no results file was written"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_well_formed_checkpoint_that_does_not_fit_the_model_is_one_line(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _filled_model(), torch.Generator(), _state(), CONFIG)
    checkpoint = read_checkpoint(path)
    checkpoint["model"]["net.weight"] = torch.zeros(5, 5)  # another network's shape
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    path.write_bytes(_with_header(buffer.getvalue()))
    with pytest.raises(ConfigError) as error:
        load_checkpoint(path, TinyModel(), torch.Generator(), CONFIG)
    message = str(error.value)
    assert message.startswith(f"checkpoint {path} does not fit this run (RuntimeError: Error(s) in loading state_dict")
    assert "\n" not in message and message.endswith("start the run again without resume=true (or in another directory)")


# ---- contents checked against the checkpoint's own counts and the run's data (issue 12 §3) ----


def _digits():
    from mammoth.datasets.digits import SequentialDigits

    return SequentialDigits(seed=0)


def _digits_state(next_task: int = 2) -> TrainingState:
    rows = [[50.0 + row] * (row + 1) for row in range(next_task)]
    return TrainingState(next_task, {"class_il": rows, "task_il": [list(row) for row in rows]},
                         [1.0] * next_task, [0.1] * next_task)


def _rewrite(path: Path, change) -> None:
    """Apply ``change`` to the checkpoint's dict and write it back behind a valid header and checksum."""
    checkpoint = read_checkpoint(path)
    change(checkpoint)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    path.write_bytes(_with_header(buffer.getvalue()))


def test_a_checkpoint_of_the_same_data_resumes(tmp_path):
    dataset = _digits()
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _filled_model(), torch.Generator(), _digits_state(), CONFIG, data=dataset.fingerprint())
    assert read_checkpoint(path)["data"]["train labels"]["shape"] == [len(dataset.source()[1])]
    assert load_checkpoint(path, TinyModel(), torch.Generator(), CONFIG, dataset=_digits()) == _digits_state()


@pytest.mark.parametrize(("change", "message"), [
    (lambda data: data["train images"].update(sha256="0" * 64), "train images (different contents)"),
    (lambda data: data["test labels"].update(shape=[3]), "test labels (shape [3] then, [{n_test}] now)"),
])
def test_a_resume_on_other_data_names_the_dataset_and_what_changed(tmp_path, change, message):
    dataset = _digits()
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _filled_model(), torch.Generator(), _digits_state(), CONFIG, data=dataset.fingerprint())
    _rewrite(path, lambda checkpoint: change(checkpoint["data"]))
    with pytest.raises(ConfigError) as error:
        load_checkpoint(path, TinyModel(), torch.Generator(), CONFIG, dataset=dataset)
    expected = message.format(n_test=len(dataset.source()[3]))
    assert str(error.value) == (
        f"resume=true on different data: the seq-digits data under data changed since the checkpoint {path} was "
        f"written: {expected}; resume with the data the run started on, or start the run again without "
        "resume=true (or in another directory)"
    )


def _set_state(key, value):
    return lambda checkpoint: checkpoint["state"].__setitem__(key, value)


@pytest.mark.parametrize(("change", "message"), [
    (_set_state("accuracies", {"class_il": [[50.0]], "task_il": [[50.0], [1.0, 2.0]]}),
     "class_il has 1 accuracy rows for 2 finished task(s)"),
    (_set_state("accuracies", {"class_il": [[50.0], [1.0]], "task_il": [[50.0], [1.0, 2.0]]}),
     "class_il row 2 is [1.0]; expected 2 percentage(s) in 0..100"),
    (_set_state("accuracies", {"class_il": [[50.0], [1.0, 1e9]], "task_il": [[50.0], [1.0, 2.0]]}),
     "class_il row 2 is [1.0, 1000000000.0]; expected 2 percentage(s) in 0..100"),
    (_set_state("accuracies", {"class_il": [[50.0], [1.0, 2.0]]}),
     "its accuracies are of class_il; expected class_il, task_il"),
    (_set_state("next_task", 9), "next_task=9; allowed: 0..5"),
    (_set_state("next_task", 10**15), "next_task=1000000000000000; allowed: 0..5"),
    (_set_state("train_seconds", [1.0]), "train_seconds is [1.0]; expected 2 time(s) >= 0"),
    (_set_state("eval_seconds", [0.1, float("nan")]), "eval_seconds is [0.1, nan]; expected 2 time(s) >= 0"),
    (lambda checkpoint: checkpoint["model_extra"]["buffer"].__setitem__("num_seen", 10**15),
     "model_extra['buffer']['num_seen']=1000000000000000; allowed: 0..{bound}, the most examples this run can have seen"),
    (lambda checkpoint: checkpoint["model_extra"]["buffer"].__setitem__("num_seen", -1),
     "model_extra['buffer']['num_seen']=-1; allowed: 0..{bound}, the most examples this run can have seen"),
    (lambda checkpoint: checkpoint["model_extra"]["buffer"]["fields"].__setitem__("labels", torch.tensor([0, 1, 7, 1])),
     "model_extra['buffer']['fields']['labels'] holds torch.int64 values 0..7; allowed: integers 0..3, the classes "
     "seen so far"),  # seq-digits after 2 tasks: classes 0..3
    (lambda checkpoint: checkpoint["model_extra"]["buffer"]["fields"].__setitem__("task_labels", torch.tensor([0, 0, 1, 2])),
     "model_extra['buffer']['fields']['task_labels'] holds torch.int64 values 0..2; allowed: integers 0..1, the tasks "
     "seen so far"),
], ids=["rows-short", "row-short", "row-not-a-percentage", "kind-missing", "next-task-past-the-end",
        "next-task-huge", "times-short", "time-nan", "num-seen-huge", "num-seen-negative", "label-of-a-future-class",
        "task-label-of-a-future-task"])
def test_inconsistent_contents_behind_a_valid_checksum_are_refused_in_one_line(tmp_path, change, message):
    dataset = _digits()
    path = tmp_path / "checkpoint.pt"
    model = _filled_model()
    save_checkpoint(path, model, torch.Generator(), _digits_state(), CONFIG, data=dataset.fingerprint())
    _rewrite(path, change)
    restored = TinyModel()
    with pytest.raises(ConfigError) as error:
        load_checkpoint(path, restored, torch.Generator(), CONFIG, dataset=dataset)
    # 2 tasks x (every epoch + once at the end) x every training image, twice (a memory rebuilt).
    bound = 2 * 2 * (dataset.config.n_epochs + 1) * len(dataset.source()[1])
    assert str(error.value) == (
        f"checkpoint {path} is inconsistent: {message.format(bound=bound)}; "
        "start the run again without resume=true (or in another directory)"
    )
    assert restored.kept == {} and restored.steps.item() == 0  # nothing was restored


def test_a_symlinked_checkpoint_is_refused_and_its_target_left_alone(tmp_path):
    target = tmp_path / "elsewhere.pt"
    save_checkpoint(target, _filled_model(), torch.Generator(), _state(), CONFIG)
    before = target.read_bytes()
    link = tmp_path / "checkpoint.pt"
    link.symlink_to(target)
    with pytest.raises(ConfigError) as error:
        load_checkpoint(link, TinyModel(), torch.Generator(), CONFIG)
    assert str(error.value) == (
        f"{link} is a symbolic link (to {target}); mammoth does not follow links in a run directory; "
        "allowed: a regular file or no file at that path (remove the link)"
    )
    assert target.read_bytes() == before


def test_a_huge_file_is_refused_from_its_header_before_its_payload_is_read(tmp_path):
    import tracemalloc

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _filled_model(), torch.Generator(), _state(), CONFIG)
    data = path.read_bytes()
    prefix = len(CHECKPOINT_MAGIC) + data[len(CHECKPOINT_MAGIC):].index(b"\n") + 1
    declared = len(data) - prefix
    with open(path, "r+b") as file:
        file.truncate(6 * 10**9)  # a sparse 6 GB file behind a valid header: nothing on disk
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as error:
            read_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(error.value) == (
        f"checkpoint {path} is truncated or padded ({6 * 10**9 - prefix} bytes of data, its header says {declared}); "
        "start the run again without resume=true (or in another directory)"
    )
    assert peak < 10**6  # the header only: not the 6 GB


def test_a_checkpoint_that_is_not_a_regular_file_is_refused_unread(tmp_path):
    path = tmp_path / "checkpoint.pt"
    os.mkfifo(path)  # reading a FIFO would wait for a writer forever
    with pytest.raises(ConfigError, match=rf"^{path} is not a regular file; allowed: a regular file or no file at that path$"):
        read_checkpoint(path)

