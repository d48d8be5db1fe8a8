"""Benchmark the end-to-end time of a DER run on Sequential Fashion-MNIST, as a subprocess.

Times ``python -m mammoth dataset=seq-fashion-mnist dataset.root=ROOT model=der
model.buffer_size=500 dataset.batch_size=64 dataset.n_epochs=1 hydra.run.dir=TMP`` (5 tasks,
one epoch each, mnistmlp: the dataset's defaults, set explicitly) twice per round, with
torch's default intra-op threads and with ``OMP_NUM_THREADS=1``, side by side with the floor
``python -c "import torch, hydra"``; all three interleaved (rotating order), median of N runs
(default 5). Target: at most 5.0 s end to end (a third of the ~15 s the original argparse
Mammoth takes for the same run).

Then one instrumented run per thread setting (the same ``python -m mammoth``, run through
``runpy`` with timers around mammoth's phases) shows where the time goes: interpreter start-up,
imports, data loading, model building, training per task, evaluation, checkpoints, plot and
results writing; next to the run's own ``results.json`` timings.

ROOT: ``--root PATH`` (the real files, ``PATH/FashionMNIST/raw/*-ubyte``), else full-size
synthetic files (60,000 train / 10,000 test 28x28 images, real IDX format, written with
``tests/fake_datasets.write_idx``) in a temporary directory.

Usage: ``python scripts/bench_run.py [--root PATH] [--runs N] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import _timing  # noqa: E402

TARGET_S = 5.0
ORIGINAL_S = 15.0
OVERRIDES = [
    "dataset=seq-fashion-mnist", "model=der", "model.buffer_size=500",
    "dataset.batch_size=64", "dataset.n_epochs=1",
]
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
REFERENCE = "python -c 'import torch, hydra'"

# Runs `python -m mammoth ARGS` in this process (as runpy, like -m does) with timers around
# mammoth's phases; writes {"phases": {name: [seconds, ...]}, "imported": {...}, ...} to $BENCH_OUT.
INSTRUMENTED = r"""
import time
T0 = time.perf_counter()
import json, os, runpy, sys
NOTABLE = ("torchvision", "torch._dynamo", "matplotlib", "sklearn", "PIL")
phases, imported, marks = {}, {}, {}

def timed(owner, attribute, phase):
    original = getattr(owner, attribute)
    def wrapper(*args, **kwargs):
        before = {m for m in NOTABLE if m in sys.modules}
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            phases.setdefault(phase, []).append(time.perf_counter() - start)
            new = [m for m in NOTABLE if m in sys.modules and m not in before]
            if new:
                imported.setdefault(phase, []).extend(new)
    setattr(owner, attribute, wrapper)

import torch, hydra
marks["import torch + hydra"] = time.perf_counter() - T0
import mammoth, mammoth.backbones, mammoth.datasets, mammoth.datasets.base, mammoth.models, mammoth.reporting.results, mammoth.engine.loop
marks["import mammoth"] = time.perf_counter() - T0 - marks["import torch + hydra"]

def import_torchvision_first(original):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        import torch._dynamo  # noqa: F401  (torchvision imports it; torch.optim would import it anyway)
        middle = time.perf_counter()
        import torchvision.datasets  # noqa: F401  (what read_idx_dataset imports first)
        phases.setdefault("data: import torch._dynamo", []).append(middle - start)
        phases.setdefault("data: import torchvision", []).append(time.perf_counter() - middle)
        return original(*args, **kwargs)
    return wrapper

import mammoth.datasets.mnist as mnist
mnist.read_idx_dataset = import_torchvision_first(mnist.read_idx_dataset)
timed(mammoth.datasets.base.ContinualDataset, "source", "data: read files + task splits")
timed(mammoth.backbones, "build_backbone", "build backbone")
timed(mammoth.models, "build_model", "build model (+ optimizer)")
timed(mammoth.engine.loop, "train_task", "training")
timed(mammoth.engine.loop, "evaluate_tasks", "evaluation")
timed(mammoth.engine.loop, "save_checkpoint", "checkpoints")
timed(mammoth.reporting.results, "plot_results", "plot (results.png)")
timed(mammoth.reporting.results, "write_json_atomic", "results.json")
timed(mammoth, "run", "mammoth.run")
sys.argv = ["mammoth", *sys.argv[1:]]
try:
    runpy.run_module("mammoth", run_name="__main__", alter_sys=True)
finally:
    marks["in-process total"] = time.perf_counter() - T0
    with open(os.environ["BENCH_OUT"], "w") as f:
        json.dump({"phases": phases, "imported": imported, "marks": marks}, f)
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None,
                        help="dataset.root holding FashionMNIST/raw/ (default: write synthetic files to a temp dir)")
    parser.add_argument("--runs", type=int, default=None, help="runs of each command (default 5, --quick 2)")
    parser.add_argument("--quick", action="store_true", help="2 runs each: a smoke run, not a measurement")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the instrumented runs")
    return parser.parse_args()


def write_synthetic_fashion(root: Path, n_train: int = 60_000, n_test: int = 10_000, seed: int = 0) -> Path:
    """Full-size Fashion-MNIST stand-ins in the real IDX format: each class is a fixed random
    28x28 pattern plus noise, so the run learns something; labels are shuffled."""
    import numpy as np
    from fake_datasets import write_idx

    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, size=(10, 28, 28)).astype(np.int16)
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        noise = rng.integers(-60, 61, size=(n, 28, 28), dtype=np.int16)
        images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", 2051, images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", 2049, labels)
    return raw


def environment(threads: str) -> dict[str, str]:
    """This process's environment with the thread variables removed ("default") or set to ``threads``."""
    env = {key: value for key, value in os.environ.items() if key not in THREAD_VARIABLES}
    if threads != "default":
        env["OMP_NUM_THREADS"] = threads
    return env


def run_mammoth(root: str, work: Path, threads: str, index: int) -> tuple[float, dict]:
    """Wall seconds of one ``python -m mammoth`` run, and its results.json timings."""
    out = work / f"run-{threads}-{index}"
    command = [sys.executable, "-m", "mammoth", *OVERRIDES, f"dataset.root={root}", f"hydra.run.dir={out}"]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=work, env=environment(threads), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0 or not (out / "results.json").is_file():
        sys.exit(f"mammoth failed (exit {result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
    return seconds, json.loads((out / "results.json").read_text())


def run_reference(work: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, hydra"], cwd=work, env=environment("default"), check=True)
    return time.perf_counter() - start


def instrumented(root: str, work: Path, threads: str) -> tuple[float, dict, dict]:
    """One timed run through the instrumented wrapper: (wall s, phase report, results.json)."""
    out = work / f"instrumented-{threads}"
    report = work / f"instrumented-{threads}.json"
    env = {**environment(threads), "BENCH_OUT": str(report)}
    command = [sys.executable, "-c", INSTRUMENTED, *OVERRIDES, f"dataset.root={root}", f"hydra.run.dir={out}"]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0 or not (out / "results.json").is_file():
        sys.exit(f"instrumented run failed (exit {result.returncode})\n{result.stderr[-3000:]}")
    return seconds, json.loads(report.read_text()), json.loads((out / "results.json").read_text())


def interpreter_start(work: Path) -> float:
    """Median wall seconds of ``python -c pass`` (3 runs)."""
    walls = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], cwd=work, check=True)
        walls.append(time.perf_counter() - start)
    return statistics.median(walls)


def breakdown_rows(wall: float, report: dict, results: dict, start_s: float) -> list[tuple[str, float, str]]:
    """(phase, seconds, note) rows that add up to ``wall``; ``start_s``: a bare interpreter's start and exit."""
    phases, marks, imported = report["phases"], report["marks"], report["imported"]
    total = lambda name: sum(phases.get(name, []))  # noqa: E731
    run_s = total("mammoth.run")
    before_run = marks["in-process total"] - run_s  # imports, CLI checks, Hydra compose; teardown after
    note = lambda name: ("imports " + ", ".join(imported[name])) if imported.get(name) else ""  # noqa: E731
    rows = [
        ("interpreter start-up (python -c pass)", start_s, ""),
        ("interpreter exit (tearing down torch & co.)", wall - marks["in-process total"] - start_s, ""),
        ("import torch + hydra", marks["import torch + hydra"], ""),
        ("import mammoth", marks["import mammoth"], ""),
        ("CLI checks + Hydra compose (+ logging setup)",
         before_run - marks["import torch + hydra"] - marks["import mammoth"], ""),
    ]
    inside = ["data: import torch._dynamo", "data: import torchvision", "data: read files + task splits", "build backbone",
              "build model (+ optimizer)", "training", "evaluation", "checkpoints", "plot (results.png)", "results.json"]
    for name in inside:
        if name == "training":
            per_task = ", ".join(f"{s:.2f}" for s in phases.get(name, []))
            rows.append((f"training ({len(phases.get(name, []))} tasks)", total(name), f"per task: {per_task}"))
        elif name == "data: read files + task splits":  # its time includes the two imports above
            rows.append((name, total(name) - total("data: import torchvision") - total("data: import torch._dynamo"), ""))
        else:
            rows.append((name, total(name), note(name)))
    rows.append(("other inside mammoth.run", run_s - sum(total(name) for name in inside[2:]), ""))
    timings = results.get("timings", {})
    rows.append(("= wall (end to end)", wall,
                 f"results.json: train {sum(timings.get('train_seconds', [])):.2f}, eval "
                 f"{sum(timings.get('eval_seconds', [])):.2f}, total {timings.get('total_seconds', float('nan')):.2f}"))
    return rows


def main() -> int:
    args = parse_args()
    runs = args.runs or (2 if args.quick else 5)
    import torch  # only to report the default thread count; the runs are subprocesses

    with tempfile.TemporaryDirectory(prefix="bench_run_") as temp:
        work = Path(temp)
        if args.root:
            root, source = args.root, f"--root {args.root} (files as given)"
        else:
            started = time.perf_counter()
            write_synthetic_fashion(work / "data")
            root = str(work / "data")
            source = f"synthetic full-size IDX files (60,000 / 10,000), written in {time.perf_counter() - started:.1f} s"
        _timing.print_header(
            "End-to-end run: DER on seq-fashion-mnist (5 tasks x 1 epoch, mnistmlp, batch 64)",
            {
                "torch": torch.__version__,
                "torch default threads": f"{torch.get_num_threads()} (os.cpu_count()={os.cpu_count()}); "
                                         f"{' '.join(f'{v}={os.environ[v]}' for v in THREAD_VARIABLES if v in os.environ) or 'no thread variables set'}",
                "mammoth command": f"`python -m mammoth {' '.join(OVERRIDES)} dataset.root=ROOT hydra.run.dir=TMP`",
                "ROOT": source,
                "runs": f"{runs} of each, interleaved (rotating order)"
                        + (" (--quick: smoke run, numbers not meaningful)" if args.quick else ""),
            },
        )
        candidates = {
            "mammoth, default threads": lambda i: run_mammoth(root, work, "default", i),
            "mammoth, OMP_NUM_THREADS=1": lambda i: run_mammoth(root, work, "1", i),
            REFERENCE: lambda i: (run_reference(work), None),
        }
        names = list(candidates)
        walls = {name: [] for name in names}
        results = {name: [] for name in names}
        for index in range(runs):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                seconds, result = candidates[name](index)
                walls[name].append(seconds)
                results[name].append(result)
                print(f"  run {index + 1}/{runs}: {name}: {seconds:.2f} s", file=sys.stderr, flush=True)

        reference = statistics.median(walls[REFERENCE])
        rows = []
        for name in names:
            med = statistics.median(walls[name])
            timings = [r["timings"] for r in results[name] if r]
            train = f"{statistics.median(sum(t['train_seconds']) for t in timings):.2f}" if timings else "-"
            evaluation = f"{statistics.median(sum(t['eval_seconds']) for t in timings):.2f}" if timings else "-"
            inside = f"{statistics.median(t['total_seconds'] for t in timings):.2f}" if timings else "-"
            accuracy = f"{statistics.median(r['class_il']['average'] for r in results[name] if r):.2f}" if timings else "-"
            rows.append([name, f"{med:.2f}", f"{min(walls[name]):.2f}", f"{_timing.spread(walls[name]):.2f}",
                         f"{med - reference:+.2f}" if name != REFERENCE else "-", train, evaluation, inside, accuracy])
        print(_timing.markdown_table(
            ["command", "median s", "min s", "IQR/median", "minus reference s", "train s (5 tasks)", "eval s",
             "run() s", "Class-IL avg"], rows))

        print(f"\nTarget: end to end <= {TARGET_S:.1f} s (a third of the ~{ORIGINAL_S:.0f} s of the original Mammoth):\n")
        verdicts = []
        for name in names[:2]:
            med = statistics.median(walls[name])
            verdicts.append(med <= TARGET_S)
            print(f"- {'PASS' if med <= TARGET_S else 'MISS'}  {name}: {med:.2f} s "
                  f"(= {med / ORIGINAL_S:.2f}x the original's ~{ORIGINAL_S:.0f} s; `import torch, hydra` alone: {reference:.2f} s)")
        default, single = (statistics.median(walls[name]) for name in names[:2])
        print(f"\nOMP_NUM_THREADS=1 vs default threads: {default / single:.2f}x faster end to end "
              f"({default:.2f} s -> {single:.2f} s); training alone: "
              f"{rows[0][5]} s -> {rows[1][5]} s")

        if not args.no_breakdown:
            columns = {}
            start_s = interpreter_start(work)
            for threads in ("default", "1"):
                wall, report, result = instrumented(root, work, threads)
                columns[threads] = breakdown_rows(wall, report, result, start_s)
            print("\nBreakdown of one instrumented run per thread setting (seconds):\n")
            table = []
            for (phase, default_s, note), (_, single_s, note1) in zip(columns["default"], columns["1"]):
                notes = note if note == note1 else f"default: {note}; 1 thread: {note1}"
                table.append([phase, f"{default_s:.2f}", f"{single_s:.2f}", notes])
            print(_timing.markdown_table(["phase", "default threads", "OMP_NUM_THREADS=1", "note"], table))
            print("\n(instrumented: the same `python -m mammoth`, run via runpy with timers around mammoth's "
                  "functions; 'imports X' = first imported during that phase)")
        print(f"\n{sum(verdicts)}/{len(verdicts)} targets met" + (" (--quick: indicative only)" if args.quick else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
