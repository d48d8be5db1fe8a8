"""A step on several processes is one process's step: float64 runs of a small network with
BatchNorm on 1, 2 and 3 gloo processes (torchrun), with batches that split evenly and batches that
do not (an epoch's last batch, one smaller than the world), replay minibatches that divide and
ones that do not (a buffer holding fewer items than the minibatch); and the work every rank
computes identically (ewc-on's and ewc's Fisher, mas's importances, gem's memory gradients, gdumb's
final fit, lwf's warm-up, bic's correction; lwf-mc has none) runs with no collective. The second suite (``-m distributed``).

Tolerance: 1e-12 in float64. The ranks' equal shards add the same terms as one process in another
order (each rank's mean, then DDP's average; Chan's merge of the ranks' BatchNorm statistics), so
they agree to a few float64 roundings (measured: at most 7e-16 on gradients of order 1).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from test_distributed_runs import torchrun

pytestmark = pytest.mark.distributed

EXACT_WORKER = textwrap.dedent('''
import json, sys, torch
from torch import nn
from mammoth.backbones.base import MammothBackbone
from mammoth.datasets import build_dataset
from mammoth.datasets.source import Batch
from mammoth.engine.context import build_context
from mammoth.engine.distributed import (detect_launch, is_main_process, observe_on_shard, start_process_group,
                                        stop_process_group, synchronised_batchnorm, world_size)
from mammoth.models import build_model
import torch.distributed as dist

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)


class Small(MammothBackbone):
    """Two convolutions with BatchNorm and a linear classifier, for 1x8x8 inputs."""

    def __init__(self):
        super().__init__()
        self.stages = nn.ModuleList([nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4),
            nn.ReLU(), nn.Flatten())])
        self.num_features, self.num_classes = 144, 10
        self.classifier = nn.Linear(144, 10)


RUNS = {  # method, its values, the batch sizes of the steps (batch_size 6, minibatch 6 or the batch's)
    "sgd": ("sgd", {}, [6, 5, 1, 3, 6]),
    "er": ("er", {"buffer_size": 50, "minibatch_size": 6}, [5, 6, 4, 6, 6, 1, 6]),
    "derpp": ("derpp", {"buffer_size": 50, "alpha": 0.3, "beta": 0.5}, [6, 6, 5, 6, 3, 6]),
}

launch = detect_launch()
if launch is not None:
    start_process_group(launch)
calls = []  # the torch.distributed calls mammoth makes (DDP's bucket all-reduces run inside its reducer)
for function in ("all_reduce", "all_gather", "broadcast", "barrier"):
    def counted(*args, _function=getattr(dist, function), _name=function, **kwargs):
        calls.append(_name)
        return _function(*args, **kwargs)
    setattr(dist, function, counted)
dataset = build_dataset({"name": "seq-digits", "batch_size": 6})
report = {}
for name, (method, values, sizes) in RUNS.items():
    torch.manual_seed(0)
    net = synchronised_batchnorm(Small(), torch.device("cpu"))
    model = build_model(method, net=net, dataset=dataset, lr=0.1, momentum=0.5, **values)
    context = build_context(dataset, "cpu", torch.Generator().manual_seed(0))
    context.train_transform = lambda x: x  # float64 inputs as they are
    model.attach(context)
    model.begin_task(0)
    step = observe_on_shard(model, context)
    data = torch.Generator().manual_seed(1)
    steps = []
    for size in sizes:
        inputs = torch.randn(size, 1, 8, 8, generator=data)
        labels = torch.randint(0, 10, (size,), generator=data)
        calls.clear()
        loss = step(Batch(inputs, labels, inputs, torch.arange(size)))
        steps.append({"loss": loss, "calls": sorted(calls), "grads": torch.cat([p.grad.flatten() for p in model.net.parameters()]).tolist(),
                      "params": torch.cat([p.detach().flatten() for p in model.net.parameters()]).tolist(),
                      "buffers": torch.cat([b.double().flatten() for b in model.net.buffers()]).tolist()})
    buffer = getattr(model, "buffer", None)
    report[name] = {"steps": steps, "buffer": None if buffer is None else {
        key: getattr(buffer, key).tolist() for key in ("examples", "labels", "logits") if getattr(buffer, key) is not None},
        "prepared": context.gradient_reducer.prepared,
        "buckets": None if context.gradient_reducer.ddp is None else len(context.gradient_reducer.ddp.reducer._get_zeros_like_grad_buckets()),
        "kinds": sorted({type(m).__name__ for m in model.net.modules() if "Norm" in type(m).__name__})}
if is_main_process():
    with open(sys.argv[1], "w") as file:
        json.dump(report, file)
if launch is not None:
    stop_process_group()
''')

SAME_WORKER = textwrap.dedent('''
import json, sys, torch
import torch.distributed as dist
from mammoth.backbones import build_backbone
from mammoth.datasets import build_dataset
from mammoth.engine.context import build_context
from mammoth.engine.distributed import detect_launch, is_main_process, start_process_group, stop_process_group
from mammoth.engine.distributed import evaluate_on_ranks
from mammoth.engine.evaluation import evaluate_tasks
from mammoth.engine.loop import train_task
from mammoth.models import build_model

torch.set_num_threads(1)
RUNS = {"ewc-on": {"e_lambda": 10.0, "gamma": 1.0}, "gem": {"buffer_size": 40},
        "gdumb": {"buffer_size": 40, "fitting_epochs": 2, "cutmix_alpha": None},
        "lwf": {}, "bic": {"buffer_size": 40, "bic_epochs": 2}, "wa": {"buffer_size": 40}, "mas": {"lr": 0.01}, "ewc": {},
        "lwf-mc": {"wd_reg": 0.001},
        "er:per-class": {"memory_per_class": 3}}
launch = detect_launch()
if launch is not None:
    start_process_group(launch)
count = {"n": 0}
for name in ("all_reduce", "all_gather", "broadcast", "reduce_scatter", "all_gather_into_tensor", "barrier"):
    original = getattr(dist, name)
    def counted(*args, _original=original, **kwargs):
        count["n"] += 1
        return _original(*args, **kwargs)
    setattr(dist, name, counted)
report = {}
for name, values in RUNS.items():
    torch.manual_seed(0)
    dataset = build_dataset({"name": "seq-digits", "n_epochs": 1, "batch_size": 32}, seed=0)
    net = build_backbone("mnistmlp", num_classes=dataset.n_classes, input_shape=dataset.input_shape)
    model = build_model(name.split(":")[0], net=net, dataset=dataset, **values)
    context = build_context(dataset, "cpu", torch.Generator().manual_seed(0))
    model.attach(context)
    phases = {"step": [0, 0], "inner": [0, 0]}
    reducer = getattr(context, "gradient_reducer", None)
    def counting(function, phase):
        def call(*args, **kwargs):
            before, prepared = count["n"], getattr(reducer, "prepared", 0)
            try:
                return function(*args, **kwargs)
            finally:
                phases[phase][0] += count["n"] - before
                phases[phase][1] += getattr(reducer, "prepared", 0) - prepared
        return call
    model.observe = counting(model.observe, "step")
    for hook in ("begin_task", "training_data", "end_task"):
        setattr(model, hook, counting(getattr(model, hook), "inner"))
    for task in range(dataset.n_tasks):
        train_task(model, context, task, dataset.task_source(task))
    report[name] = {"phases": phases, "params": torch.cat([p.detach().flatten() for p in model.net.parameters()]).tolist()}
    if name == "er:per-class":  # the grown memory, and the nearest-mean accuracy over the ranks' shards of the test data
        scores = evaluate_on_ranks(evaluate_tasks, model, context, [dataset.test_source(t) for t in range(dataset.n_tasks)])
        report[name].update(capacity=model.buffer.capacity, labels=model.buffer.labels.tolist(), nme=scores["nme_class_il"])
if is_main_process():
    with open(sys.argv[1], "w") as file:
        json.dump(report, file)
if launch is not None:
    stop_process_group()
''')


def largest_difference(one: list, other: list) -> float:
    return float((torch.tensor(one) - torch.tensor(other)).abs().max())


def test_a_step_on_two_or_three_processes_is_one_process_step_in_float64(tmp_path: Path) -> None:
    (tmp_path / "worker.py").write_text(EXACT_WORKER)
    alone = subprocess.run([sys.executable, "worker.py", "one.json"], capture_output=True, text=True, timeout=300,
                           cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr[-3000:]
    one = json.loads((tmp_path / "one.json").read_text())
    for processes in (2, 3):
        together = torchrun(["worker.py", f"{processes}.json"], tmp_path, processes=processes)
        assert together.returncode == 0, together.stderr[-3000:]
        report = json.loads((tmp_path / f"{processes}.json").read_text())
        for name, run in one.items():
            split = 0
            for size, first, other in zip(SIZES[name], run["steps"], report[name]["steps"], strict=True):
                for key in ("grads", "params", "buffers"):  # the reduced gradient, the weights, the BN statistics
                    assert largest_difference(first[key], other[key]) < 1e-12, (processes, name, size, key)
                assert abs(first["loss"] - other["loss"]) < 1e-12
                split += bool(other["calls"])
                if name == "sgd":  # 2 BatchNorm layers: 1 all-gather forward, 1 all-reduce backward each; the loss
                    assert other["calls"] in ([], ["all_gather"] * 2 + ["all_reduce"] * 3), (processes, size)
                    assert bool(other["calls"]) == (size % processes == 0)  # a batch that does not divide: whole, no collective
            assert report[name]["prepared"] == split and report[name]["buckets"] == 1  # one armed pass per split step
            assert report[name]["kinds"] == ["RankSyncBatchNorm"] and run["kinds"] == ["BatchNorm2d"]
            for key, stored in (run["buffer"] or {}).items():  # the replay buffer, as one process's
                assert largest_difference(stored, report[name]["buffer"][key]) < 1e-12, (processes, name, key)
        assert report["er"]["prepared"] == (4 if processes == 2 else 3)  # er: 3 of its 7 steps cannot split on 2 ranks


#: The batch sizes of each run of EXACT_WORKER (its RUNS).
SIZES = {"sgd": [6, 5, 1, 3, 6], "er": [5, 6, 4, 6, 6, 1, 6], "derpp": [6, 6, 5, 6, 3, 6]}


def test_work_every_rank_computes_identically_runs_with_no_collective(tmp_path: Path) -> None:
    (tmp_path / "worker.py").write_text(SAME_WORKER)
    alone = subprocess.run([sys.executable, "worker.py", "one.json"], capture_output=True, text=True, timeout=300,
                           cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr[-3000:]
    together = torchrun(["worker.py", "two.json"], tmp_path)
    assert together.returncode == 0, together.stderr[-3000:]
    one, two = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    for name in ("ewc-on", "gem", "gdumb", "lwf", "bic", "wa", "mas", "ewc", "lwf-mc"):
        collectives, armed = two[name]["phases"]["inner"]  # begin_task, training_data, end_task: the inner loops
        assert (collectives, armed) == (0, 0), name
        step_collectives, step_armed = two[name]["phases"]["step"]
        assert step_collectives == 0  # observe itself: no torch.distributed call (mnistmlp: no BatchNorm)
        assert step_armed == (0 if name == "gdumb" else step_armed) and (name == "gdumb" or step_armed > 0)
        # float32 mnistmlp over 5 tasks: the same sums in another order (1e-7); 1e-5 leaves room
        assert largest_difference(one[name]["params"], two[name]["params"]) < 1e-5, name
    assert two["gem"]["phases"]["step"][1] == two["ewc-on"]["phases"]["step"][1]  # gem: one armed pass a step, not its memory's
    # er with memory_per_class=3: every rank grows its buffer at the same begin_task (3 x 10 classes
    # after the last) and stores the same items; the nearest-mean accuracy of the ranks' shards is one process's
    per_class = ("er:per-class", one["er:per-class"], two["er:per-class"])
    assert per_class[1]["capacity"] == per_class[2]["capacity"] == 30 and per_class[1]["labels"] == per_class[2]["labels"]
    assert largest_difference(per_class[1]["params"], per_class[2]["params"]) < 1e-5
    assert per_class[1]["nme"] == per_class[2]["nme"] and len(per_class[1]["nme"]) == 5
