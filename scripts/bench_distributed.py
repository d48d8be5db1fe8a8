"""Benchmark one run on several processes: training images per second of ``er`` and ``derpp``
with ``resnet18`` on CIFAR-format data (32x32 RGB, written here as ``cifar-10-batches-py``
pickles of random pixels), on 1 process and on N processes started by torchrun (gloo on CPU,
nccl on CUDA), and the time each step spends in communication.

Each configuration is its own ``torchrun --nproc_per_node=P`` (P=1 takes the one-process path,
as ``python -m mammoth`` does): it builds seq-cifar10 from the files, the method and its
backbone, trains task 0 with the harness's distributed step (:func:`observe_on_shard`: each rank
its shard of the global batch and of each replay minibatch, gradients averaged over the ranks,
the buffer's new examples gathered) for ``--warmup`` steps, then times ``--steps`` steps.
images/s counts the global batch (``dataset.batch_size``, not the replay examples) over rank 0's
wall time; communication is the time rank 0 spends in torch.distributed calls (all_reduce,
all_gather: gradients, BatchNorm statistics, the buffer's gathering, the loss; waiting for the
other ranks included), per step. ``--threads`` is the torch
threads of EACH process (1 by default: torchrun's OMP_NUM_THREADS=1); the one-process row is
also run with processes x threads, the same CPU cores as the N-process row.

Usage: ``python scripts/bench_distributed.py [--processes 2] [--threads 1] [--steps 10] [--device cpu]``.
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
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # noqa: E402

METHODS = {"er": {"buffer_size": 500}, "derpp": {"buffer_size": 500, "alpha": 0.1, "beta": 0.5}}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="processes of the distributed rows (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch (default 32)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per process)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args()


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


def run_configuration(args: argparse.Namespace, root: Path, method: str, processes: int, threads: int) -> dict:
    """One torchrun of the worker; its rank 0's measurements."""
    job = {"root": str(root), "method": method, "threads": threads, "steps": args.steps, "warmup": args.warmup,
           "batch_size": args.batch_size, "device": args.device, "out": str(root / f"{method}-{processes}-{threads}.json")}
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
               f"--master_port={free_port()}", os.path.abspath(__file__), "--worker", json.dumps(job)]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        raise SystemExit(f"{method} on {processes} process(es) failed:\n{result.stderr[-3000:]}")
    return json.loads(Path(job["out"]).read_text())


def worker(job: dict) -> None:
    """Inside torchrun: train task 0 of seq-cifar10 with ``job['method']``; rank 0 writes its figures."""
    import torch
    import torch.distributed as dist

    from mammoth.backbones import build_backbone
    from mammoth.datasets import build_dataset
    from mammoth.engine.context import build_context
    from mammoth.engine.distributed import (detect_launch, is_main_process, observe_on_shard, process_device,
                                            start_process_group, stop_process_group,
                                            synchronised_batchnorm, world_size)
    from mammoth.models import build_model

    launch = detect_launch()
    device = torch.device(job["device"])
    if launch is not None:
        device = process_device(launch, device)
        start_process_group(launch, device)
    torch.set_num_threads(job["threads"])
    communication = [0.0]

    def timed(function):
        def call(*arguments, **options):
            started = time.perf_counter()
            try:
                return function(*arguments, **options)
            finally:
                communication[0] += time.perf_counter() - started
        return call

    dist.all_reduce, dist.all_gather = timed(dist.all_reduce), timed(dist.all_gather)
    torch.manual_seed(0)
    dataset = build_dataset({"name": "seq-cifar10", "root": job["root"], "batch_size": job["batch_size"]}, seed=0)
    net = build_backbone("resnet18", num_classes=dataset.n_classes, input_shape=dataset.input_shape).to(device)
    net = synchronised_batchnorm(net, device)  # as the runner: BatchNorm statistics over every rank
    model = build_model(job["method"], net=net, dataset=dataset, **METHODS[job["method"]]).to(device)
    context = build_context(dataset, device, torch.Generator().manual_seed(0))
    model.attach(context)
    model.begin_task(0)
    step = observe_on_shard(model, context)
    batches = context.batches(context.task_data(0))
    for _ in range(job["warmup"]):
        step(next(batches))
    if launch is not None:
        dist.barrier()
    communication[0] = 0.0
    started, images = time.perf_counter(), 0
    for _ in range(job["steps"]):
        batch = next(batches)
        step(batch)
        images += len(batch.labels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if launch is not None:
        dist.barrier()
    seconds = time.perf_counter() - started
    if is_main_process():
        Path(job["out"]).write_text(json.dumps({
            "images_per_second": images / seconds, "step_seconds": seconds / job["steps"],
            "communication_per_step": communication[0] / job["steps"], "processes": world_size()}))
    if launch is not None:
        stop_process_group()


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    _timing.print_header("One run on several processes: er and derpp with resnet18 on CIFAR-format data", {
        "global batch": args.batch_size, "timed steps": f"{args.steps} (after {args.warmup} untimed)",
        "threads per process": args.threads, "device": args.device})
    per_batch = 2 * (args.warmup + args.steps + 1) * args.batch_size  # task 0: about 2/10 of 5 batches, with room
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        write_cifar(root, per_batch)
        for method in METHODS:
            alone = run_configuration(args, root, method, 1, args.threads)
            cores = run_configuration(args, root, method, 1, args.threads * args.processes)
            together = run_configuration(args, root, method, args.processes, args.threads)
            for label, figures in ((f"1 x {args.threads} thread(s)", alone),
                                   (f"1 x {args.threads * args.processes} thread(s)", cores),
                                   (f"{args.processes} x {args.threads} thread(s)", together)):
                rows.append([method, label, f"{figures['images_per_second']:.1f}",
                             f"{figures['images_per_second'] / alone['images_per_second']:.2f}x",
                             f"{1000 * figures['step_seconds']:.0f}", f"{1000 * figures['communication_per_step']:.1f}"])
    print(_timing.markdown_table(["method", "processes x threads", "images/s", "vs 1 process", "ms/step",
                                  "communication ms/step"], rows))


if __name__ == "__main__":
    main()
