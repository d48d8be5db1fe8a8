"""Images per second of the streaming loader at 224 pixels, with 0 and 2 worker processes, against
the original Mammoth's loader on the same files, side by side in one run.

The files: ``--images`` generated JPEGs of ``--height`` x ``--width`` (ImageNet-R's photos are of
that order) in ``<class>/*.jpg`` folders. One sample = one epoch over all of them with the
training transform (seq-imagenet-r's: decode, resize, ``RandomResizedCrop(224)`` + flip,
normalise), batch 32:

- ``mammoth, N workers``: ``TrainingContext.batches`` over an ``image-folder`` benchmark of the
  files (every file is training data: they are listed in ``train/`` and ``test/`` alike), with
  ``dataset.num_workers=N``;
- ``original, N workers``: the original's ``MyImagenetR.__getitem__`` (PIL decode, its
  ``not_aug_transform`` and ``TRANSFORM``) through a torch ``DataLoader`` with ``num_workers=N``,
  as its ``create_seeded_dataloader`` builds it. It needs an extracted original checkout
  (``--original PATH``, e.g. ``git -C <mirror> archive HEAD | tar -x -C /tmp/orig-mammoth``);
  without one those rows are skipped and the reason is printed.

Candidates run interleaved (``_timing.interleaved``); the figure is the median over rounds.

Usage: ``python scripts/bench_loader.py [--images 128] [--rounds 3] [--original /tmp/orig-mammoth]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import types
from pathlib import Path
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import _timing  # noqa: E402
from mammoth.datasets import build_dataset  # noqa: E402
from mammoth.engine.context import build_context  # noqa: E402

BATCH_SIZE = 32
WORKERS = (0, 2)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--original", default="/tmp/orig-mammoth", help="an extracted original Mammoth checkout")
    return parser.parse_args()


def write_jpegs(root: Path, n: int, height: int, width: int, classes: int = 4) -> list[Path]:
    """``n`` JPEGs of smooth random content in ``root/train/<class>/`` (and one per class in ``test/``)."""
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(0)
    paths = []
    for index in range(n):
        folder = root / "train" / f"class{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        small = generator.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.BILINEAR)
        image.save(folder / f"{index}.jpg", quality=90)
        paths.append(folder / f"{index}.jpg")
    for label in range(classes):
        (root / "test" / f"class{label}").mkdir(parents=True, exist_ok=True)
        Image.open(paths[label]).save(root / "test" / f"class{label}" / "0.jpg")
    return paths


def mammoth_epoch(root: Path, workers: int) -> Callable[[], int]:
    dataset = build_dataset({"name": "image-folder", "root": str(root), "n_tasks": 1, "batch_size": BATCH_SIZE,
                             "num_workers": workers})
    context = build_context(dataset, "cpu", torch.Generator().manual_seed(0))
    source = dataset.task_source(0)

    def epoch() -> int:
        return sum(len(batch.labels) for batch in context.batches(source))

    return epoch


def original_epoch(checkout: Path, paths: list[Path], workers: int) -> Callable[[], int]:
    """The original's ImageNet-R dataset class over ``paths`` (its split file is bypassed: data and
    targets are set directly), in a DataLoader as the original builds it."""
    if "datasets" not in sys.modules:  # import its modules without datasets/__init__.py (which imports every dataset)
        sys.path.insert(0, str(checkout))
        package = types.ModuleType("datasets")
        package.__path__ = [str(checkout / "datasets")]
        sys.modules["datasets"] = package
    import numpy as np
    from torch.utils.data import DataLoader

    from datasets.seq_imagenet_r import MyImagenetR, SequentialImagenetR  # type: ignore[import-not-found]
    from torchvision import transforms
    from torchvision.transforms.functional import InterpolationMode

    dataset = MyImagenetR.__new__(MyImagenetR)
    dataset.root, dataset.train, dataset.target_transform = str(checkout), True, None
    dataset.transform = SequentialImagenetR.TRANSFORM
    dataset.not_aug_transform = transforms.Compose([transforms.Resize((224, 224), interpolation=InterpolationMode.BICUBIC),
                                                    transforms.ToTensor()])
    dataset.data = np.array([str(path) for path in paths])
    dataset.targets = np.array([int(path.parent.name[5:]) for path in paths])
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))

    def epoch() -> int:
        return sum(len(batch[1]) for batch in loader)

    return epoch


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    _timing.print_header("Streaming loader at 224 pixels: images/s, mammoth and the original",
                         {"files": f"{args.images} JPEGs of {args.height}x{args.width}", "batch size": BATCH_SIZE,
                          "rounds": args.rounds, "torch threads": 1})
    with tempfile.TemporaryDirectory(prefix="bench_loader.") as scratch:
        root = Path(scratch)
        paths = write_jpegs(root, args.images, args.height, args.width)
        candidates = {f"mammoth, {workers} workers": mammoth_epoch(root, workers) for workers in WORKERS}
        checkout = Path(args.original)
        if (checkout / "datasets" / "seq_imagenet_r.py").is_file():
            candidates.update({f"original, {workers} workers": original_epoch(checkout, paths, workers) for workers in WORKERS})
        else:
            print(f"(original rows skipped: no original Mammoth checkout at {checkout}; "
                  "extract one with git archive and pass --original PATH)\n")
        counts = {name: epoch() for name, epoch in candidates.items()}
        assert len(set(counts.values())) == 1, counts
        samples = _timing.interleaved(candidates, repetitions=args.rounds, warmup=0)
    base = _timing.median(samples["mammoth, 0 workers"])
    rows = []
    for name, times in samples.items():
        seconds = _timing.median(times)
        rows.append([name, f"{args.images / seconds:.1f}", f"{seconds:.2f}", f"{_timing.spread(times):.2f}",
                     f"{base / seconds:.2f}x"])
    print(_timing.markdown_table(["loader", "images/s", "epoch (s)", "spread (IQR/median)", "speed vs mammoth, 0 workers"],
                                 rows))


if __name__ == "__main__":
    main()
