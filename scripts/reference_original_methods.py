"""Reference values of the original Mammoth's ``agem_r``, ``fdr``, ``rpc``, ``gss``, ``hal`` and ``er_ace_aer_abs`` for the tests.

The script runs the ORIGINAL code unchanged (``models/<name>.py`` with its buffers,
``utils/buffer.py``, ``utils/gss_buffer.py``, ``utils/ring_buffer.py``, driven through its
ContinualModel's ``meta_begin_task`` / ``meta_observe`` / ``meta_end_task``) in a child process,
on the original's own ``BaseMNISTMLP`` (16 inputs, two hidden layers of 8, 4 classes) whose
weights are :func:`initial_weights`, over 2 class-IL tasks of 2 classes (:func:`task_images`,
batches of :data:`BATCH`), and writes per step the loss and per task the memory's contents and
the logits of :func:`probe_images` to ``tests/models/data/original_methods_reference.json``.
tests/models/test_original_fidelity.py feeds the same batches to this implementation (its
``mnistmlp`` with the same weights, by parameter order) and holds it to these numbers.

The random draws: the original draws from numpy's and torch's global generators, this
implementation from the run's generator and the buffer's own. The original is FED THIS
IMPLEMENTATION'S DRAWS: in the child, ``np.random.randint(0, n)`` (the reservoir's slot),
``np.random.choice(n, size, replace=False)`` (a replay minibatch), ``np.random.choice(a, size=1,
p=...)`` / ``np.random.rand`` (gss's and ABS's weighted replacement) and gss's ``torch.randperm`` come from
one ``torch.Generator`` seeded with :data:`BUFFER_SEED`, computed exactly as this
implementation's buffer computes them from its generator, which the tests seed with the same
value. The draws of ``end_task`` (the order of the task's batches, rpc's ``torch.randperm`` of
the classes, hal's initial anchors ``torch.rand``) come from torch's global generator, seeded
with :func:`end_task_seed` before each ``meta_end_task`` here and from the run's generator
seeded with the same value there (a CPU ``torch.Generator`` and the global one give the same
numbers from the same seed). Nothing else is random: no augmentation, no dropout.

What is stubbed, and why: ``datasets`` (the original imports every benchmark, whose packages are
not installed here; its ``get_dataset`` answers the number of tasks and classes; ``datasets.utils``
for er_ace_aer_abs's type annotation), hal's ``get_backbone`` (it returns a copy of the tiny MLP:
the spare network whose weights hal sets), and er_ace_aer_abs's ``normalization_transform`` (the
identity, which the original derives from a dataset's transforms that the script does not have).

To rerun (a few seconds on 2 CPU cores)::

    git -C /work/.mirror/aimagelab+mammoth/repo archive HEAD | tar -x -C /tmp/orig-mammoth
    pip install --target /tmp/origdeps --no-deps kornia kornia_rs timm==0.9.8 onedrivedownloader ftfy regex wcwidth six
    python scripts/reference_original_methods.py --original /tmp/orig-mammoth --original-path /tmp/origdeps
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import types
from argparse import Namespace
from pathlib import Path
from typing import Any

import torch

OUTPUT = Path(__file__).resolve().parents[1] / "tests" / "models" / "data" / "original_methods_reference.json"

#: The benchmark: 2 tasks of 2 classes, 1x4x4 images in [0, 1], 12 per task, batches of 4.
N_TASKS, CLASSES_PER_TASK, PER_TASK, BATCH = 2, 2, 12, 4
IMAGE = (1, 4, 4)
HIDDEN = 8
#: The seed of the buffers' draws (ours: ``model.buffer.generator``; the original's: the fed tape).
BUFFER_SEED = 1234
#: Each method's arguments (the original's names), beside ``lr`` and ``batch_size`` = BATCH.
SETTINGS: dict[str, dict[str, Any]] = {
    "agem_r": {"lr": 0.1, "buffer_size": 6, "minibatch_size": 3},
    "fdr": {"lr": 0.1, "buffer_size": 6, "minibatch_size": 3},
    "rpc": {"lr": 0.1, "buffer_size": 5, "minibatch_size": 3},  # 5: a remainder slot drawn at random
    "gss": {"lr": 0.1, "buffer_size": 6, "minibatch_size": 3, "gss_minibatch_size": 3, "batch_num": 2},
    "hal": {"lr": 0.1, "buffer_size": 6, "minibatch_size": 3, "hal_lambda": 0.1, "beta": 0.5, "gamma": 0.1},
    # alpha 0.5: 2 of each batch of 4 offered to the memory
    "er_ace_aer_abs": {"lr": 0.1, "buffer_size": 6, "minibatch_size": 3, "alpha_sample_insertion": 0.5,
                       "sample_selection_strategy": "abs", "use_aer": True},
}
#: Epochs per task (1 unless listed): AER alternates a storing epoch and a replaying one.
EPOCHS = {"er_ace_aer_abs": 2}
METHODS = tuple(SETTINGS)


# ---- what both runs share (the tests import these) ----


def initial_weights() -> list[torch.Tensor]:
    """The tiny MLP's tensors in parameter order (fc1, fc2, classifier; weight then bias)."""
    generator = torch.Generator().manual_seed(7)
    sizes = [(HIDDEN, 16), (HIDDEN,), (HIDDEN, HIDDEN), (HIDDEN,), (N_TASKS * CLASSES_PER_TASK, HIDDEN),
             (N_TASKS * CLASSES_PER_TASK,)]
    return [torch.randn(size, generator=generator) / (size[-1] ** 0.5 if len(size) == 2 else 4) for size in sizes]


def load_weights(net: torch.nn.Module) -> None:
    """Set ``net``'s parameters, in order, to :func:`initial_weights`."""
    with torch.no_grad():
        for parameter, value in zip(net.parameters(), initial_weights(), strict=True):
            parameter.copy_(value)


def task_images(task: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``PER_TASK`` images in [0, 1] and labels of ``task``: a fixed pattern per class plus noise."""
    generator = torch.Generator().manual_seed(300 + task)
    labels = task * CLASSES_PER_TASK + torch.randint(0, CLASSES_PER_TASK, (PER_TASK,), generator=generator)
    patterns = torch.rand(N_TASKS * CLASSES_PER_TASK, *IMAGE, generator=torch.Generator().manual_seed(299))
    images = (0.6 * patterns[labels] + 0.4 * torch.rand(PER_TASK, *IMAGE, generator=generator)).clamp(0, 1)
    return images, labels


def batches(task: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches of ``task``, in order."""
    images, labels = task_images(task)
    return [(images[start : start + BATCH], labels[start : start + BATCH]) for start in range(0, PER_TASK, BATCH)]


def probe_images() -> torch.Tensor:
    """Images of every class whose logits are compared after each task."""
    return torch.cat([task_images(task)[0][:4] for task in range(N_TASKS)])


def end_task_seed(task: int) -> int:
    """The seed of the draws of ``end_task`` after ``task`` (both sides)."""
    return 500 + task


def listed(tensor: torch.Tensor) -> Any:
    """A tensor as nested lists of floats (8 significant digits)."""
    tensor = tensor.detach()
    return [listed(row) for row in tensor] if tensor.ndim else float(f"{float(tensor):.8g}")


# ---- the draws fed to the original ----

#: As this implementation's ReplayBuffer: integers drawn in [0, 2**62), reduced modulo the range.
DRAW_HIGH = 2**62


class Tape:
    """The draws of this implementation's buffers, from one generator seeded with BUFFER_SEED, in
    the form the original's numpy / torch calls take them."""

    def __init__(self, seed: int) -> None:
        import numpy as np

        self.np = np
        self.generator = torch.Generator().manual_seed(seed)
        self.calls: list[str] = []

    def randint(self, low: int, high: int | None = None, size: Any = None) -> int:
        """The reservoir's ``np.random.randint(0, n)``: ours draws ``randint(0, 2**62) % n`` per item."""
        assert low == 0 and high is not None and size is None, (low, high, size)
        self.calls.append(f"randint({high})")
        return int(torch.randint(0, DRAW_HIGH, (1,), generator=self.generator)) % high

    def choice(self, a: Any, size: Any = None, replace: bool = True, p: Any = None) -> Any:
        """``choice(n, size, replace=False)``: ours takes ``randperm(n)[:size]``; ``choice(a, size=1,
        p=p)`` (gss): ours inverts the cumulative scores at one uniform draw."""
        if p is None:
            assert not replace and isinstance(a, (int, self.np.integer)), (a, replace)
            self.calls.append(f"choice({a}, {size})")
            return torch.randperm(int(a), generator=self.generator)[:size].numpy()
        self.calls.append(f"weighted({len(a)})")
        return self.np.array([int(a[weighted_index(torch.as_tensor(p, dtype=torch.float64), self.generator)])])

    def rand(self, *size: int) -> Any:
        """``np.random.rand(1)`` (gss's acceptance): one ``torch.rand`` in float64."""
        self.calls.append("rand")
        return torch.rand(size, generator=self.generator, dtype=torch.float64).numpy()

    def randperm(self, n: int, **kwargs: Any) -> torch.Tensor:
        """gss's ``torch.randperm(n)`` (the order its buffer visits the memory)."""
        self.calls.append(f"randperm({n})")
        return torch.randperm(n, generator=self.generator)


def weighted_index(weights: torch.Tensor, generator: torch.Generator) -> int:
    """An index drawn with probability proportional to ``weights`` (float64): the first whose
    cumulative weight exceeds one uniform draw times the total (gss's weighted choice, both sides)."""
    cumulative = torch.cumsum(weights.to(torch.float64), 0)
    target = torch.rand((), generator=generator, dtype=torch.float64) * cumulative[-1]
    return int(torch.searchsorted(cumulative, target, right=True).clamp(max=len(weights) - 1))


class TorchWithTape:
    """torch, but ``randperm`` from the tape (gss_buffer's module-level ``torch``)."""

    def __init__(self, tape: Tape) -> None:
        self._tape = tape

    def __getattr__(self, name: str) -> Any:
        return self._tape.randperm if name == "randperm" else getattr(torch, name)


# ---- the original's side ----


class FakeLoader:
    """The task's ``(inputs, labels, not_aug_inputs)`` batches in an order drawn from torch's global
    generator when iterated (as a shuffling DataLoader), with the ``.dataset.targets`` hal reads."""

    def __init__(self, task: int) -> None:
        self.images, self.labels = task_images(task)
        self.dataset = types.SimpleNamespace(targets=self.labels.numpy(), transform=None)

    def __iter__(self) -> Any:
        order = torch.randperm(len(self.labels))
        for start in range(0, len(order), BATCH):
            rows = order[start : start + BATCH]
            yield self.images[rows], self.labels[rows], self.images[rows]


def original_dataset() -> Any:
    """The parts of the original's ContinualDataset the methods read."""
    dataset = types.SimpleNamespace(N_CLASSES=N_TASKS * CLASSES_PER_TASK, N_TASKS=N_TASKS, SETTING="class-il",
                                    N_CLASSES_PER_TASK=CLASSES_PER_TASK, TEST_TRANSFORM=None, train_loader=None, c_task=0)

    def get_offsets(task: int | None = None) -> tuple[int, int]:
        task = dataset.c_task if task is None else task
        return task * CLASSES_PER_TASK, (task + 1) * CLASSES_PER_TASK

    dataset.get_offsets = get_offsets
    return dataset


def import_original(root: Path, extra_path: str | None) -> None:
    """Put the original on ``sys.path`` with a stub ``datasets`` package."""
    sys.path[:0] = [str(root)] + ([extra_path] if extra_path else [])
    stub = types.ModuleType("datasets")
    stub.get_dataset = lambda args: original_dataset()
    stub.get_dataset_names = stub.get_dataset_config_names = lambda *args, **kwargs: []
    stub.__path__ = []  # a package: er_ace_aer_abs imports datasets.utils.continual_dataset for a type
    utils = types.ModuleType("datasets.utils")
    utils.__path__ = []
    continual = types.ModuleType("datasets.utils.continual_dataset")
    continual.ContinualDataset = object
    sys.modules.update({"datasets": stub, "datasets.utils": utils, "datasets.utils.continual_dataset": continual})


def tiny_original_mlp() -> torch.nn.Module:
    """The original's BaseMNISTMLP at 16 inputs, 8 hidden units, 4 classes, with :func:`initial_weights`."""
    from backbone.MNISTMLP import BaseMNISTMLP

    net = BaseMNISTMLP(16, N_TASKS * CLASSES_PER_TASK, hidden_size=HIDDEN)
    load_weights(net)
    return net


def memory_of(buffer: Any) -> dict[str, Any]:
    """The filled part of an original buffer: examples, labels, logits, task labels (those it has)."""
    filled = min(buffer.num_seen_examples, buffer.examples.shape[0]) if hasattr(buffer, "examples") else 0
    if hasattr(buffer, "filled_space"):  # hal's ring buffer: the filled slots
        rows = buffer.filled_space.nonzero().flatten()
    else:
        rows = torch.arange(filled)
    memory = {name: listed(getattr(buffer, name)[rows]) for name in ("examples", "labels", "logits", "task_labels", "scores")
              if hasattr(buffer, name)}
    if hasattr(getattr(buffer, "sample_selection_fn", None), "importance_scores"):  # ABS: the losses kept
        memory["importance"] = listed(buffer.sample_selection_fn.importance_scores[rows])
    return memory


def run_original(name: str) -> dict:
    """One method of the original over both tasks: per-step losses, memory and probe logits after each task."""
    import numpy as np

    tape = Tape(BUFFER_SEED)
    np.random.randint, np.random.choice, np.random.rand = tape.randint, tape.choice, tape.rand
    module = __import__(f"models.{name}", fromlist=["*"])
    if name == "gss":
        import utils.gss_buffer

        utils.gss_buffer.torch = TorchWithTape(tape)
    if name == "hal":
        module.get_backbone = lambda args: copy.deepcopy(tiny_original_mlp())
    cls = next(value for value in vars(module).values()
               if isinstance(value, type) and getattr(value, "NAME", None) == name)
    settings = SETTINGS[name]
    epochs = EPOCHS.get(name, 1)
    args = Namespace(optimizer="sgd", optim_wd=0.0, optim_mom=0.0, optim_nesterov=0, label_perc=1, nowand=1,
                     debug_mode=0, n_epochs=epochs, batch_size=BATCH, seed=0, dataset="fake", **settings)
    if name == "gss":
        args.gss_minibatch_size = settings["gss_minibatch_size"]
    dataset = original_dataset()
    if name == "er_ace_aer_abs":
        args.buffer_fitting_epochs = 0  # its default: no fitting
    model = cls(tiny_original_mlp(), torch.nn.functional.cross_entropy, args, None, dataset=dataset)  # as its datasets get_loss
    if name == "er_ace_aer_abs":
        model.normalization_transform = lambda x: x
    result: dict[str, Any] = {"losses": [], "memory": [], "logits": []}
    for task in range(N_TASKS):
        dataset.c_task = task
        model.meta_begin_task(dataset)
        model.net.train()
        losses = []
        for epoch in range(epochs):
            model.meta_begin_epoch(epoch, dataset)
            losses += [float(model.meta_observe(x, y, x, epoch=epoch, true_labels=y)) for x, y in batches(task)]
            model.meta_end_epoch(epoch, dataset)
        result["losses"].append(losses)
        dataset.train_loader = FakeLoader(task)
        torch.manual_seed(end_task_seed(task))
        model.meta_end_task(dataset)
        result["memory"].append(memory_of(model.buffer))
        with torch.no_grad():
            model.net.eval()
            result["logits"].append(listed(model(probe_images())))
            model.net.train()
    if name == "hal":
        result["anchors"] = listed(model.anchors)
    result["draws"] = tape.calls
    return result


def mirror_commit(name: str) -> str:
    """The commit of the local mirror the code was extracted from (``unknown`` without one)."""
    command = ["git", "--git-dir", f"/work/.mirror/{name}/repo", "rev-parse", "HEAD"]
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip() or "unknown"


def child_result(arguments: argparse.Namespace, name: str) -> dict:
    """Run one method in a fresh process (each patches the original's random calls anew)."""
    command = [sys.executable, __file__, "--part", name, "--original", str(arguments.original)]
    if arguments.original_path is not None:
        command += ["--original-path", str(arguments.original_path)]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode:
        raise SystemExit(f"the {name} part failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run the original's methods and write the reference file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--original", type=Path, required=True, help="the extracted original Mammoth (git archive)")
    parser.add_argument("--original-path", default=None, help="a directory of packages the original needs (kornia)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--part", choices=METHODS, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    arguments = parser.parse_args()
    if arguments.part is not None:
        import_original(arguments.original.resolve(), arguments.original_path)
        print(json.dumps(run_original(arguments.part)))
        return
    reference = json.loads(arguments.output.read_text()) if arguments.output.is_file() else {}
    reference["source"] = {"repository": "aimagelab/mammoth", "commit": mirror_commit("aimagelab+mammoth"),
                           "torch": torch.__version__}
    for name in arguments.methods:
        reference[name] = {"settings": SETTINGS[name], **child_result(arguments, name)}
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(reference) + "\n")
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()
