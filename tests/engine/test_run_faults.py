"""A run never reports a wrong success: bad values are refused before training, a diverging run
stops without results, a refused resume keeps the results it would have replaced, two runs never
share a directory, and every fault is one line naming the bad value."""

from __future__ import annotations

import json
import types
import math
import os
import re
import socket
from pathlib import Path

import pytest
import torch

import mammoth
from mammoth.errors import ConfigError, DatasetError, TrainingError
from mammoth.engine.checkpoint import read_checkpoint
import composing
from registries import restored


def compose_run(output_dir: Path, *overrides: str):
    return composing.compose_run(output_dir, "dataset.n_epochs=1", *overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("model.lr=inf",), "model.lr=inf is not a finite number; allowed: 0 < lr < inf"),
        (("model.lr=nan",), "model.lr=nan is not a finite number"),
        (("model.weight_decay=inf",), "model.weight_decay=inf is not a finite number; allowed: 0 <= weight_decay < inf"),
        (("model.momentum=nan",), "model.momentum=nan is not a finite number"),
        # finite for Python, an overflow for the float32 argument torch's optimizer turns it into
        (("model.lr=1e300",), "model.lr=1e+300 does not fit float32 (torch's default dtype, largest 3.402823e+38); "
                              "allowed: 0 < lr <= 3.402823e+38"),
        (("model.weight_decay=-1e39",), "model.weight_decay=-1e+39 does not fit float32"),
        (("model=der", "model.buffer_size=10", "model.alpha=inf"), "model.alpha=inf is not a finite number"),
        (("seed=-1",), "seed=-1 is outside 64 bits; allowed: an integer from 0 to 18446744073709551615"),
        ((f"seed={2**64}",), f"seed={2**64} is outside 64 bits"),
        ((f"threads={(os.cpu_count() or 1) + 1}",), f"is more than the {os.cpu_count()} CPU(s) of this machine"),
        (("stop_after_task=0",), "stop_after_task=0 is not a positive integer; allowed: stop_after_task >= 1"),
    ],
)
def test_bad_values_are_refused_before_training(tmp_path, overrides, message):
    with pytest.raises(mammoth.MammothError) as error:
        mammoth.run(compose_run(tmp_path, *overrides))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "checkpoint.pt").exists()


def test_a_diverging_run_stops_at_the_first_non_finite_loss_without_results(tmp_path):
    with pytest.raises(TrainingError) as error:
        mammoth.run(compose_run(tmp_path, "model.lr=1e10"))
    message = str(error.value)
    # seq-digits task 1 has 288 training images: 9 steps of 32 per epoch.
    assert re.match(r"the loss became (nan|inf|-inf) in task 1/5, epoch 1/1, step ", message) and "\n" not in message
    step = int(message.split("step ")[1].split("/")[0])
    assert 1 <= step <= 9 and "/9;" in message
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "checkpoint.pt").exists()


def test_weights_that_become_non_finite_stop_the_run(tmp_path, monkeypatch):
    from mammoth.models.base import ContinualModel

    end_task = ContinualModel.end_task

    def poison_task_two(self, task, data):
        end_task(self, task, data)
        if task == 1:
            with torch.no_grad():
                next(self.net.parameters()).view(-1)[0] = float("inf")

    monkeypatch.setattr(ContinualModel, "end_task", poison_task_two)
    with pytest.raises(TrainingError, match=r"^the weights became non-finite \(nan or inf\) in task 2/5"):
        mammoth.run(compose_run(tmp_path))
    assert read_checkpoint(tmp_path / "checkpoint.pt")["state"]["next_task"] == 1  # task 1's stays
    assert not (tmp_path / "results.json").exists()


def test_a_refused_resume_keeps_the_complete_results(tmp_path):
    mammoth.run(compose_run(tmp_path))
    complete = (tmp_path / "results.json").read_bytes()
    assert json.loads(complete)["status"] == "complete"
    with pytest.raises(ConfigError, match="differs from the checkpoint's in: model"):
        mammoth.run(compose_run(tmp_path, "resume=true", "model.lr=0.5"))
    assert (tmp_path / "results.json").read_bytes() == complete
    checkpoint = tmp_path / "checkpoint.pt"
    data = bytearray(checkpoint.read_bytes())
    data[-10] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="is corrupt"):
        mammoth.run(compose_run(tmp_path, "resume=true"))
    assert (tmp_path / "results.json").read_bytes() == complete


def test_output_dirs_that_cannot_be_used_give_one_line(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    with pytest.raises(ConfigError) as error:
        mammoth.run(compose_run(a_file))
    assert str(error.value) == f"output_dir={a_file} is a file, not a directory; allowed: a directory mammoth can write to"
    with pytest.raises(ConfigError, match=rf"^output_dir={a_file / 'run'} cannot be written: not a directory;"):
        mammoth.run(compose_run(a_file / "run"))
    # sysfs refuses new files even to root, unlike a chmod-ed directory.
    with pytest.raises(ConfigError, match=r"^output_dir=/sys/kernel cannot be written: (permission denied|operation not permitted);"):
        mammoth.run(compose_run(Path("/sys/kernel")))


def test_stop_after_task_counts_tasks_of_the_whole_run(tmp_path):
    assert math.isnan(mammoth.run(compose_run(tmp_path, "stop_after_task=2")))
    saved = read_checkpoint(tmp_path / "checkpoint.pt")
    assert saved["state"]["next_task"] == 2
    # Resuming with the same stop trains nothing more: the checkpoint is the one written before.
    assert math.isnan(mammoth.run(compose_run(tmp_path, "stop_after_task=2", "resume=true")))
    again = read_checkpoint(tmp_path / "checkpoint.pt")
    assert again["state"] == saved["state"]
    mammoth.run(compose_run(tmp_path, "stop_after_task=3", "resume=true"))
    assert read_checkpoint(tmp_path / "checkpoint.pt")["state"]["next_task"] == 3


def test_results_record_the_values_the_data_filled_in(tmp_path):
    mammoth.run(compose_run(tmp_path))
    config = json.loads((tmp_path / "results.json").read_text())["config"]
    backbone = config["backbone"]
    assert backbone["num_classes"] == 10 and backbone["input_shape"] == [1, 8, 8]  # seq-digits: 10 digits, 8x8
    assert config["model"]["lr_milestones"] == []  # null: seq-digits' default, no schedule


def test_results_record_the_dataset_default_schedule():
    from mammoth.app.runner import record_filled_values

    class Method:
        lr_milestones = (35, 45)  # what a method built for seq-cifar100 with lr_milestones=null holds

    config = {"model": {"lr_milestones": None}, "backbone": {"num_classes": 5}}
    data = types.SimpleNamespace(n_classes=100, input_shape=(3, 32, 32))
    filled = record_filled_values(config, dataset=data, model=Method())
    assert filled == {"model": {"lr_milestones": [35, 45]}, "backbone": {"num_classes": 5}}


def test_results_record_the_stem_a_resnet_built_not_auto():
    from mammoth.backbones.registry import build_backbone
    from mammoth.app.runner import record_filled_values

    data = types.SimpleNamespace(n_classes=4, input_shape=(3, 224, 224))
    for asked, built in (("auto", "imagenet"), ("cifar", "cifar")):
        net = build_backbone("resnet18", num_classes=4, input_shape=data.input_shape, width=4, stem=asked)
        config = {"backbone": {"num_classes": "???", "input_shape": "???", "width": 4, "stem": asked}}
        filled = record_filled_values(config, dataset=data, model=types.SimpleNamespace(net=net))
        assert filled == {"backbone": {"num_classes": 4, "input_shape": [3, 224, 224], "width": 4, "stem": built}}
    mlp = build_backbone("mnistmlp", num_classes=4, input_shape=(1, 8, 8))  # no resolved arguments: nothing added
    assert record_filled_values({"backbone": {"hidden_sizes": [100]}}, data, types.SimpleNamespace(net=mlp)) == {
        "backbone": {"hidden_sizes": [100]}}


def test_a_dataset_with_fewer_classes_than_its_tasks_is_refused(tmp_path):
    from mammoth.datasets import DATASETS, register_dataset
    from mammoth.datasets.digits import SequentialDigits, load_digits_split

    with restored(DATASETS):
        @register_dataset
        class FourDigits(SequentialDigits):
            name = "four-digits"

            def load_source(self):
                x, y, test_x, test_y = load_digits_split()
                return x[y < 4], y[y < 4], test_x[test_y < 4], test_y[test_y < 4]

        cfg = compose_run(tmp_path, "dataset=four-digits")
        with pytest.raises(DatasetError) as error:
            mammoth.run(cfg)
        assert str(error.value) == (
            "four-digits has no train examples for task 3 of 5: its train data has 4 class(es), "
            "and 5 tasks x 2 classes need 10"
        )
        with pytest.raises(DatasetError, match=r"has n_classes_per_task=0; allowed: an integer >= 1"):
            register_dataset(type("NoClasses", (SequentialDigits,), {"name": "no-classes", "n_classes_per_task": 0}))
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize(("task", "line"), [
    (0, "Interrupted (SIGINT) before the first task finished: nothing to resume; start the run again"),
    (2, "Interrupted (SIGINT); the checkpoint of the last finished task is intact. Resume with: python -m mammoth "
        "resume=true hydra.run.dir={run_dir}"),
])
def test_ctrl_c_logs_one_line_saying_how_to_resume(tmp_path, monkeypatch, caplog, task, line):
    from mammoth.models.base import ContinualModel

    begin_task = ContinualModel.begin_task

    def ctrl_c(self, index):
        if index == task:
            raise KeyboardInterrupt
        begin_task(self, index)

    monkeypatch.setattr(ContinualModel, "begin_task", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        mammoth.run(compose_run(tmp_path))
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert errors == [line.format(run_dir=tmp_path)]
    assert not (tmp_path / "results.json").exists() and not list(tmp_path.glob("*.tmp"))
    if task:
        assert read_checkpoint(tmp_path / "checkpoint.pt")["state"]["next_task"] == task


def test_a_run_in_another_process_holds_the_directory_until_it_ends(tmp_path):
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from mammoth.files import RunLock\n"
         f"with RunLock(Path({str(tmp_path)!r})):\n    print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError) as error:
            mammoth.run(compose_run(tmp_path, "stop_after_task=1"))
        assert str(error.value) == (
            f"another mammoth run (pid {holder.pid} on {socket.gethostname()}) is using {tmp_path}; "
            "wait for it to end, or give this run another hydra.run.dir or output_dir"
        )
        assert not (tmp_path / "results.json").exists() and not (tmp_path / "checkpoint.pt").exists()
    finally:
        holder.communicate("", timeout=60)  # end of its input: it leaves the lock and exits
    mammoth.run(compose_run(tmp_path, "stop_after_task=1"))  # the operating system released the lock
    assert read_checkpoint(tmp_path / "checkpoint.pt")["state"]["next_task"] == 1


def test_finite_weights_with_non_finite_outputs_stop_the_run_without_results(tmp_path):
    # joint trains once, at the last task: one step of lr=1e30 leaves huge but finite weights whose
    # logits overflow; this run used to be reported complete at chance accuracy (10%).
    with pytest.raises(TrainingError) as error:
        mammoth.run(compose_run(tmp_path, "model=joint", "model.lr=1e30", "dataset.batch_size=100000"))
    assert str(error.value) == (
        "the model's outputs became non-finite (nan or inf) on the test data of task 1, evaluated after task 5/5; "
        "the run stopped without results (lower model.lr, or check the data)"
    )
    assert read_checkpoint(tmp_path / "checkpoint.pt")["state"]["next_task"] == 4  # task 4's stays
    assert not (tmp_path / "results.json").exists()


def test_a_resume_after_the_files_under_the_dataset_root_changed_is_refused(tmp_path):
    import fake_datasets

    raw = fake_datasets.write_mnist(tmp_path / "data", n_train=40, n_test=20)
    run_dir, overrides = tmp_path / "run", ("dataset=seq-mnist", f"dataset.root={tmp_path / 'data'}")
    mammoth.run(compose_run(run_dir, *overrides, "stop_after_task=1"))
    images = raw / "train-images-idx3-ubyte"
    data = bytearray(images.read_bytes())
    data[-1] ^= 0xFF  # one pixel of the last training image: the file keeps its size and its header
    images.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as error:
        mammoth.run(compose_run(run_dir, *overrides, "resume=true"))
    assert str(error.value) == (
        f"resume=true on different data: the seq-mnist data under {tmp_path / 'data'} changed since the checkpoint "
        f"{run_dir / 'checkpoint.pt'} was written: train images (different contents); resume with the data the run "
        "started on, or start the run again without resume=true (or in another directory)"
    )
    assert not (run_dir / "results.json").exists()
    data[-1] ^= 0xFF  # the files as they were: the resume goes on to the end
    images.write_bytes(bytes(data))
    mammoth.run(compose_run(run_dir, *overrides, "resume=true"))
    assert json.loads((run_dir / "results.json").read_text())["status"] == "complete"


def test_a_secret_from_the_environment_is_written_to_no_file_of_the_run(tmp_path, monkeypatch):
    # dataset.root: data-${oc.env:SECRET} put the value in results.json and checkpoint.pt
    monkeypatch.setenv("MAMMOTH_TEST_SECRET", "s3cr3t-value")
    mammoth.run(compose_run(tmp_path, "dataset.root=data-${oc.env:MAMMOTH_TEST_SECRET}"))
    written = sorted(path.name for path in tmp_path.rglob("*") if path.is_file())
    assert {"results.json", "checkpoint.pt", "metrics.csv"} <= set(written)
    for name in written:
        assert b"s3cr3t-value" not in (tmp_path / name).read_bytes(), name
    assert b"data-${oc.env:MAMMOTH_TEST_SECRET}" in (tmp_path / "results.json").read_bytes()
