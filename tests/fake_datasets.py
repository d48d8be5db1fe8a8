"""Tiny fake benchmark files in the REAL on-disk formats, for tests of any suite.

Every image is deterministic and class-dependent: its bottom-right pixel has the value
``fake_pixel(label, channel)`` in every channel, so a test can check that labels survived the read
(exactly for IDX and CIFAR files, within ``JPEG_TOLERANCE`` for Tiny ImageNet's JPEGs). The first
two rows carry a horizontal gradient, so permutations and rotations change the images.
Labels cycle: example ``i`` has label ``i % n_classes`` (shifted per CIFAR-10 batch).
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

JPEG_TOLERANCE = 4
TINY_WNIDS = [f"n{index:08d}" for index in range(200)]


def fake_pixel(label: int, channel: int) -> int:
    """The value of every channel-``channel`` pixel outside the gradient rows of an image of ``label`` (< 200)."""
    if channel == 0:
        return 20 + (label % 20) * 10
    if channel == 1:
        return 20 + (label // 20) * 20
    return 128


def fake_image(label: int, index: int, height: int, width: int, channels: int) -> np.ndarray:
    """One deterministic uint8 image (H, W, C) of class ``label``; ``index`` sets its top-left pixel."""
    image = np.empty((height, width, channels), dtype=np.uint8)
    for channel in range(channels):
        image[:, :, channel] = fake_pixel(label, channel)
    image[:2, :, :] = (np.arange(width, dtype=np.int64) * 9 % 256).astype(np.uint8)[None, :, None]
    image[0, 0, :] = index % 256
    return image


def fake_images(labels: list[int], height: int, width: int, channels: int) -> np.ndarray:
    """A stack (N, H, W, C) of :func:`fake_image` for ``labels``."""
    return np.stack([fake_image(label, index, height, width, channels) for index, label in enumerate(labels)])


def write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an IDX file: big-endian magic, one big-endian uint32 per dim, raw bytes."""
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", size) for size in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(root: str | Path, folder: str = "MNIST", n_train: int = 40, n_test: int = 20) -> Path:
    """Write the four uncompressed MNIST IDX files under ``root/<folder>/raw/``; return that directory.

    ``folder`` is the torchvision class name: "MNIST" or "FashionMNIST".
    """
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = [i % 10 for i in range(n)]
        write_idx(raw / f"{prefix}-images-idx3-ubyte", 2051, fake_images(labels, 28, 28, 1)[..., 0])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", 2049, np.array(labels, dtype=np.uint8))
    return raw


def cifar_entry(labels: list[int], label_key: str, batch_label: str) -> dict:
    """One pickled CIFAR batch: ``data`` is (N, 3072) uint8, channel-major (R plane, G plane, B plane)."""
    images = fake_images(labels, 32, 32, 3)
    return {
        "batch_label": batch_label,
        label_key: labels,
        "data": images.transpose(0, 3, 1, 2).reshape(len(labels), 3072),
        "filenames": [f"fake_{index}.png" for index in range(len(labels))],
    }


def dump(path: Path, entry: dict) -> None:
    """Pickle ``entry`` to ``path`` (protocol 2, like the original archives)."""
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def write_cifar10(root: str | Path, n_per_batch: int = 10, n_test: int = 20) -> Path:
    """Write ``root/cifar-10-batches-py/`` (data_batch_1..5, test_batch, batches.meta); return that directory."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for batch in range(1, 6):
        labels = [(i + batch) % 10 for i in range(n_per_batch)]
        dump(folder / f"data_batch_{batch}", cifar_entry(labels, "labels", f"training batch {batch} of 5"))
    dump(folder / "test_batch", cifar_entry([i % 10 for i in range(n_test)], "labels", "testing batch 1 of 1"))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    dump(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": n_per_batch, "num_vis": 3072})
    return folder


def write_cifar100(root: str | Path, n_train: int = 200, n_test: int = 100) -> Path:
    """Write ``root/cifar-100-python/`` (train, test, meta with fine labels); return that directory."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        labels = [i % 100 for i in range(n)]
        entry = cifar_entry(labels, "fine_labels", name)
        entry["coarse_labels"] = [label // 5 for label in labels]
        dump(folder / name, entry)
    meta = {
        "fine_label_names": [f"fine_{index}" for index in range(100)],
        "coarse_label_names": [f"coarse_{index}" for index in range(20)],
    }
    dump(folder / "meta", meta)
    return folder


def write_jpeg(path: Path, image: np.ndarray) -> None:
    """Save an (H, W, 3) uint8 array as a high-quality JPEG."""
    from PIL import Image

    Image.fromarray(image).save(path, format="JPEG", quality=95)


def write_tinyimagenet(
    root: str | Path, n_train_per_class: int = 1, n_val_per_class: int = 1, val_layout: str = "annotations"
) -> Path:
    """Write ``root/tiny-imagenet-200/`` with 200 wnids (``TINY_WNIDS``); return that directory.

    ``train/<wnid>/images/<wnid>_<i>.JPEG`` (+ ``<wnid>_boxes.txt``), and the val set either in the
    archive's layout (``val_layout="annotations"``: ``val/images/val_<k>.JPEG`` + ``val/val_annotations.txt``)
    or ImageFolder-style (``val_layout="folders"``: ``val/<wnid>/val_<k>.JPEG``).
    """
    if val_layout not in ("annotations", "folders"):
        raise ValueError(f"val_layout={val_layout!r}; allowed: annotations, folders")
    base = Path(root) / "tiny-imagenet-200"
    (base / "train").mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("".join(f"{wnid}\n" for wnid in TINY_WNIDS))
    for label, wnid in enumerate(TINY_WNIDS):
        images = base / "train" / wnid / "images"
        images.mkdir(parents=True, exist_ok=True)
        boxes = []
        for i in range(n_train_per_class):
            write_jpeg(images / f"{wnid}_{i}.JPEG", fake_image(label, i, 64, 64, 3))
            boxes.append(f"{wnid}_{i}.JPEG\t0\t0\t63\t63\n")
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    val = base / "val"
    lines = []
    for k in range(n_val_per_class * len(TINY_WNIDS)):
        label = k % len(TINY_WNIDS)
        wnid = TINY_WNIDS[label]
        directory = val / ("images" if val_layout == "annotations" else wnid)
        directory.mkdir(parents=True, exist_ok=True)
        write_jpeg(directory / f"val_{k}.JPEG", fake_image(label, k, 64, 64, 3))
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63\n")
    if val_layout == "annotations":
        (val / "val_annotations.txt").write_text("".join(lines))
    return base


def label_mismatches(x, y, tolerance: int = 0) -> int:
    """How many images of ``x`` (uint8 tensor N, C, H, W, or float in [0, 1] as a source reads it) do
    not encode their label ``y`` (int tensor N) in their bottom-right pixel, within ``tolerance`` (use
    ``JPEG_TOLERANCE`` for JPEGs)."""
    import torch

    if x.is_floating_point():
        x = x.mul(255).round()
    expected = torch.tensor(
        [[fake_pixel(int(label), channel) for channel in range(x.shape[1])] for label in y], dtype=torch.long
    ).reshape(len(y), x.shape[1])
    difference = (x[:, :, -1, -1].long() - expected).abs()
    return int((difference > tolerance).any(dim=1).sum())
