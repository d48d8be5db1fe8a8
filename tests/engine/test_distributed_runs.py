"""Runs on two real processes started by torchrun with gloo (the second suite: ``python -m pytest
-q -m distributed``), against one process with the same seed and global batch.

Tolerances: the buffer's examples, labels and ``num_seen`` are compared by hash, exactly (the
reservoir sees the gathered batch, in order, with the shared generator). Without BatchNorm
(``mnistmlp``) the stored logits agree to 1e-4 and the accuracy matrices to one test example per
task: the gradients are the same sums added in another order (rank 0's part, then rank 1's), so
the weights agree to float rounding and a prediction on the edge may flip. BatchNorm on the CPU
normalises with the whole batch over the ranks: one step's gradients agree to 1e-5 (tested on a
small conv net); over a run of ``resnet18`` such rounding differences grow (a ReLU input near 0
flips), as they do between one process on 1 and on 2 threads, so there only the buffer's contents
are compared.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fake_datasets import write_cifar10
from mammoth.engine.checkpoint import read_checkpoint

pytestmark = pytest.mark.distributed

WORKER = textwrap.dedent("""
    import hashlib, json, sys, torch
    from pathlib import Path
    from mammoth.backbones import build_backbone
    from mammoth.datasets import build_dataset
    from mammoth.engine.distributed import detect_launch, is_main_process, start_process_group, stop_process_group
    from mammoth.engine.loop import run_tasks
    from mammoth.models import build_model

    def digest(buffer):
        hashed = hashlib.sha256(str(buffer.num_seen).encode())
        for name in ("examples", "labels"):
            hashed.update(getattr(buffer, name).cpu().numpy().tobytes())
        return hashed.hexdigest()

    jobs, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
    launch = detect_launch()
    if launch is not None:
        start_process_group(launch)
    torch.set_num_threads(1)
    report = []
    for number, job in enumerate(jobs):
        torch.manual_seed(job["seed"])
        dataset = build_dataset(job["dataset"], seed=job["seed"])
        net = build_backbone(job["backbone"], num_classes=dataset.n_classes, input_shape=dataset.input_shape)
        model = build_model(job["model"], net=net, dataset=dataset, **job["values"])
        tasks = []
        def record(task, state):
            buffer = model.buffer
            tasks.append({"buffer": digest(buffer), "logits": None if buffer.logits is None else buffer.logits.tolist()})
        (out / str(number)).mkdir(parents=True, exist_ok=True)
        state = run_tasks(model, dataset, torch.device("cpu"), out / str(number), job["seed"], {}, on_task_end=record)
        report.append({"tasks": tasks, "accuracies": state.accuracies,
                       "test_sizes": [len(dataset.test_source(task)) for task in range(dataset.n_tasks)]})
    if is_main_process():
        (out / "report.json").write_text(json.dumps(report))
    if launch is not None:
        stop_process_group()
""")


BATCHNORM_WORKER = textwrap.dedent("""
    import copy, json, sys, torch
    from mammoth.engine.distributed import (GradientReducer, detect_launch, rank, shard_of, start_process_group,
                                            stop_process_group, synchronised_batchnorm)

    start_process_group(detect_launch())
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3),
                              torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 3))
    alone = copy.deepcopy(net)
    synced = synchronised_batchnorm(copy.deepcopy(net), torch.device("cpu"))
    reducer = GradientReducer()  # what the engine's step does (observe_on_shard)
    reducer.wrap(synced)
    shard = shard_of(10)
    x, y = torch.randn(10, 3, 8, 8), torch.randint(0, 3, (10,))
    torch.nn.functional.cross_entropy(alone(x), y).backward()  # one process: the whole batch
    with reducer.step(shard.split, "test"):
        reducer.prepare()
        torch.nn.functional.cross_entropy(synced(shard.rows(x)), shard.rows(y)).backward()
    report = {"kinds": [type(module).__name__ for module in synced if "Norm" in type(module).__name__],
              "gradients": max(float((a.grad - b.grad).abs().max()) for a, b in zip(synced.parameters(), alone.parameters())),
              "running": max(float((a - b).abs().max()) for a, b in zip(synced.buffers(), alone.buffers()))}
    with open(f"{sys.argv[1]}/rank{rank()}.json", "w") as file:
        json.dump(report, file)
    stop_process_group()
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(arguments: list[str], cwd: Path, processes: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=processes ARGUMENTS`` (a script, or ``-m mammoth ...``)."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
               f"--master_port={free_port()}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def mammoth(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m mammoth ARGUMENTS`` in one process."""
    return subprocess.run([sys.executable, "-m", "mammoth", *arguments], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


def compare_reports(one: list, two: list, exact_accuracy: bool) -> None:
    for alone, together in zip(one, two, strict=True):
        assert [task["buffer"] for task in together["tasks"]] == [task["buffer"] for task in alone["tasks"]]
        if not exact_accuracy:
            continue
        for first, second in zip(alone["tasks"], together["tasks"]):
            if first["logits"] is not None:
                assert torch.allclose(torch.tensor(first["logits"]), torch.tensor(second["logits"]), atol=1e-4, rtol=0)
        for kind, rows in alone["accuracies"].items():
            for row, other in zip(rows, together["accuracies"][kind], strict=True):
                steps = [100.0 / size for size in alone["test_sizes"][: len(row)]]  # one test example per task
                assert all(abs(a - b) <= step + 1e-9 for a, b, step in zip(row, other, steps)), (kind, row, other)


def test_two_processes_keep_the_buffer_and_accuracies_of_one(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "data", n_per_batch=10, n_test=50)
    digits = {"name": "seq-digits", "n_epochs": 1}
    cifar = {"name": "seq-cifar10", "n_epochs": 1, "batch_size": 4, "root": str(tmp_path / "data")}
    jobs = [{"dataset": digits, "backbone": "mnistmlp", "model": model, "values": {"buffer_size": 50}, "seed": 3}
            for model in ("er", "derpp", "agem")]
    # tasks of unequal size (4, 3 and 3 classes)
    jobs.append({"dataset": {**digits, "base_classes": 4, "increment": 3}, "backbone": "mnistmlp", "model": "derpp",
                 "values": {"buffer_size": 50}, "seed": 3})
    jobs.append({"dataset": cifar, "backbone": "resnet18", "model": "derpp", "values": {"buffer_size": 20}, "seed": 3})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    (tmp_path / "worker.py").write_text(WORKER)
    alone = subprocess.run([sys.executable, "worker.py", "jobs.json", "one"], capture_output=True, text=True,
                           timeout=300, cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr[-3000:]
    together = torchrun(["worker.py", "jobs.json", "two"], tmp_path)
    assert together.returncode == 0, together.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    assert len(one[0]["tasks"]) == 5 and one[0]["tasks"][0]["buffer"] != one[0]["tasks"][1]["buffer"]
    assert len(one[3]["tasks"]) == 3 and len(one[3]["test_sizes"]) == 3
    compare_reports(one[:4], two[:4], exact_accuracy=True)
    compare_reports(one[4:], two[4:], exact_accuracy=False)  # resnet18: BatchNorm statistics per rank on CPU


def buffer_digest(run_dir: Path) -> str:
    buffer = read_checkpoint(run_dir / "checkpoint.pt")["model_extra"]["buffer"]
    hashed = hashlib.sha256(str(buffer["num_seen"]).encode())
    for name in ("examples", "labels"):
        hashed.update(buffer["fields"][name].numpy().tobytes())
    return hashed.hexdigest()


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def weights(run_dir: Path) -> dict:
    return read_checkpoint(run_dir / "checkpoint.pt")["model"]


RUN = ["model=er", "model.buffer_size=50", "dataset.n_epochs=1", "seed=3"]


def test_torchrun_runs_one_experiment_that_resumes(tmp_path: Path) -> None:
    together = torchrun(["-m", "mammoth", *RUN, f"hydra.run.dir={tmp_path / 'two'}"], tmp_path)
    assert together.returncode == 0, together.stderr[-3000:]
    alone = mammoth([*RUN, f"hydra.run.dir={tmp_path / 'one'}"], tmp_path)
    assert alone.returncode == 0, alone.stderr[-3000:]
    two, one = tmp_path / "two", tmp_path / "one"
    assert results(two)["class_il"]["matrix"] == results(one)["class_il"]["matrix"]
    assert buffer_digest(two) == buffer_digest(one)
    # rank 0 writes the run's files and logs them; rank 1 logs to its own file only
    assert together.stdout.count("task 5/5: Class-IL") == 1
    assert (two / ".hydra" / "config.yaml").exists() and json.loads((two / "job.json").read_text())["status"] == "complete"
    assert "rank 1" not in (two / "mammoth.log").read_text()
    assert re.search(r"\[rank 1 pid \d+\]\[mammoth\]\[INFO\] task 5/5: Class-IL", (two / "rank1.log").read_text())
    assert sorted(path.name for path in two.iterdir() if path.name.startswith("rank")) == ["rank1.log"]

    # stopped after task 2, resumed on 2 processes: bit-exact; resumed on 1 process: it works
    stopped = torchrun(["-m", "mammoth", *RUN, f"hydra.run.dir={tmp_path / 'stopped'}", "stop_after_task=2"], tmp_path)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    subprocess.run(["cp", "-r", str(tmp_path / "stopped"), str(tmp_path / "stopped1")], check=True)
    resumed = torchrun(["-m", "mammoth", *RUN, f"hydra.run.dir={tmp_path / 'stopped'}", "resume=true"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert results(tmp_path / "stopped")["class_il"]["matrix"] == results(two)["class_il"]["matrix"]
    resumed_weights, uninterrupted = weights(tmp_path / "stopped"), weights(two)
    assert all(torch.equal(resumed_weights[name], uninterrupted[name]) for name in uninterrupted)
    assert buffer_digest(tmp_path / "stopped") == buffer_digest(two)
    on_one = mammoth([*RUN, f"hydra.run.dir={tmp_path / 'stopped1'}", "resume=true"], tmp_path)
    assert on_one.returncode == 0, on_one.stderr[-3000:]
    assert buffer_digest(tmp_path / "stopped1") == buffer_digest(two)
    assert len(results(tmp_path / "stopped1")["class_il"]["matrix"]) == 5


def test_a_method_that_cannot_be_sharded_is_refused_before_training(tmp_path: Path) -> None:
    refused = torchrun(["-m", "mammoth", "model=mer", "model.buffer_size=50", "model.beta=1", "model.gamma=1", f"hydra.run.dir={tmp_path / 'run'}"],
                       tmp_path)
    assert refused.returncode != 0
    lines = [line for line in refused.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 2 and all(line == lines[0] for line in lines)  # one line per rank, the same
    assert lines[0].startswith("Error: model=mer does not support training on 2 processes")
    assert not (tmp_path / "run" / "checkpoint.pt").exists() and not (tmp_path / "run" / "results.json").exists()


def test_a_submitit_local_job_of_two_tasks_is_one_distributed_run(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    swept = mammoth(["-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2",
                     "hydra.launcher.timeout_min=5", *RUN, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert swept.returncode == 0, swept.stderr[-3000:]
    alone = mammoth([*RUN, f"hydra.run.dir={tmp_path / 'one'}"], tmp_path)
    assert alone.returncode == 0, alone.stderr[-3000:]
    job = sweep / "0"
    assert re.search(r"\[rank 1 pid \d+\]\[mammoth\]\[INFO\] task 5/5: Class-IL", (job / "rank1.log").read_text())
    assert results(job)["class_il"]["matrix"] == results(tmp_path / "one")["class_il"]["matrix"]
    assert buffer_digest(job) == buffer_digest(tmp_path / "one")
    assert "complete" in (sweep / "summary.csv").read_text()


def test_batchnorm_on_the_cpu_normalises_with_the_whole_batch_over_the_ranks(tmp_path: Path) -> None:
    (tmp_path / "worker.py").write_text(BATCHNORM_WORKER)
    result = torchrun(["worker.py", str(tmp_path)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in range(2):  # a batch of 10 split 5 + 5: the gradients and statistics of one process's batch of 10
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert report["kinds"] == ["RankSyncBatchNorm", "RankSyncBatchNorm"]
        assert report["gradients"] < 1e-5 and report["running"] < 1e-5, report
