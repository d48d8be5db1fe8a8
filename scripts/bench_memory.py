"""Peak memory of a streaming benchmark as it grows: one epoch of ``image-folder`` over N and 10N
generated JPEGs of the same size, side by side in one run.

Each size runs in a fresh process (``python scripts/bench_memory.py --child ROOT``) that builds
the benchmark, iterates one epoch of every task's training data through
``TrainingContext.batches`` (decoding, the original's 224-pixel random-resized-crop and flip,
normalisation; no model) and reports its peak RSS (``ru_maxrss``) before and after the epoch.
The table gives both and the ratio of the peaks (10N / N): a streaming benchmark holds paths
and labels, not images, so 10x more images should raise the peak by little.

Usage: ``python scripts/bench_memory.py [--n 200] [--size 160] [--classes 10] [--batch-size 32]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="images of the small benchmark (the large one has 10x)")
    parser.add_argument("--size", type=int, default=160, help="side of every generated JPEG, in pixels")
    parser.add_argument("--classes", type=int, default=10, help="class folders (5 tasks)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args()


def write_jpegs(root: Path, n: int, classes: int, size: int) -> None:
    """``root/class<k>/<i>.jpg``: ``n`` random-noise JPEGs of ``size`` x ``size``, spread over the classes."""
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(0)
    for index in range(n):
        folder = root / f"class{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = generator.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.jpg", quality=90)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(root: str, batch_size: int) -> None:
    """Build the benchmark, iterate one epoch of every task, print the peaks as JSON."""
    import torch

    from mammoth.datasets import build_dataset
    from mammoth.engine.context import build_context

    torch.set_num_threads(1)
    dataset = build_dataset({"name": "image-folder", "root": root, "batch_size": batch_size})
    context = build_context(dataset, "cpu", torch.Generator().manual_seed(0))
    dataset.sources()
    before = peak_rss_mb()
    images = 0
    for task in range(dataset.n_tasks):
        for batch in context.batches(dataset.task_source(task)):
            images += len(batch.labels)
    print(json.dumps({"images": images, "before": before, "peak": peak_rss_mb()}))


def measure(root: Path, batch_size: int) -> dict:
    """Run :func:`child` in a fresh interpreter and read its JSON line."""
    output = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(root), "--batch-size", str(batch_size)],
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.child:
        child(args.child, args.batch_size)
        return
    _timing.print_header("Peak RSS of one epoch of a streaming image-folder benchmark, N and 10N images",
                         {"image size": f"{args.size}x{args.size} JPEG", "classes": args.classes,
                          "batch size": args.batch_size, "threads": 1})
    with tempfile.TemporaryDirectory(prefix="bench_memory.") as scratch:
        rows = []
        results = []
        for n in (args.n, 10 * args.n):
            root = Path(scratch) / f"n{n}"
            write_jpegs(root, n, args.classes, args.size)
            result = measure(root, args.batch_size)
            results.append(result)
            rows.append([n, result["images"], f"{result['before']:.0f}", f"{result['peak']:.0f}"])
    ratio = results[1]["peak"] / results[0]["peak"]
    rows.append(["10N / N", "", f"{results[1]['before'] / results[0]['before']:.2f}x", f"{ratio:.2f}x"])
    print(_timing.markdown_table(["images in the folder", "images trained (80%)", "peak RSS before the epoch (MB)",
                                  "peak RSS after the epoch (MB)"], rows))
    decoded = 10 * args.n * 3 * 224 * 224 / 2**20
    print(f"\nFor scale: the {10 * args.n} images decoded once into one uint8 tensor at 224x224 would take {decoded:.0f} MB.")


if __name__ == "__main__":
    main()
