"""Reference values of PyCIL's ``wa`` and ``podnet`` for the tests (tests/models/test_pycil_methods.py).

The script runs PyCIL's OWN code (``models/wa.py``, ``models/podnet.py`` with ``models/base.py`` and
``utils/inc_net.py``, unchanged) in a child process (PyCIL has top-level ``models`` and ``utils``
packages), driven through its learner's ``incremental_train`` / ``after_task`` as its trainer
does, on a tiny convolutional network and the images of :func:`task_images`, and writes the
per-step losses and logits, the classifier's initial rows, the aligned weights, the memory and the
logits of probe images after each task to ``tests/models/data/pycil_reference.json``. The tests
build the same network as a mammoth backbone (:func:`build_stages`, weights by :func:`recipe_tensor`
from each tensor's name), feed the same batches to this implementation and hold it to these
numbers.

What is adapted to run PyCIL here, and why (its code itself is not edited):

- Its networks are ResNet-32s (``convnet_type``) at CIFAR size: ``utils.inc_net.get_convnet`` is
  replaced by one returning :class:`PyCILConvNet`, the tiny network of :func:`build_stages`
  (a stem and two convolutional stages on 8x8 images, 8 features) with PyCIL's convnet interface
  (``out_dim``; ``forward`` returns ``{"fmaps": [stage outputs after the stem], "features": ...}``,
  as its ResNets do).
- Its ``DataManager`` reads CIFAR from disk: a stub answers ``get_task_size`` and ``get_dataset``
  with the images of :func:`task_images` (and the memory PyCIL hands back as ``appendent``).
- Its ``DataLoader``\\s (``shuffle=True``, worker processes) are replaced, in the modules that
  create them, by :func:`scripted_loader`: a training loader yields the dataset's rows in the
  order of :func:`training_order` (the same order the tests feed this implementation), every
  other loader yields the rows in order; no worker processes.
- The module constants that size a run (epochs, milestones, memory) are set smaller
  (:data:`WA_CONSTANTS`, :data:`PODNET_CONSTANTS`); the learning rates, weight decays,
  temperatures and loss weights stay PyCIL's.
- The per-step losses are recorded by wrapping, in the method's module, the loss functions it
  calls (``F.cross_entropy`` and ``_KD_loss`` for wa; ``nca``, ``pod_spatial_loss`` and
  ``F.cosine_embedding_loss`` for podnet), and the per-step logits by a forward hook on the
  learner's network; the new classifier rows by wrapping ``update_fc``. Global-RNG draws of
  PyCIL (the new rows' initial weights) are recorded and copied into this implementation, whose
  draws come from the run's generator.

To rerun (a few seconds on 2 CPU cores; PyCIL's dependencies are torch, numpy, scipy, tqdm)::

    mkdir -p /tmp/pycil && git --git-dir /work/.mirror/G-U-N+PyCIL/repo archive HEAD | tar -x -C /tmp/pycil
    python scripts/reference_pycil_methods.py --pycil /tmp/pycil
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

OUTPUT = Path(__file__).resolve().parents[1] / "tests" / "models" / "data" / "pycil_reference.json"

#: The benchmark both runs see: 2 tasks of 2 classes, 8x8 RGB images, 6 per class, batches of 4.
N_TASKS, CLASSES_PER_TASK, PER_CLASS, BATCH = 2, 2, 6, 4
IMAGE = (3, 8, 8)
#: Stage widths of the tiny network: stem, stage 1, stage 2 (the feature size).
WIDTHS = (4, 4, 8)
#: PyCIL's wa module constants this run changes (the rest stay: lr 0.1, weight decays, T = 2).
WA_CONSTANTS = {"init_epoch": 2, "epochs": 2, "init_milestones": [1], "milestones": [1], "num_workers": 0}
WA_MEMORY = 8
#: PyCIL's podnet module constants this run changes (the rest stay: lrate 0.1, ft_lrate 0.005, lambdas, nb_proxy 10).
PODNET_CONSTANTS = {"epochs": 2, "ft_epochs": 2, "num_workers": 0}
PODNET_MEMORY = 8


# ---- what both runs share (the tests import these) ----


def build_stages() -> nn.ModuleList:
    """The tiny network's stages: a 3x3 stem (conv, BN, ReLU), two conv-BN-ReLU stages (the second
    with stride 2), global average pooling to :data:`WIDTHS[-1]` features."""
    def block(a: int, b: int, stride: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(a, b, 3, stride, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU())

    stem, first, second = WIDTHS
    return nn.ModuleList([block(IMAGE[0], stem, 1), block(stem, first, 1), block(first, second, 2),
                          nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())])


def recipe_tensor(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The value of the tensor ``name`` of ``shape``: normal draws from a generator seeded by the name;
    matrices with std 1/sqrt(fan-in), BatchNorm weights around 1, the rest std 0.1."""
    values = torch.randn(shape, generator=torch.Generator().manual_seed(zlib.crc32(name.encode())))
    if name.endswith("weight") and len(shape) >= 2:
        return values / math.prod(shape[1:]) ** 0.5
    if name.endswith("weight"):
        return 1.0 + 0.1 * values
    return 0.1 * values


def apply_recipe(module: nn.Module, prefix: str = "") -> None:
    """Set every floating tensor of ``module``'s state dict by :func:`recipe_tensor` (names after ``prefix``)."""
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(recipe_tensor(prefix + name, tuple(tensor.shape)))


def task_images(task: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images and labels of ``task``: each class a fixed pattern plus noise (classes alternate)."""
    generator = torch.Generator().manual_seed(700 + task)
    labels = torch.arange(CLASSES_PER_TASK).repeat(PER_CLASS) + task * CLASSES_PER_TASK
    patterns = torch.rand(N_TASKS * CLASSES_PER_TASK, *IMAGE, generator=torch.Generator().manual_seed(699))
    images = (0.6 * patterns[labels] + 0.4 * torch.rand(len(labels), *IMAGE, generator=generator)).clamp(0, 1)
    return (images - 0.5) / 0.25, labels


def probe_images() -> torch.Tensor:
    """Images of every class whose logits are compared after each task."""
    return torch.cat([task_images(task)[0][:4] for task in range(N_TASKS)])


def training_order(size: int, call: int) -> torch.Tensor:
    """The order in which the ``call``-th training loader of a run (every epoch a call) yields ``size`` rows."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(900 + call))


def listed(tensor: torch.Tensor) -> Any:
    """A tensor as nested lists of floats (8 significant digits)."""
    tensor = tensor.detach()
    return [listed(row) for row in tensor] if tensor.ndim else float(f"{float(tensor):.8g}")


# ---- PyCIL's side (child process) ----


class PyCILConvNet(nn.Module):
    """The tiny network with PyCIL's convnet interface: ``out_dim``; ``{"fmaps", "features"}``."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = build_stages()
        apply_recipe(self.stages, "stages.")
        self.out_dim = WIDTHS[-1]

    def forward(self, x: torch.Tensor) -> dict:
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return {"fmaps": outputs[1:-1], "features": outputs[-1]}


class ImageSet(torch.utils.data.Dataset):
    """Images and labels (tensors), with the order a training loader yields them in."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)


class Recorder:
    """What the child records: the training loaders made so far, per-step values."""

    training_calls = 0


def scripted_loader(dataset: ImageSet, batch_size: int = 1, shuffle: bool = False, **kwargs: Any) -> list:
    """PyCIL's ``DataLoader(dataset, batch_size, shuffle, num_workers)``: the rows as ``(index, x, y)``
    batches; with ``shuffle`` (training) in :func:`training_order`, in :data:`BATCH`-sized batches, one list
    per epoch (a fresh order for each iteration)."""
    dataset_ = dataset
    if not shuffle:
        size = len(dataset)
        return [(torch.arange(s, min(s + batch_size, size)), dataset.images[s : s + batch_size], dataset.labels[s : s + batch_size])
                for s in range(0, size, batch_size)]

    class Epochs:
        dataset = dataset_

        def __len__(self) -> int:
            return math.ceil(len(dataset) / BATCH)

        def __iter__(self):
            order = training_order(len(dataset), Recorder.training_calls)
            Recorder.training_calls += 1
            for s in range(0, len(order), BATCH):
                rows = order[s : s + BATCH]
                yield rows, dataset.images[rows], dataset.labels[rows]

    return Epochs()


class DataManager:
    """The parts of PyCIL's DataManager its learners read, over :func:`task_images`."""

    def get_task_size(self, task: int) -> int:
        return CLASSES_PER_TASK

    def get_dataset(self, indices: Any, source: str, mode: str, appendent: Any = None, ret_data: bool = False, **kwargs: Any):
        images, labels = [], []
        if source == "test":
            images, labels = [probe_images()], [torch.zeros(len(probe_images()), dtype=torch.long)]
        else:
            for task in range(N_TASKS):
                x, y = task_images(task)
                keep = torch.isin(y, torch.as_tensor(list(indices), dtype=torch.long))
                images.append(x[keep]), labels.append(y[keep])
        if appendent is not None and len(appendent[0]):
            images.append(torch.as_tensor(appendent[0])), labels.append(torch.as_tensor(appendent[1]).long())
        dataset = ImageSet(torch.cat(images), torch.cat(labels))
        if ret_data:
            return dataset.images.numpy(), dataset.labels.numpy(), dataset
        return dataset


def memory_rows(data: Any, targets: Any) -> list:
    """The memory as ``(task, row)`` of :func:`task_images` for every stored image, in order."""
    rows = []
    for image, label in zip(torch.as_tensor(data), torch.as_tensor(targets)):
        task = int(label) // CLASSES_PER_TASK
        matches = (task_images(task)[0] == image).flatten(1).all(1).nonzero().flatten()
        rows.append([task, int(matches[0])])
    return rows


def prepare_pycil(root: Path, module_name: str, constants: dict) -> Any:
    """Import PyCIL's method module with the tiny convnet, the scripted loaders and ``constants``."""
    sys.path.insert(0, str(root))
    import importlib

    from models import base
    from utils import inc_net

    module = importlib.import_module(f"models.{module_name}")
    inc_net.get_convnet = lambda args, pretrained=False: PyCILConvNet()
    base.DataLoader = module.DataLoader = scripted_loader
    for name, value in constants.items():
        setattr(module, name, value)
    return module


def step_recorder(learner: Any) -> tuple[list, Any]:
    """A list that gets the network's training-mode logits of every step (a forward hook on the learner's network)."""
    steps: list = []

    def hook(module: nn.Module, inputs: Any, output: dict) -> None:
        if module is learner._network and module.training:
            steps.append({"logits": listed(output["logits"])})

    return steps, hook


def run_pycil_wa(root: Path) -> dict:
    """PyCIL's WA on the tiny network: per-step losses and logits, initial rows, aligned weights, memory, probe logits."""
    wa = prepare_pycil(root, "wa", WA_CONSTANTS)
    import torch.nn.functional as F

    torch.manual_seed(0)  # PyCIL's own draws (the new classifier rows, recorded below)
    learner = wa.WA({"memory_size": WA_MEMORY, "memory_per_class": 0, "fixed_memory": False,
                     "device": [torch.device("cpu")], "convnet_type": "tiny"})
    steps, hook = step_recorder(learner)
    learner._network.register_forward_hook(hook)
    kd = wa._KD_loss

    class RecordingF:
        def __getattr__(self, name: str) -> Any:
            return getattr(F, name)

        def cross_entropy(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            value = F.cross_entropy(*args, **kwargs)
            steps[-1]["ce"] = float(value)
            return value

    def recording_kd(*args: Any) -> torch.Tensor:
        value = kd(*args)
        steps[-1]["kd"] = float(value)
        return value

    wa.F, wa._KD_loss = RecordingF(), recording_kd
    result: dict[str, Any] = {"constants": WA_CONSTANTS, "memory_size": WA_MEMORY, "tasks": []}
    network = learner._network
    update_fc, align = network.update_fc, network.weight_align
    record: dict[str, Any] = {}

    def recording_update_fc(classes: int) -> None:
        update_fc(classes)
        record["initial_weight"] = listed(network.fc.weight[-CLASSES_PER_TASK:])

    def recording_align(increment: int) -> None:
        record.setdefault("weights_before_alignment", listed(network.fc.weight))
        align(increment)
        record.setdefault("aligned_weight", listed(network.fc.weight))

    network.update_fc, network.weight_align = recording_update_fc, recording_align
    manager = DataManager()
    for task in range(N_TASKS):
        record.clear()
        del steps[:]
        learner.incremental_train(manager)
        learner.after_task()
        network.eval()
        with torch.no_grad():
            probe = network(probe_images())["logits"]
        result["tasks"].append({**record, "steps": list(steps), "memory": memory_rows(learner._data_memory, learner._targets_memory),
                                "final_weight": listed(network.fc.weight), "final_bias": listed(network.fc.bias),
                                "probe_logits": listed(probe)})
    return result


def run_pycil_podnet(root: Path) -> dict:
    """PyCIL's PODNet on the tiny network: per-step losses and logits (training and finetuning), the
    new proxies, the finetuning set, the memory, sigma and the probe logits after each task."""
    podnet = prepare_pycil(root, "podnet", PODNET_CONSTANTS)
    import torch.nn.functional as F

    torch.manual_seed(0)  # PyCIL's own draws (the new proxies, recorded below)
    learner = podnet.PODNet({"memory_size": PODNET_MEMORY, "memory_per_class": 0, "fixed_memory": False,
                             "device": [torch.device("cpu")], "convnet_type": "tiny"})
    steps, hook = step_recorder(learner)
    learner._network.register_forward_hook(hook)
    nca, spatial = podnet.nca, podnet.pod_spatial_loss

    def recording_nca(*args: Any, **kwargs: Any) -> torch.Tensor:
        value = nca(*args, **kwargs)
        steps[-1]["nca"] = float(value)
        return value

    def recording_spatial(*args: Any, **kwargs: Any) -> torch.Tensor:
        value = spatial(*args, **kwargs)
        steps[-1]["spatial_unweighted"] = float(value)
        return value

    class RecordingF:
        def __getattr__(self, name: str) -> Any:
            return getattr(F, name)

        def cosine_embedding_loss(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            value = F.cosine_embedding_loss(*args, **kwargs)
            steps[-1]["flat_unweighted"] = float(value)
            return value

    podnet.nca, podnet.pod_spatial_loss, podnet.F = recording_nca, recording_spatial, RecordingF()
    result: dict[str, Any] = {"constants": PODNET_CONSTANTS, "memory_size": PODNET_MEMORY,
                              "nb_proxy": podnet.nb_proxy, "tasks": []}
    network = learner._network
    update_fc, run = network.update_fc, learner._run
    record: dict[str, Any] = {}

    def recording_update_fc(classes: int, task: int) -> None:
        update_fc(classes, task)
        new = network.fc if task == 0 else network.fc.fc2
        record["initial_proxies"] = listed(new.weight)

    def recording_run(train_loader: Any, test_loader: Any, optimizer: Any, scheduler: Any, epochs: int) -> None:
        phase = "finetune_steps" if "train_steps" in record else "train_steps"
        if phase == "finetune_steps":
            record["finetune_set"] = memory_rows(train_loader.dataset.images, train_loader.dataset.labels)
        del steps[:]
        run(train_loader, test_loader, optimizer, scheduler, epochs)
        record[phase] = list(steps)
        record[phase.replace("steps", "factor")] = learner.factor

    network.update_fc, learner._run = recording_update_fc, recording_run
    manager = DataManager()
    for task in range(N_TASKS):
        record.clear()
        learner.incremental_train(manager)
        learner.after_task()
        network.eval()
        with torch.no_grad():
            probe = network(probe_images())["logits"]
        weight = network.fc.weight if task == 0 else torch.cat([network.fc.fc1.weight, network.fc.fc2.weight])
        result["tasks"].append({**record, "memory": memory_rows(learner._data_memory, learner._targets_memory),
                                "sigma": float(network.fc.sigma), "final_proxies": listed(weight),
                                "probe_logits": listed(probe)})
    return result


def mirror_commit(name: str) -> str:
    """The commit of the local mirror the code was extracted from (``unknown`` without one)."""
    command = ["git", "--git-dir", f"/work/.mirror/{name}/repo", "rev-parse", "HEAD"]
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip() or "unknown"


def child_result(arguments: argparse.Namespace, part: str) -> dict:
    """Run one method of PyCIL in a fresh process."""
    command = [sys.executable, __file__, "--part", part, "--pycil", str(arguments.pycil)]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode:
        raise SystemExit(f"the {part} part failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


PARTS = {"wa": run_pycil_wa, "podnet": run_pycil_podnet}


def main() -> None:
    """Run PyCIL's wa and podnet and write the reference file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pycil", type=Path, required=True, help="the extracted PyCIL (git archive)")
    parser.add_argument("--part", choices=tuple(PARTS), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    arguments = parser.parse_args()
    if arguments.part is not None:
        print(json.dumps(PARTS[arguments.part](arguments.pycil.resolve())))
        return
    reference: dict[str, Any] = {"source": {"repository": "G-U-N/PyCIL", "commit": mirror_commit("G-U-N+PyCIL"),
                                            "torch": torch.__version__}}
    for part in PARTS:
        reference[part] = child_result(arguments, part)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(reference) + "\n")
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()
