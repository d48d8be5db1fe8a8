"""The GPU figures of issue 24 §6, prepared to run in one call of a few minutes on a lent GPU, offline.

1. seq-cifar10 with resnet18 (the dataset's default backbone), one epoch of every task, ``model=er``
   and ``model=der`` (buffer 500), each ``python -m mammoth`` run as a user runs it, under
   fp32, bf16, fp16 and ``compile=true``: training images/s over the whole run and over tasks 3-5
   (steady state: the compiled graphs, and er/der's replay batch shapes, exist by then), and the
   GPU busy fraction (``nvidia-smi``'s utilization, sampled every 200 ms while the run lives; it
   includes start-up and evaluation). The data are a fake CIFAR-10 in the real on-disk format
   (tests/fake_datasets.py), written first: 50,000 training and 10,000 test images, as the real
   one has; nothing is downloaded.
2. l2p on a ViT-B/16-sized timm model (``vit_base_patch16_224``, random init: nothing is
   downloaded) at 224 pixels, one training step of the harness on a fixed batch (as
   scripts/bench_pretrained.py times it), fp32 / bf16 / fp16: images/s. (l2p refuses
   ``compile=true``: it runs the ViT block by block.)

The original Mammoth's same epoch is not run: it is not on the device machine (copy a checkout
next to this one and run ``python main.py --model er --dataset seq-cifar10 --buffer_size 500
--lr 0.1 --n_epochs 1`` for the comparison).

``--quick`` runs everything tiny on the CPU (40 training images per task on a 32-unit mnistmlp,
l2p on a 1-block ViT-B/16, batch 2), to check the script before a GPU is lent; it prints the same
tables with the CPU's figures. Usage:
``python scripts/gpu_check.py [--quick] [--runs er-fp32,der-compile,...] [--skip-l2p] [--work DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))

import _timing  # noqa: E402

#: run name -> extra overrides of python -m mammoth
RUNS = {
    "er-fp32": ("model=er",),
    "er-bf16": ("model=er", "precision=bf16"),
    "er-fp16": ("model=er", "precision=fp16"),
    "er-compile": ("model=er", "compile=true"),
    "der-fp32": ("model=der",),
    "der-bf16": ("model=der", "precision=bf16"),
    "der-compile": ("model=der", "compile=true"),
}
CPU_RUNS = ("er-fp32", "er-bf16", "er-compile")  # fp16 is CUDA's; --quick keeps the CPU's run short


def write_data(root: Path, quick: bool) -> None:
    """The fake CIFAR-10 files under ``root`` (real format; 10,000 images per training batch file)."""
    from fake_datasets import write_cifar10  # lazy: tests/ helper, only when the data are written

    if (root / "cifar-10-batches-py" / "test_batch").exists():
        return
    write_cifar10(root, n_per_batch=40 if quick else 10_000, n_test=40 if quick else 10_000)


class BusySampler:
    """``nvidia-smi``'s GPU utilization (%) sampled every 200 ms until stopped; None without nvidia-smi."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.process = None
        if shutil.which("nvidia-smi"):
            self.process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "200", "-i", "0"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            try:
                self.samples.append(float(line.strip()))
            except ValueError:
                pass

    def stop(self) -> float | None:
        if self.process is None:
            return None
        self.process.terminate()
        self.process.wait()
        self.thread.join(timeout=2)
        return statistics.mean(self.samples) / 100 if self.samples else None


def run_mammoth(name: str, overrides: tuple[str, ...], data: Path, work: Path, quick: bool) -> list[str]:
    """One python -m mammoth run; its table row."""
    run_dir = work / name
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [sys.executable, "-m", "mammoth", "dataset=seq-cifar10", f"dataset.root={data}", "dataset.n_epochs=1",
               f"model.buffer_size={50 if quick else 500}", "model.lr=0.03", f"hydra.run.dir={run_dir}",
               f"device={'cpu' if quick else 'cuda'}", "seed=0", *overrides]
    if quick:  # inductor compiles resnet18's step for minutes on a small CPU: the script's check needs no resnet
        command += ["backbone=mnistmlp", "backbone.hidden_sizes=[32]"]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    sampler = BusySampler()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=work, env=environment, capture_output=True, text=True)
    wall = time.perf_counter() - started
    busy = sampler.stop()
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        print(f"... {name} failed: {last}", file=sys.stderr, flush=True)
        return [name, "failed", "", "", "", f"{wall:.0f}", last[:80]]
    results = json.loads((run_dir / "results.json").read_text())
    per_task = (200 if quick else 50_000) // 5  # training images per task (5 tasks of 2 classes)
    seconds = results["timings"]["train_seconds"]
    overall = per_task * len(seconds) / sum(seconds)
    steady = per_task * len(seconds[2:]) / sum(seconds[2:])
    average = results["class_il"]["average"] if "average" in results["class_il"] else ""
    print(f"... {name} done in {wall:.0f} s", file=sys.stderr, flush=True)
    return [name, f"{overall:.0f}", f"{steady:.0f}", "-" if busy is None else f"{busy:.2f}",
            f"{seconds[0]:.1f}", f"{wall:.0f}", f"{average:.1f}" if average != "" else ""]


def l2p_rows(quick: bool) -> list[list[str]]:
    """l2p's training step on a ViT-B/16-sized random-init timm model, per precision: images/s."""
    import torch  # lazy: the runs above are subprocesses; this part runs in this process

    from bench_pretrained import SyntheticImages  # lazy: the benchmark's synthetic 224-pixel data
    from mammoth.backbones import build_backbone
    from mammoth.engine.context import build_context
    from mammoth.models import build_model

    device = "cpu" if quick else "cuda"
    batch = 2 if quick else 32
    precisions = ("fp32", "bf16") if quick else ("fp32", "bf16", "fp16")
    rows = []
    for precision in precisions:
        dataset = SyntheticImages({"batch_size": batch})
        torch.manual_seed(0)
        arguments = {"model_args": {"depth": 1}} if quick else {}
        net = build_backbone("timm", name="vit_base_patch16_224", num_classes=dataset.n_classes,
                             input_shape=dataset.input_shape, **arguments).to(device)
        model = build_model("l2p", net=net, dataset=dataset).to(device)
        context = build_context(dataset, device, torch.Generator().manual_seed(0), precision=precision)
        step, _ = _timing.observe_step(model, context, dataset.task_source(0), batch)

        sync = torch.cuda.synchronize if device == "cuda" else None
        samples = _timing.interleaved({precision: step}, repetitions=2 if quick else 20, warmup=1 if quick else 3, sync=sync)
        seconds = statistics.median(samples[precision])
        rows.append([f"l2p {precision}", f"{batch / seconds:.1f}", f"{seconds * 1e3:.1f}", str(batch)])
        print(f"... l2p {precision} done", file=sys.stderr, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny, on the CPU: checks the script, not the GPU")
    parser.add_argument("--runs", default=None, help=f"comma-separated, of {', '.join(RUNS)}")
    parser.add_argument("--skip-l2p", action="store_true")
    parser.add_argument("--work", default=None, help="where the data and the runs go (default: a temporary directory)")
    args = parser.parse_args()
    names = args.runs.split(",") if args.runs else list(CPU_RUNS if args.quick else RUNS)
    unknown = [name for name in names if name not in RUNS]
    if unknown:
        parser.error(f"unknown run {unknown[0]!r}; allowed: {', '.join(RUNS)}")
    import torch  # lazy: the header names the card

    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (CPU)"
    if not args.quick and not torch.cuda.is_available():
        print("no CUDA device here; run with --quick on a CPU", file=sys.stderr)
        return 2
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    _timing.print_header("GPU check: seq-cifar10 er/der epochs, l2p steps", {
        "card": card, "torch": torch.__version__, "quick": args.quick, "work": work})
    data = work / "data"
    started = time.perf_counter()
    write_data(data, args.quick)
    print(f"... fake CIFAR-10 written in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    rows = [run_mammoth(name, RUNS[name], data, work, args.quick) for name in names]
    setup = "mnistmlp (32 units), buffer 50, 40 images a task" if args.quick else "resnet18, buffer 500"
    print(f"## seq-cifar10, {setup}, one epoch per task, batch 32\n")
    print(_timing.markdown_table(["run", "images/s", "images/s tasks 3-5", "GPU busy", "task 1 s (compile incl.)",
                                  "wall s", "class-IL avg"], rows))
    if not args.skip_l2p:
        print("\n## l2p on vit_base_patch16_224 (random init), 224 px, one training step\n")
        print(_timing.markdown_table(["step", "images/s", "ms/step", "batch"], l2p_rows(args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
