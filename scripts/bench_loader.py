"""Images per second and CPU milliseconds per image of the streaming loader at 224 pixels, with 0
and 2 worker processes, against torchvision's ``ImageFolder`` + ``DataLoader`` with the original
Mammoth's transforms and against decoding alone, side by side in one run.

The files: ``--images`` (1,000) Fashion-MNIST images (the Debian package ``dataset-fashion-mnist``,
``/usr/share/datasets/fashion-mnist``), each resized to a random width and height in 96..256
pixels, converted to RGB (``--gray``: kept grayscale, as the data is) and saved as JPEG (even
numbers) or PNG (odd) in ``train/<class>/`` folders. Without that package (or with ``--synthetic``) the files
are generated: smooth random content with a few shapes, same sizes and formats (the header says
which). One sample = one epoch over all files, batch 32:

- ``mammoth, N workers``: ``TrainingContext.batches`` over an ``image-folder`` benchmark of the
  files (seq-imagenet-r's transforms: ``RandomResizedCrop(224, BICUBIC)`` + flip, and the
  ``not_aug_inputs`` resized to 224x224) with ``dataset.num_workers=N``;
- ``torchvision, N workers``: ``torchvision.datasets.ImageFolder`` with the original's training
  transform of seq-imagenet-r (``RandomResizedCrop(224, BICUBIC)``, ``RandomHorizontalFlip``,
  ``ToTensor``, ``Normalize`` with mean 0 and std 1) in a ``DataLoader(num_workers=N)``;
- ``decoding, N workers``: ``ImageFolder``'s loader (PIL open, ``convert("RGB")``) and a bicubic
  resize to 224x224, nothing else (the floor: no augmentation, no tensors).

Candidates run interleaved, in a rotating order; images/s is the median over ``--rounds``, and CPU
ms per image the median of the process's CPU time, workers included (they are reaped at the end
of each epoch). ``--quick``: 200 images, 2 rounds.

``--resize-check`` times nothing: it compares mammoth's resize of every file to 224x224 (torch's
antialiased bicubic on uint8) with the original's (PIL's bicubic): pixels that differ, by how
much, against what re-encoding the PIL result as a JPEG (quality 90) changes, and the accuracy
of a nearest-class-mean classifier on the pixels (the first 80% of the files as training data)
with either resize.

Usage: ``python scripts/bench_loader.py [--images 1000] [--rounds 3] [--quick] [--gray] [--synthetic] [--resize-check]``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import _timing  # noqa: E402
from mammoth.datasets import build_dataset  # noqa: E402
from mammoth.engine.context import build_context  # noqa: E402

BATCH_SIZE = 32
WORKERS = (0, 2)
SIZE = 224
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="200 images, 2 rounds")
    parser.add_argument("--gray", action="store_true", help="save the files grayscale, as the data is (default: RGB)")
    parser.add_argument("--synthetic", action="store_true", help="generated content instead of Fashion-MNIST")
    parser.add_argument("--resize-check", action="store_true", help="compare the resize with PIL's instead of timing")
    args = parser.parse_args()
    if args.quick:
        args.images, args.rounds = 200, 2
    return args


def fashion_mnist(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` training images (n, 28, 28) and labels of Fashion-MNIST's idx files."""
    with gzip.open(FASHION_MNIST / "train-images-idx3-ubyte.gz") as file:
        images = np.frombuffer(file.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION_MNIST / "train-labels-idx1-ubyte.gz") as file:
        labels = np.frombuffer(file.read(), np.uint8, offset=8)
    return images[:n], labels[:n]


def synthetic(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 grayscale images of smooth random content with a bright rectangle, 10 labels."""
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, (n, 7, 7), dtype=np.uint8).repeat(4, 1).repeat(4, 2)
    for image in images:
        top, left = generator.integers(0, 20, 2)
        image[top : top + 8, left : left + 6] = 255
    return images, generator.integers(0, 10, n).astype(np.uint8)


def write_files(root: Path, images: np.ndarray, labels: np.ndarray, rgb: bool) -> None:
    """Each image resized (bicubic) to a random width and height in 96..256, JPEG or PNG by parity,
    in ``root/train/<label>/`` and, one per class, ``root/test/<label>/``."""
    from PIL import Image

    generator = np.random.default_rng(0)
    for index, (pixels, label) in enumerate(zip(images, labels)):
        width, height = (int(side) for side in generator.integers(96, 257, 2))
        image = Image.fromarray(pixels).resize((width, height), Image.BICUBIC)
        image = image.convert("RGB") if rgb else image
        folder = root / "train" / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{index}.{'jpg' if index % 2 == 0 else 'png'}", quality=90)
        test = root / "test" / f"class{label}"
        if not test.is_dir():
            test.mkdir(parents=True)
            image.save(test / "0.png")


def mammoth_epoch(root: Path, workers: int) -> Callable[[], int]:
    dataset = build_dataset({"name": "image-folder", "root": str(root), "n_tasks": 1, "batch_size": BATCH_SIZE,
                             "num_workers": workers})
    context = build_context(dataset, "cpu", torch.Generator().manual_seed(0))
    source = dataset.task_source(0)

    def epoch() -> int:
        return sum(len(batch.labels) for batch in context.batches(source))

    return epoch


def torchvision_epoch(root: Path, workers: int) -> Callable[[], int]:
    """ImageFolder + DataLoader with seq-imagenet-r's TRANSFORM, as the original writes it."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms
    from torchvision.transforms.functional import InterpolationMode

    transform = transforms.Compose([transforms.RandomResizedCrop(SIZE, interpolation=InterpolationMode.BICUBIC),
                                    transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                    transforms.Normalize(mean=(0, 0, 0), std=(1, 1, 1))])
    loader = DataLoader(datasets.ImageFolder(str(root / "train"), transform=transform), batch_size=BATCH_SIZE,
                        shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(0))

    def epoch() -> int:
        return sum(len(batch[1]) for batch in loader)

    return epoch


def decoding_epoch(root: Path, workers: int) -> Callable[[], int]:
    """ImageFolder's loader (PIL open, convert to RGB) and a bicubic resize to 224x224: the floor."""
    from PIL import Image
    from torch.utils.data import DataLoader
    from torchvision import datasets

    def resize(image: "Image.Image") -> "Image.Image":
        return image.resize((SIZE, SIZE), Image.BICUBIC)

    loader = DataLoader(datasets.ImageFolder(str(root / "train"), transform=resize), batch_size=BATCH_SIZE,
                        shuffle=True, num_workers=workers, collate_fn=list, generator=torch.Generator().manual_seed(0))

    def epoch() -> int:
        return sum(len(batch) for batch in loader)

    return epoch


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (the DataLoader's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def interleaved(candidates: dict[str, Callable[[], int]], rounds: int) -> dict[str, list[tuple[float, float]]]:
    """``rounds`` samples of (wall seconds, CPU seconds) of each candidate, in a rotating order."""
    names = list(candidates)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for number in range(rounds):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            cpu, wall = cpu_seconds(), time.perf_counter()
            candidates[name]()
            samples[name].append((time.perf_counter() - wall, cpu_seconds() - cpu))
    return samples


def resize_check(root: Path) -> None:
    """Print how mammoth's resize of each file to 224x224 differs from PIL's, and what that does
    to a nearest-class-mean classifier."""
    import io

    from PIL import Image

    from mammoth.datasets.image_files import Decode, decode_image

    paths = sorted((root / "train").rglob("*.*"), key=lambda path: int(path.stem))
    labels = torch.tensor([int(path.parent.name[5:]) for path in paths])
    ours, theirs, differing, largest, jpeg = [], [], 0, 0, 0.0
    for path in paths:
        with Image.open(path) as file:
            pil = file.convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)
        buffer = io.BytesIO()
        pil.save(buffer, "JPEG", quality=90)
        theirs.append(torch.from_numpy(np.array(pil)).permute(2, 0, 1))
        ours.append(decode_image(path, Decode((SIZE, SIZE))))
        difference = (ours[-1].int() - theirs[-1].int()).abs()
        differing, largest = differing + int((difference > 0).sum()), max(largest, int(difference.max()))
        jpeg += float((torch.from_numpy(np.array(Image.open(buffer))).permute(2, 0, 1).int() - theirs[-1].int()).abs().double().mean())
    total = len(paths) * 3 * SIZE * SIZE
    mean = float(sum((a.int() - b.int()).abs().sum() for a, b in zip(ours, theirs))) / total
    print(f"{len(paths)} files resized to {SIZE}x{SIZE}: {100 * differing / total:.2f}% of the pixels differ from PIL's, "
          f"by at most {largest} of 255 levels (mean {mean:.4f} levels); re-encoding PIL's as a JPEG of quality 90 "
          f"changes it by {jpeg / len(paths):.3f} levels on average")
    cut = int(0.8 * len(paths))
    for name, images in (("mammoth's", ours), ("PIL's", theirs)):
        pixels = torch.stack(images).flatten(1).double() / 255
        means = torch.stack([pixels[:cut][labels[:cut] == label].mean(0) for label in labels[:cut].unique()])
        predicted = labels[:cut].unique()[torch.cdist(pixels[cut:], means).argmin(1)]
        print(f"nearest class mean on {name} resize: {100 * float((predicted == labels[cut:]).double().mean()):.2f}% "
              f"of {len(paths) - cut} files")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    source = "synthetic" if args.synthetic or not FASHION_MNIST.is_dir() else "fashion-mnist"
    images, labels = (synthetic if source == "synthetic" else fashion_mnist)(args.images)
    _timing.print_header("Streaming loader at 224 pixels: images/s and CPU per image, mammoth, torchvision, decoding",
                         {"files": f"{len(images)} {source} images, 96..256 px, JPEG and PNG, "
                                   f"{'grayscale' if args.gray else 'RGB'}"
                                   + ("" if source == "fashion-mnist" or args.synthetic else
                                      f" (generated: no {FASHION_MNIST}; apt-get install dataset-fashion-mnist)"),
                          "batch size": BATCH_SIZE, "rounds": args.rounds, "torch threads": 1})
    with tempfile.TemporaryDirectory(prefix="bench_loader.") as scratch:
        root = Path(scratch)
        write_files(root, images, labels, rgb=not args.gray)
        if args.resize_check:
            resize_check(root)
            return
        candidates: dict[str, Callable[[], int]] = {}
        for workers in WORKERS:
            candidates[f"mammoth, {workers} workers"] = mammoth_epoch(root, workers)
            candidates[f"torchvision, {workers} workers"] = torchvision_epoch(root, workers)
            candidates[f"decoding, {workers} workers"] = decoding_epoch(root, workers)
        counts = {name: epoch() for name, epoch in candidates.items()}  # also the warm-up (page cache)
        assert len(set(counts.values())) == 1, counts
        samples = interleaved(candidates, args.rounds)
    n = len(images)
    floor_cpu = {workers: _timing.median([cpu for _, cpu in samples[f"decoding, {workers} workers"]]) / n
                 for workers in WORKERS}
    speed = {workers: n / _timing.median([wall for wall, _ in samples[f"torchvision, {workers} workers"]])
             for workers in WORKERS}
    rows = []
    for name, values in samples.items():
        workers = int(name.split(", ")[1].split()[0])
        images_per_s = n / _timing.median([wall for wall, _ in values])
        cpu = _timing.median([cpu for _, cpu in values]) / n
        rows.append([name, f"{images_per_s:.1f}", f"{images_per_s / speed[workers]:.2f}x", f"{cpu * 1e3:.2f}",
                     f"{cpu / floor_cpu[workers]:.2f}x"])
    print(_timing.markdown_table(["loader", "images/s", "vs torchvision", "CPU ms / image", "CPU vs decoding"], rows))


if __name__ == "__main__":
    main()
