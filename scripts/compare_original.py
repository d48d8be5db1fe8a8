"""Run mammoth and the original Mammoth side by side on the same synthetic seq-mnist files.

Neither run downloads anything: the script writes synthetic MNIST-format IDX files (10 classes,
each a fixed random pattern of blobs, drawn with random intensity, shift and noise, so that a
class-IL MLP forgets and replay matters) under ``--data``, then runs each method with the same
flags and seeds in both codebases and prints their final Class-IL averages. With
``--fashion-mnist DIR`` it runs on the real Split Fashion-MNIST instead (DIR holds the four
``*-ubyte.gz`` files, e.g. Debian's ``dataset-fashion-mnist`` in /usr/share/datasets/fashion-mnist),
uncompressed into the MNIST raw layout each codebase reads as seq-mnist.

To rerun (about 30 minutes on 2 CPU cores for every method and 3 seeds; the original's mer, one
example per step, takes most of it)::

    git -C /work/.mirror/aimagelab+mammoth/repo archive HEAD | tar -x -C /tmp/orig
    # the original needs kornia, timm==0.9.8, onedrivedownloader, ftfy, regex, six beside torch:
    pip install --target /tmp/origdeps --no-deps kornia kornia_rs timm==0.9.8 onedrivedownloader ftfy regex wcwidth six
    python scripts/compare_original.py --original /tmp/orig --original-path /tmp/origdeps

The original imports every dataset module at start-up; the ones needing packages that are not
installed (open_clip, ...) must be moved out of ``/tmp/orig/datasets`` first: keep
``__init__.py``, ``seq_mnist.py``, ``perm_mnist.py``, ``rot_mnist.py`` and the folders.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import mean, pstdev

import numpy as np

#: name -> (our overrides, the original's flags); both get the seed and the data root.
RUNS: dict[str, tuple[list[str], list[str]]] = {
    # seq-mnist best arguments of the original's utils/best_args.py (agem, buffer 200)
    "agem": (["model=agem", "model.buffer_size=200", "model.lr=0.1", "model.minibatch_size=128",
              "dataset.batch_size=10", "dataset.n_epochs=1"],
             ["--model", "agem", "--buffer_size", "200", "--lr", "0.1", "--minibatch_size", "128",
              "--batch_size", "10", "--n_epochs", "1"]),
    # the same flags, the replay batch as the original runs it (its --batch_size replaces --minibatch_size)
    "agem-minibatch10": (["model=agem", "model.buffer_size=200", "model.lr=0.1", "model.minibatch_size=10",
                          "dataset.batch_size=10", "dataset.n_epochs=1"], []),
    "gdumb": (["model=gdumb", "model.buffer_size=200", "model.fitting_epochs=32", "dataset.batch_size=32"],
              ["--model", "gdumb", "--buffer_size", "200", "--lr", "0", "--fitting_epochs", "32",
               "--batch_size", "32"]),
    "gdumb-greedy": (["model=gdumb", "model.buffer_size=200", "model.fitting_epochs=32", "dataset.batch_size=32",
                      "model.sampler=greedy"], []),
    # seq-mnist best arguments (mer, buffer 200); the original forces batch_size=1
    "mer": (["model=mer", "model.buffer_size=200", "model.lr=0.1", "model.minibatch_size=128", "model.beta=1",
             "model.gamma=1", "model.batch_num=1", "dataset.batch_size=1", "dataset.n_epochs=1"],
            ["--model", "mer", "--buffer_size", "200", "--lr", "0.1", "--minibatch_size", "128", "--beta", "1",
             "--gamma", "1", "--batch_num", "1", "--batch_size", "1", "--n_epochs", "1"]),
    # the same flags, the replay batch as the original runs it (--batch_size 1 replaces --minibatch_size)
    "mer-minibatch1": (["model=mer", "model.buffer_size=200", "model.lr=0.1", "model.minibatch_size=1", "model.beta=1",
                        "model.gamma=1", "model.batch_num=1", "dataset.batch_size=1", "dataset.n_epochs=1"], []),
    # seq-mnist best arguments of utils/best_args.py, buffer 200 (agem_r, fdr, gss, hal); the original
    # replays --batch_size examples (its --batch_size replaces --minibatch_size): ours with the same
    # minibatch_size as its batch_size, so both replay the same number
    "agem_r": (["model=agem_r", "model.buffer_size=200", "model.lr=0.1", "model.minibatch_size=10",
                "dataset.batch_size=10", "dataset.n_epochs=1"],
               ["--model", "agem_r", "--buffer_size", "200", "--lr", "0.1", "--minibatch_size", "128",
                "--batch_size", "10", "--n_epochs", "1"]),
    "fdr": (["model=fdr", "model.buffer_size=200", "model.lr=0.03", "model.minibatch_size=128",
             "dataset.batch_size=128", "dataset.n_epochs=1"],
            ["--model", "fdr", "--buffer_size", "200", "--lr", "0.03", "--minibatch_size", "128", "--alpha", "0.5",
             "--batch_size", "128", "--n_epochs", "1"]),
    "gss": (["model=gss", "model.buffer_size=200", "model.lr=0.1", "model.minibatch_size=128",
             "model.gss_minibatch_size=10", "model.batch_num=1", "dataset.batch_size=128", "dataset.n_epochs=1"],
            ["--model", "gss", "--buffer_size", "200", "--lr", "0.1", "--minibatch_size", "10",
             "--gss_minibatch_size", "10", "--batch_num", "1", "--batch_size", "128", "--n_epochs", "1"]),
    "hal": (["model=hal", "model.buffer_size=200", "model.lr=0.1", "model.minibatch_size=128", "model.hal_lambda=0.1",
             "model.beta=0.7", "model.gamma=0.5", "dataset.batch_size=128", "dataset.n_epochs=1"],
            ["--model", "hal", "--buffer_size", "200", "--lr", "0.1", "--minibatch_size", "128", "--hal_lambda", "0.1",
             "--beta", "0.7", "--gamma", "0.5", "--batch_size", "128", "--n_epochs", "1"]),
    # (er_ace_aer_abs is not here: the original has no seq-mnist arguments for it and its observe
    # needs the noisy-label arguments --noise_rate/--noise_type to start)
    # rpc has no seq-mnist best arguments: its models/config/rpc.yaml (seq-cifar10, buffer 100:
    # adam, lr 1e-4, batch 128) with buffer 200 and one epoch
    "rpc": (["model=rpc", "model.buffer_size=200", "model.optimizer=adam", "model.lr=0.0001",
             "model.minibatch_size=128", "dataset.batch_size=128", "dataset.n_epochs=1"],
            ["--model", "rpc", "--buffer_size", "200", "--optimizer", "adam", "--lr", "0.0001",
             "--batch_size", "128", "--n_epochs", "1"]),
    # no seq-mnist best arguments in the original for lucir and lwf_mc: their seq-cifar100 ones
    # (utils/best_args.py lucir [500]; models/config/lwf_mc.yaml lr) at seq-mnist's batch size and epochs
    "lucir": (["model=lucir", "model.buffer_size=500", "model.lr=0.03", "model.momentum=0.9",
               "model.lr_finetune=0.01", "model.fitting_epochs=20", "dataset.batch_size=10", "dataset.n_epochs=1"],
              ["--model", "lucir", "--buffer_size", "500", "--lr", "0.03", "--optim_mom", "0.9",
               "--lr_finetune", "0.01", "--fitting_epochs", "20", "--batch_size", "10", "--n_epochs", "1"]),
    "lwf_mc": (["model=lwf_mc", "model.lr=0.03", "dataset.batch_size=10", "dataset.n_epochs=1"],
               ["--model", "lwf_mc", "--lr", "0.03", "--batch_size", "10", "--n_epochs", "1"]),
}

#: Runs the original's main.py; without CUDA, torch.cuda.synchronize (which lucir's fit_buffer
#: calls and which fails without a GPU) does nothing.
LAUNCHER = ("import runpy, sys, torch\n"
            "if not torch.cuda.is_available(): torch.cuda.synchronize = lambda *args, **kwargs: None\n"
            "sys.argv = ['main.py'] + sys.argv[1:]\n"
            "runpy.run_path('main.py', run_name='__main__')\n")


def write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    """An uncompressed IDX file: big-endian magic, one uint32 per dimension, the uint8 bytes."""
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", size) for size in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def synthetic_mnist(n: int, rng: np.random.Generator, prototypes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 uint8 images: a class's prototype, scaled, shifted by up to 3 pixels, plus noise."""
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = prototypes[labels] * rng.uniform(0.6, 1.0, (n, 1, 1))
    for i, (dy, dx) in enumerate(rng.integers(-3, 4, (n, 2))):
        images[i] = np.roll(images[i], (dy, dx), axis=(0, 1))
    images = images + rng.normal(0, 60, images.shape)
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_data(root: Path, n_train: int = 6000, n_test: int = 1000, seed: int = 0) -> None:
    """The four MNIST IDX files under ``root/MNIST/raw`` (kept if already there)."""
    raw = root / "MNIST" / "raw"
    if (raw / "t10k-labels-idx1-ubyte").is_file():
        return
    raw.mkdir(parents=True, exist_ok=True)
    link_original_readers(root, raw)
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(28), np.arange(28), indexing="ij"), -1)
    prototypes = np.zeros((10, 28, 28))
    for c in range(10):
        for centre in rng.uniform(6, 22, (4, 2)):
            prototypes[c] += 255 * np.exp(-((grid - centre) ** 2).sum(-1) / (2 * 2.5**2))
    prototypes = np.clip(prototypes, 0, 255)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = synthetic_mnist(n, rng, prototypes)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", 0x803, images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", 0x801, labels)


def link_original_readers(root: Path, raw: Path) -> None:
    """The original reads ``<base_path>/MNIST/<class name>/raw`` (torchvision's MNIST, its MyMNIST
    subclass): link both to ``raw`` under ``root/original``."""
    for reader in ("MNIST", "MyMNIST"):
        (root / "original" / "MNIST" / reader).mkdir(parents=True, exist_ok=True)
        link = root / "original" / "MNIST" / reader / "raw"
        if not link.is_symlink():
            link.symlink_to(raw.resolve(), target_is_directory=True)


def write_fashion_mnist(root: Path, source: Path) -> None:
    """Fashion-MNIST's four ``*-ubyte.gz`` files of ``source``, uncompressed, as the MNIST raw files
    both codebases read as seq-mnist (``root/MNIST/raw``; the original's readers linked to it)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        for name in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
            if not (raw / name).is_file():
                packed = source / f"{name}.gz"
                if not packed.is_file():
                    raise SystemExit(f"--fashion-mnist {source}: {packed.name} is missing (expected the four *-ubyte.gz files)")
                partial = raw / f"{name}.partial"
                partial.write_bytes(gzip.decompress(packed.read_bytes()))
                partial.rename(raw / name)
    link_original_readers(root, raw)


def run_ours(overrides: list[str], seed: int, data: Path) -> float:
    """Our final Class-IL average (results.json) for one seed."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "mammoth", "dataset=seq-mnist", f"dataset.root={data}", f"seed={seed}",
                   "threads=1", "logger=[]", f"hydra.run.dir={out}", *overrides]
        subprocess.run(command, check=True, capture_output=True, text=True)
        return json.loads((Path(out) / "results.json").read_text())["class_il"]["average"]


def run_original(flags: list[str], seed: int, data: Path, original: Path, extra_path: str) -> float:
    """The original's final Class-IL average (the last line it prints) for one seed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (extra_path, str(original)) if p),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", LAUNCHER, "--dataset", "seq-mnist", "--seed", str(seed), "--base_path", f"{data}/original/",
               "--num_workers", "0", "--non_verbose", "1", *flags]
    done = subprocess.run(command, cwd=original, env=env, check=True, capture_output=True, text=True)
    found = re.findall(r"Accuracy for \d+ task\(s\):\s+\[Class-IL\]: ([\d.]+) %", done.stderr + done.stdout)
    if not found:
        raise RuntimeError(f"no accuracy in the original's output:\n{done.stderr[-2000:]}")
    return float(found[-1])


def main() -> None:
    """Parse the arguments, write the data, run, print one line per method and codebase."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--original", type=Path, help="an exported original Mammoth (omit: ours only)")
    parser.add_argument("--original-path", default="", help="extra PYTHONPATH for the original's packages")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "mammoth-synthetic-mnist")
    parser.add_argument("--fashion-mnist", type=Path, metavar="DIR",
                        help="run on the real Fashion-MNIST (DIR holds its four *-ubyte.gz files, e.g. "
                             "/usr/share/datasets/fashion-mnist), read as seq-mnist by both codebases, "
                             "instead of the synthetic files; the data goes under --data")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(RUNS), choices=list(RUNS))
    args = parser.parse_args()
    if args.fashion_mnist is not None:
        if args.data == parser.get_default("data"):
            args.data = Path(tempfile.gettempdir()) / "mammoth-fashion-mnist"
        write_fashion_mnist(args.data, args.fashion_mnist)
    else:
        write_data(args.data)
    for name in args.methods:
        ours_overrides, original_flags = RUNS[name]
        codebases = ["mammoth"] + (["original"] if args.original is not None and original_flags else [])
        for codebase in codebases:
            values = [run_ours(ours_overrides, seed, args.data) if codebase == "mammoth" else
                      run_original(original_flags, seed, args.data, args.original, args.original_path)
                      for seed in args.seeds]
            shown = " ".join(f"{v:.2f}" for v in values)
            print(f"{name:18} {codebase:9} Class-IL {mean(values):6.2f} +- {pstdev(values):.2f}  ({shown})", flush=True)

if __name__ == "__main__":
    main()
