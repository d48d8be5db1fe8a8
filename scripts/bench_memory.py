"""Peak memory of a streaming benchmark as it grows: whole runs of ``image-folder`` (training and
evaluation) over folders of 1,000 to 10,000 generated images, side by side in one run, and the
cost of the content hash a checkpoint records.

For each folder size, in fresh processes:

- ``run``: ``python -m mammoth dataset=image-folder model=simplecil backbone=timm`` (every task
  trained and evaluated on every task seen so far, as a user runs it; ``--overrides`` adds to or
  replaces these settings), its peak RSS read by ``os.wait4`` when it ends; with ``--baseline
  DIR`` (a folder holding another version's ``mammoth`` package, e.g. ``git archive <commit>
  mammoth | tar -x -C DIR``), the same run with that version too, side by side;
- ``epoch``: one epoch of every task's training data through ``TrainingContext.batches``
  (decoding, the 224-pixel random resized crop and flip, normalisation; no model), its peak RSS;
- ``hash``: the seconds :func:`mammoth.datasets.image_files.files_fingerprint` takes over the
  folder (every file read once and hashed; the files were just written, so they are in the page
  cache: a cold disk adds its read time); with ``--hash-kb K``, also over 10,000 files of K KB
  (CUB-200's JPEGs average about 100 KB).

The last rows give MB per 1,000 images between the smallest and the largest folder: a streamed
benchmark holds paths, labels and one sha256 row per file, not images, so its peak should barely
grow with the number of images.

Usage: ``python scripts/bench_memory.py [--sizes 1000,3000,10000] [--image-size 28] [--classes 10]
[--batch-size 32] [--model simplecil] [--backbone timm] [--overrides "backbone.depth=1 ..."]
[--baseline DIR] [--skip-epoch] [--hash-kb 100]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,3000,10000", help="images in each folder, comma-separated")
    parser.add_argument("--image-size", type=int, default=28, help="side of every generated image, in pixels")
    parser.add_argument("--classes", type=int, default=10, help="class folders (5 tasks)")
    parser.add_argument("--batch-size", type=int, default=32, help="dataset.batch_size (image-folder's default)")
    parser.add_argument("--model", default="simplecil")
    parser.add_argument("--backbone", default="timm")
    parser.add_argument("--overrides", default="", help="more overrides of the runs, space-separated")
    parser.add_argument("--baseline", help="a folder holding another version's mammoth package, run side by side")
    parser.add_argument("--skip-epoch", action="store_true", help="measure whole runs only")
    parser.add_argument("--hash-kb", type=int, default=0, help="also time the content hash of 10,000 files of this size")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sizes = [int(size) for size in args.sizes.split(",")]
    return args


def write_images(root: Path, n: int, classes: int, size: int) -> None:
    """``root/class<k>/<i>.jpg`` or ``.png`` (alternating): ``n`` random-noise images of
    ``size`` x ``size``, spread over the classes."""
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(0)
    for index in range(n):
        folder = root / f"class{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = generator.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.{'png' if index % 2 else 'jpg'}")


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def epoch_child(root: str, batch_size: int) -> None:
    """Build the benchmark, iterate one epoch of every task, print the peak as JSON."""
    import torch

    from mammoth.datasets import build_dataset
    from mammoth.engine.context import build_context

    torch.set_num_threads(1)
    dataset = build_dataset({"name": "image-folder", "root": root, "batch_size": batch_size})
    context = build_context(dataset, "cpu", torch.Generator().manual_seed(0))
    images = 0
    for task in range(dataset.n_tasks):
        for batch in context.batches(dataset.task_source(task)):
            images += len(batch.labels)
    print(json.dumps({"images": images, "peak": peak_rss_mb()}))


def measure_epoch(root: Path, batch_size: int) -> dict:
    """Run :func:`epoch_child` in a fresh interpreter and read its JSON line."""
    output = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(root), "--batch-size", str(batch_size)],
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def measure_run(root: Path, run_dir: Path, args: argparse.Namespace, package: str | None = None) -> dict:
    """``python -m mammoth`` on the folder in a fresh process (importing mammoth from ``package``,
    a folder, when given): its peak RSS (``os.wait4``), its wall time and what its results.json says."""
    command = [sys.executable, "-m", "mammoth", "dataset=image-folder", f"dataset.root={root}",
               f"dataset.batch_size={args.batch_size}", f"model={args.model}", f"backbone={args.backbone}",
               "device=cpu", "threads=1", *args.overrides.split(), f"hydra.run.dir={run_dir}"]
    environment = dict(os.environ, **({"PYTHONPATH": os.path.abspath(package)} if package else {}))
    run_dir.mkdir(parents=True)
    started = time.perf_counter()
    with open(run_dir.parent / f"{run_dir.name}.out", "w") as log:
        # started in the scratch folder: python -m puts the working directory first on sys.path
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=run_dir.parent)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        tail = (run_dir.parent / f"{run_dir.name}.out").read_text().strip().splitlines()[-3:]
        raise SystemExit(f"{' '.join(command)} failed: {' / '.join(tail)}")
    results = json.loads((run_dir / "results.json").read_text())
    return {"peak": usage.ru_maxrss / 1024, "seconds": seconds, "status": results["status"],
            "class_il": results["class_il"]["average"]}


def time_hash(root: Path) -> float:
    """Seconds :func:`files_fingerprint` takes over every image of ``root`` (both splits)."""
    from mammoth.datasets.image_files import files_fingerprint, list_image_folder

    paths, labels, _ = list_image_folder(root)
    started = time.perf_counter()
    files_fingerprint(root, paths, labels)
    return time.perf_counter() - started


def time_hash_of_files(scratch: Path, kilobytes: int, n: int = 10_000) -> float:
    """Seconds :func:`time_hash` takes over ``n`` files of ``kilobytes`` KB of random bytes (never decoded)."""
    root = scratch / f"hash{kilobytes}kb"
    block = os.urandom(kilobytes * 1000 + n)
    for index in range(n):
        folder = root / f"class{index % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{index}.jpg").write_bytes(block[index : index + kilobytes * 1000])
    return time_hash(root)


def folder_mb(root: Path) -> float:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file()) / 1e6


def slope(rows: list[dict], key: str) -> float:
    """MB per 1,000 images between the smallest and the largest folder."""
    first, last = rows[0], rows[-1]
    return 1000 * (last[key] - first[key]) / (last["n"] - first["n"])


def main() -> None:
    args = parse_args()
    if args.child:
        epoch_child(args.child, args.batch_size)
        return
    _timing.print_header("Peak RSS of a streaming image-folder benchmark as it grows (whole runs, evaluation included)",
                         {"images": f"{args.image_size}x{args.image_size} random-noise JPEG and PNG, decoded to 224x224",
                          "classes": f"{args.classes} (5 tasks, 20% of each class as test data)",
                          "run": f"model={args.model} backbone={args.backbone} dataset.batch_size={args.batch_size} "
                                 f"device=cpu threads=1 {args.overrides}".strip(),
                          "baseline": args.baseline or "none"})
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_memory.") as scratch:
        for n in args.sizes:
            root = Path(scratch) / f"n{n}"
            write_images(root, n, args.classes, args.image_size)
            row = {"n": n, "hash": time_hash(root), "mb": folder_mb(root)}
            row.update(measure_run(root, Path(scratch) / f"run{n}", args))
            if args.baseline:
                baseline = measure_run(root, Path(scratch) / f"baseline{n}", args, args.baseline)
                row.update(baseline_peak=baseline["peak"], baseline_class_il=baseline["class_il"])
            if not args.skip_epoch:
                row["epoch"] = measure_epoch(root, args.batch_size)["peak"]
            rows.append(row)
            print(f"{n} images: {json.dumps(row)}", file=sys.stderr, flush=True)
        hashed = time_hash_of_files(Path(scratch), args.hash_kb) if args.hash_kb else None
    epoch, baseline = not args.skip_epoch, bool(args.baseline)

    def peaks(row: dict) -> list[str]:
        return [f"{row['peak']:.0f}", *([f"{row['baseline_peak']:.0f}"] if baseline else []),
                *([f"{row['epoch']:.0f}"] if epoch else [])]

    table = [[f"{row['n']:,}", *peaks(row), f"{row['seconds']:.0f}",
              f"{row['class_il']:.1f}" + (f" ({row['baseline_class_il']:.1f})" if baseline else ""),
              f"{row['hash']:.2f} ({row['mb']:.0f} MB)"] for row in rows]
    if len(rows) > 1:
        keys = ["peak", *(["baseline_peak"] if baseline else []), *(["epoch"] if epoch else [])]
        table.append(["MB per 1,000 images", *(f"{slope(rows, key):.1f}" for key in keys), "", "", ""])
    print(_timing.markdown_table(["images in the folder", "peak RSS of the run (MB)",
                                  *(["baseline's run (MB)"] if baseline else []),
                                  *(["one epoch, no model (MB)"] if epoch else []),
                                  "run (s)", "Class-IL average" + (" (baseline's)" if baseline else ""),
                                  "content hash (s, files read)"], table))
    largest = rows[-1]
    print(f"\nContent hash: {10_000 * largest['hash'] / largest['n']:.2f} s per 10,000 images of this size "
          f"({largest['mb'] / largest['hash']:.0f} MB/s from the page cache).")
    if hashed is not None:
        print(f"Content hash of 10,000 files of {args.hash_kb} KB ({10 * args.hash_kb} MB): {hashed:.2f} s "
              f"({10 * args.hash_kb / hashed:.0f} MB/s from the page cache).")
    decoded = largest["n"] * 3 * 224 * 224 / 2**20
    print(f"For scale: the {largest['n']:,} images decoded once into one uint8 tensor at 224x224 would take {decoded:.0f} MB.")


if __name__ == "__main__":
    main()
