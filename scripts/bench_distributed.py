"""Benchmark one training step on several processes: a plain step (``sgd``), ``er`` and ``derpp``
with ``resnet18`` on CIFAR-format data (32x32 RGB, written here as ``cifar-10-batches-py`` pickles
of random pixels), on N processes started by torchrun (gloo on CPU, nccl on CUDA).

Each ``torchrun --nproc_per_node=N`` builds the method three times and times, side by side
(interleaved, every rank starting each sample together, the median over ``--steps`` samples):

- ``mammoth``: the harness's step (``observe_on_shard``): each rank its equal shard of the global
  batch and of the replay minibatch, BatchNorm statistics synchronised over the ranks, the
  gradients averaged by DDP's reducer, the buffer's new examples gathered from every rank: one
  process's step;
- ``raw DDP``: ``model.net`` wrapped in torch's ``DistributedDataParallel`` (its forward arms the
  reducer), each rank's own BatchNorm statistics and buffer: what a user would write with DDP;
- ``no sync``: each rank on its shard with nothing shared (the floor).

Collectives per step count every torch.distributed call mammoth makes (all-reduce, all-gather,
broadcast: the BatchNorm statistics, the buffer's gathering, the loss) plus DDP's bucket
all-reduces (the reducer's buckets times the backward passes it averaged). ``--threads`` is the
torch threads of EACH process (1 by default: torchrun's OMP_NUM_THREADS=1).

Usage: ``python scripts/bench_distributed.py [--processes 2 3] [--steps 10] [--quick] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # noqa: E402

METHODS = {"sgd": {}, "er": {"buffer_size": 500}, "derpp": {"buffer_size": 500, "alpha": 0.1, "beta": 0.5}}
MODES = ("mammoth", "raw DDP", "no sync")
COLLECTIVES = ("all_reduce", "all_gather", "broadcast", "reduce_scatter", "all_gather_into_tensor")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[2], help="process counts (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--steps", type=int, default=10, help="timed samples per mode (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--quick", action="store_true", help="3 samples after 2 warm-up steps")
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch (default 32)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per process)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup = 3, 2
    return args


def write_cifar(root: Path, per_batch: int) -> None:
    """``root/cifar-10-batches-py``: five training batches of ``per_batch`` random images, a test batch."""
    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, count in [*((f"data_batch_{b}", per_batch) for b in range(1, 6)), ("test_batch", 100)]:
        entry = {"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in rng.integers(0, 10, count)], "batch_label": name}
        with open(folder / name, "wb") as file:
            pickle.dump(entry, file, protocol=2)
    with open(folder / "batches.meta", "wb") as file:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch,
                     "num_vis": 3072}, file, protocol=2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def batch_of(batch_size: int, processes: int) -> int:
    """The global batch on ``processes``: ``batch_size`` rounded down to a multiple of them (mammoth
    refuses a batch that does not divide: 32 on 3 processes runs 30)."""
    return batch_size - batch_size % processes


def run_configuration(args: argparse.Namespace, root: Path, method: str, processes: int) -> dict:
    """One torchrun of the worker; its rank 0's measurements."""
    job = {"root": str(root), "method": method, "threads": args.threads, "steps": args.steps, "warmup": args.warmup,
           "batch_size": batch_of(args.batch_size, processes), "device": args.device, "out": str(root / f"{method}-{processes}.json")}
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
               f"--master_port={free_port()}", os.path.abspath(__file__), "--worker", json.dumps(job)]
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        raise SystemExit(f"{method} on {processes} process(es) failed:\n{result.stderr[-3000:]}")
    return json.loads(Path(job["out"]).read_text())


def worker(job: dict) -> None:
    """Inside torchrun: time one step of ``job['method']`` in each mode on task 0; rank 0 writes the figures."""
    import torch
    import torch.distributed as dist

    from mammoth.backbones import build_backbone
    from mammoth.datasets import build_dataset
    from mammoth.engine.context import build_context
    from mammoth.engine.distributed import _ddp_options  # the engine's: no buffer broadcasts
    from mammoth.engine.distributed import (detect_launch, is_main_process, observe_on_shard, process_device, rank,
                                            shard_of, start_process_group, stop_process_group,
                                            synchronised_batchnorm, world_size)
    from mammoth.models import build_model

    launch = detect_launch()
    device = torch.device(job["device"])
    if launch is not None:
        device = process_device(launch, device)
        start_process_group(launch, device)
    torch.set_num_threads(job["threads"])
    barrier = dist.barrier  # not counted: the benchmark's own
    calls = [0]
    for name in COLLECTIVES:
        def counted(*arguments, _function=getattr(dist, name), **options):
            calls[0] += 1
            return _function(*arguments, **options)
        setattr(dist, name, counted)

    dataset = build_dataset({"name": "seq-cifar10", "root": job["root"], "batch_size": job["batch_size"]}, seed=0)
    source = None
    runs = {}
    for mode in MODES:
        torch.manual_seed(0)
        net = build_backbone("resnet18", num_classes=dataset.n_classes, input_shape=dataset.input_shape).to(device)
        if mode == "mammoth":
            net = synchronised_batchnorm(net, device)  # as the runner: BatchNorm statistics over every rank
        model = build_model(job["method"], net=net, dataset=dataset, **METHODS[job["method"]]).to(device)
        ddp = None
        if mode == "raw DDP":
            ddp = torch.nn.parallel.DistributedDataParallel(model.net, **_ddp_options())  # each rank's own BatchNorm
            model.net = ddp
        context = build_context(dataset, device, torch.Generator().manual_seed(0))
        model.attach(context)
        model.begin_task(0)
        source = context.task_data(0)
        if mode == "mammoth":
            step = observe_on_shard(model, context)
        else:
            def step(batch, model=model):
                shard = shard_of(len(batch.labels), rank(), world_size())
                return model.observe(shard.rows(batch.inputs), shard.rows(batch.labels), shard.rows(batch.not_aug_inputs))
        passes = [0]  # backward passes that reach the first parameter
        next(model.parameters()).register_post_accumulate_grad_hook(lambda parameter, passes=passes: passes.__setitem__(0, passes[0] + 1))
        runs[mode] = {"model": model, "context": context, "step": step, "ddp": ddp, "passes": passes, "batches": None}

    def next_batch(run):
        batch = next(run["batches"], None) if run["batches"] is not None else None
        if batch is None:
            run["batches"] = run["context"].batches(source)
            batch = next(run["batches"])
        return batch

    def one_step(mode):
        return lambda: runs[mode]["step"](next_batch(runs[mode]))

    for mode in MODES:  # warm-up (and DDP's bucket rebuilding), then count over the timed steps
        for _ in range(job["warmup"]):
            one_step(mode)()
    counts = {}
    for mode in MODES:
        run = runs[mode]
        reducer = getattr(run["context"], "gradient_reducer", None)
        before_calls, before_passes = calls[0], run["passes"][0]
        before_prepared = getattr(reducer, "prepared", 0)
        for _ in range(job["steps"]):
            one_step(mode)()
        wrapper = run["ddp"] if run["ddp"] is not None else getattr(reducer, "ddp", None)
        buckets = 0 if wrapper is None else len(wrapper.reducer._get_zeros_like_grad_buckets())  # as rebuilt after warm-up
        averaged = (run["passes"][0] - before_passes if mode == "raw DDP"
                    else getattr(reducer, "prepared", 0) - before_prepared)
        counts[mode] = {"python": (calls[0] - before_calls) / job["steps"], "buckets": buckets,
                        "ddp": buckets * averaged / job["steps"]}
    sync = (lambda: (torch.cuda.synchronize(device), barrier())) if device.type == "cuda" else barrier
    samples = _timing.interleaved({mode: one_step(mode) for mode in MODES}, repetitions=job["steps"], warmup=0,
                                  sync=sync)
    if is_main_process():
        Path(job["out"]).write_text(json.dumps({
            mode: {"seconds": _timing.median(samples[mode]), "spread": _timing.spread(samples[mode]), **counts[mode]}
            for mode in MODES}))
    if launch is not None:
        stop_process_group()


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    _timing.print_header("One training step on several processes: sgd, er and derpp with resnet18 on CIFAR-format data", {
        "global batch": f"{args.batch_size}, rounded down to a multiple of the processes", "timed samples": f"{args.steps} per mode, interleaved (after {args.warmup} untimed steps)",
        "threads per process": args.threads, "device": args.device})
    per_batch = 2 * (args.warmup + 2 * args.steps + 1) * args.batch_size  # task 0: about 2/10 of 5 batches, with room
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        write_cifar(root, per_batch)
        for processes in args.processes:
            for method in args.methods:
                figures = run_configuration(args, root, method, processes)
                for mode in MODES:
                    numbers = figures[mode]
                    total = numbers["python"] + numbers["ddp"]
                    rows.append([method, processes, batch_of(args.batch_size, processes), mode, f"{total:.0f}",
                                 f"{numbers['python']:.0f} + {numbers['ddp']:.0f}",
                                 f"{1000 * numbers['seconds']:.0f}",
                                 f"{numbers['seconds'] / figures['no sync']['seconds']:.2f}x",
                                 f"{numbers['seconds'] / figures['raw DDP']['seconds']:.2f}x"])
    print(_timing.markdown_table(["method", "processes", "batch", "mode", "collectives/step",
                                  "mammoth's + DDP buckets", "ms/step", "vs no sync", "vs raw DDP"], rows))


if __name__ == "__main__":
    main()
