"""Reference values of the original Mammoth's ``lucir`` and ``lwf_mc`` for the tests.

The script runs the ORIGINAL code unchanged (``models/lucir.py`` with ``utils/buffer.py``'s
``icarl_replay`` and ``fill_buffer``, ``models/lwf_mc.py``; both driven through its
ContinualModel's ``meta_begin_task`` / ``meta_observe`` / ``meta_end_task``, as its training
loop does) in a child process, on the original's own MLP (``backbone/MNISTMLP.py``, hidden size
16, weights set by :func:`linear_weights`) and the images of :func:`task_images` (3 tasks of 2
classes, 1x6x6, batches of 4, no augmentation), and writes every step's loss (LUCIR: its
training steps then its class-balanced finetuning steps; LUCIR also on the original's ResNet-18
of width 2 on 3x16x16 images, for its BatchNorm: train mode in training, eval mode in the frozen copy
and the herding, batch statistics without running updates in the finetuning), the classifier after each
``begin_task`` (the imprinted block) and each task, the memory and the logits of
:func:`probe_images` after each task to ``tests/models/data/lucir_lwfmc_reference.json``.
tests/models/test_lucir_lwfmc_fidelity.py builds the same network with ``backbone=mnistmlp``,
feeds the same batches to this implementation and holds it to these numbers.

What is adapted to run the original here, and why (nothing in its code is edited):

- ``datasets`` is replaced by a stub (the original imports every benchmark, which needs
  packages not installed here); its ``get_dataset`` returns the dataset object the method is
  also given (``args.stub_dataset``). That object has a ``train_loader`` over a small ``Dataset`` of ``(image, label, image)`` with the ``data``/``targets`` the original's
  ``icarl_replay``, ``fill_buffer`` and ``imprint_weights`` rewrite.
- ``torch.cuda.synchronize`` (called by ``fit_buffer``) is a no-op: there is no GPU here.
- LUCIR's ``create_seeded_dataloader`` is replaced by a loader that gives the finetuning epochs
  the order this implementation draws: ``torch.randperm`` from one generator seeded with
  :data:`GENERATOR_SEED`, after the one draw this implementation's memory takes from it when the
  model is attached (the original seeds a fresh generator with ``--seed`` on every call, so every
  epoch had the same order; without ``--seed``, torch's global one).
- The cosine classifier's initial blocks (the original draws them from the global generator) are
  set to :func:`head_weights`, as the test sets this implementation's.

To rerun (a few seconds on 2 CPU cores)::

    mkdir -p /tmp/orig-mammoth
    git -C /work/.mirror/aimagelab+mammoth/repo archive HEAD | tar -x -C /tmp/orig-mammoth
    pip install --target /tmp/origdeps --no-deps kornia kornia_rs timm==0.9.8
    python scripts/reference_lucir_lwfmc.py --original /tmp/orig-mammoth --original-path /tmp/origdeps
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from argparse import Namespace
from pathlib import Path
from typing import Any

import torch

OUTPUT = Path(__file__).resolve().parents[1] / "tests" / "models" / "data" / "lucir_lwfmc_reference.json"

#: The benchmark: 3 class-IL tasks of 2 classes, 1x6x6 images, 6 per class, batches of 4.
N_TASKS, CLASSES_PER_TASK, PER_CLASS, BATCH = 3, 2, 6, 4
IMAGE = (1, 6, 6)
HIDDEN = 16
#: LUCIR also runs on a ResNet-18 of width 2 (16 features, BatchNorm) on 3x16x16 images (its last
#: BatchNorm normalises 4 images of 2x2: 8x8 images leave it 4 values a channel, whose variance
#: magnifies the last bit of every sum).
RGB_IMAGE = (3, 16, 16)
RESNET_WIDTH = 2
#: The run generator's seed of this implementation (the finetuning's epoch orders come from it).
GENERATOR_SEED = 5
LUCIR_SETTINGS = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "buffer_size": 12, "lamda_base": 5.0,
                  "lamda_mr": 1.0, "k_mr": 2, "mr_margin": 0.5, "fitting_epochs": 4, "lr_finetune": 0.05,
                  "imprint_weights": True}
LWFMC_SETTINGS = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "wd_reg": 0.001}


# ---- what both runs share (the tests import these) ----


def task_images(task: int, shape: tuple[int, ...] = IMAGE) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images in [0, 1] of ``shape`` and labels of ``task``: each class a fixed pattern plus noise."""
    generator = torch.Generator().manual_seed(700 + task)
    labels = torch.arange(CLASSES_PER_TASK).repeat(PER_CLASS) + task * CLASSES_PER_TASK
    patterns = torch.rand(N_TASKS * CLASSES_PER_TASK, *shape, generator=torch.Generator().manual_seed(699))
    images = (0.6 * patterns[labels] + 0.4 * torch.rand(len(labels), *shape, generator=generator)).clamp(0, 1)
    return images, labels


def probe_images(shape: tuple[int, ...] = IMAGE) -> torch.Tensor:
    """Images of every class whose logits are compared after each task."""
    return torch.cat([task_images(task, shape)[0][:4] for task in range(N_TASKS)])


def linear_weights(index: int, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of the ``index``-th linear layer (std 1/sqrt(fan-in), biases std 0.1)."""
    generator = torch.Generator().manual_seed(800 + index)
    weight = torch.randn(shape, generator=generator) / shape[1] ** 0.5
    return weight, 0.1 * torch.randn(shape[0], generator=generator)


def set_mlp_weights(net: torch.nn.Module) -> None:
    """The MLP's linear layers, in module order (first hidden, second hidden, classifier), by :func:`linear_weights`."""
    layers = [module for module in net.modules() if isinstance(module, torch.nn.Linear)]
    with torch.no_grad():
        for index, layer in enumerate(layers):
            weight, bias = linear_weights(index, tuple(layer.weight.shape))
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)


def set_weights_by_position(net: torch.nn.Module) -> None:
    """Every parameter, by its position in ``named_parameters()`` (the original's ResNet and this
    implementation's list the same shapes in the same order): BatchNorm weights around 1, other
    vectors std 0.1, the rest std 1/sqrt(fan-in); running statistics stay at their defaults."""
    with torch.no_grad():
        for index, (name, parameter) in enumerate(net.named_parameters()):
            generator = torch.Generator().manual_seed(1000 + index)
            values = torch.randn(parameter.shape, generator=generator)
            if parameter.ndim >= 2:
                values = values / (parameter[0].numel() ** 0.5)
            elif name.endswith("weight"):  # a vector weight: a BatchNorm's
                values = 1.0 + 0.1 * values
            else:
                values = 0.1 * values
            parameter.copy_(values)


def head_weights() -> list[torch.Tensor]:
    """LUCIR's cosine classifier's initial blocks, one (2, 16) per task, uniform in +-1/4."""
    generator = torch.Generator().manual_seed(900)
    return [(torch.rand(CLASSES_PER_TASK, HIDDEN, generator=generator) * 2 - 1) / HIDDEN ** 0.5
            for _ in range(N_TASKS)]


def margin_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and cosine scores on which the margin ranking loss is compared on its own (past classes: 3)."""
    generator = torch.Generator().manual_seed(901)
    return torch.randint(0, 6, (10,), generator=generator), torch.rand(10, 6, generator=generator) * 2 - 1


def listed(tensor: torch.Tensor) -> Any:
    """A tensor as nested lists of floats (8 significant digits)."""
    tensor = tensor.detach()
    return [listed(row) for row in tensor] if tensor.ndim else float(f"{float(tensor):.8g}")


# ---- the original's side ----


def import_original(root: Path, extra_path: str | None) -> None:
    """Put the original on ``sys.path`` with a stub ``datasets`` package."""
    sys.path[:0] = [str(root)] + ([extra_path] if extra_path else [])
    stub = types.ModuleType("datasets")
    stub.get_dataset = lambda args: args.stub_dataset  # the dataset object the method is also given
    stub.get_dataset_names = stub.get_dataset_config_names = lambda *args, **kwargs: []
    sys.modules["datasets"] = stub


class TaskDataset(torch.utils.data.Dataset):
    """``(image, label, image)`` items over ``data`` / ``targets`` (numpy), which the original rewrites."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.data, self.targets = images, labels.numpy()

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple:
        return self.data[index], int(self.targets[index]), self.data[index]


def original_dataset(args: Namespace) -> Any:
    """The parts of the original's ContinualDataset its lucir and lwf_mc read."""
    def get_offsets(task: int) -> tuple[int, int]:
        return task * CLASSES_PER_TASK, (task + 1) * CLASSES_PER_TASK

    dataset = types.SimpleNamespace(N_CLASSES=N_TASKS * CLASSES_PER_TASK, N_TASKS=N_TASKS, SETTING="class-il",
                                    N_CLASSES_PER_TASK=CLASSES_PER_TASK, get_offsets=get_offsets, args=args,
                                    get_normalization_transform=lambda: None, train_loader=None)
    args.stub_dataset = dataset
    return dataset


def common_args(settings: dict, **values: Any) -> Namespace:
    """The original's command-line arguments its ContinualModel and these methods read."""
    return Namespace(optimizer="sgd", optim_nesterov=0, label_perc=1, nowand=1, debug_mode=0, n_epochs=1, seed=None,
                     num_workers=0, batch_size=BATCH, dataset="seq-mnist", lr=settings["lr"],
                     optim_mom=settings["momentum"], optim_wd=settings["weight_decay"], lr_scheduler=None, **values)


def original_mlp() -> torch.nn.Module:
    from backbone.MNISTMLP import BaseMNISTMLP

    net = BaseMNISTMLP(IMAGE[0] * IMAGE[1] * IMAGE[2], N_TASKS * CLASSES_PER_TASK, hidden_size=HIDDEN)
    set_mlp_weights(net)
    return net


def original_resnet() -> torch.nn.Module:
    from backbone.ResNetBlock import resnet18

    net = resnet18(N_TASKS * CLASSES_PER_TASK, RESNET_WIDTH)
    set_weights_by_position(net)
    return net


def run_original_lucir(kind: str) -> dict:
    """LUCIR of the original on the MLP (``kind`` mlp) or the ResNet (resnet): losses, imprinted and
    trained classifier blocks, memory, logits, the margin ranking loss on :func:`margin_inputs`."""
    import models.lucir as lucir_module
    from models.lucir import Lucir, lucir_batch_hard_triplet_loss

    torch.cuda.synchronize = lambda *args, **kwargs: None
    orders = torch.Generator().manual_seed(GENERATOR_SEED)
    torch.randint(0, 2**62, (1,), generator=orders)  # this implementation's memory takes one draw when attached

    def seeded_loader(args: Namespace, dataset: Any, shuffle: bool = False, batch_size: int = 1, **kwargs: Any):
        if shuffle:
            dataset = torch.utils.data.Subset(dataset, torch.randperm(len(dataset), generator=orders).tolist())
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)

    lucir_module.create_seeded_dataloader = seeded_loader
    settings = LUCIR_SETTINGS
    args = common_args(settings, buffer_size=settings["buffer_size"], minibatch_size=None,
                       lamda_base=settings["lamda_base"], lamda_mr=settings["lamda_mr"], k_mr=settings["k_mr"],
                       mr_margin=settings["mr_margin"], fitting_epochs=settings["fitting_epochs"],
                       lr_finetune=settings["lr_finetune"], imprint_weights=int(settings["imprint_weights"]))
    dataset = original_dataset(args)
    torch.manual_seed(0)
    shape = IMAGE if kind == "mlp" else RGB_IMAGE
    backbone = original_mlp() if kind == "mlp" else original_resnet()
    model = Lucir(backbone, torch.nn.CrossEntropyLoss(), args, None, dataset=dataset)
    with torch.no_grad():
        for block, values in zip(model.net.classifier.weights, head_weights()):
            block.copy_(values)
    losses: list[float] = []
    get_loss = model.get_loss
    model.get_loss = lambda *arguments: (lambda loss: losses.append(loss.item()) or loss)(get_loss(*arguments))
    classifier = model.net.classifier
    result: dict[str, Any] = {"losses": [], "imprinted": [], "blocks": [], "sigma": [], "memory_examples": [],
                              "memory_labels": [], "logits": []}
    for task in range(N_TASKS):
        dataset.train_loader = torch.utils.data.DataLoader(TaskDataset(*task_images(task, shape)), batch_size=BATCH)
        model.net.train()
        model.meta_begin_task(dataset)
        result["imprinted"].append(listed(classifier.weights[task]))
        for inputs, labels, not_aug in dataset.train_loader:
            model.meta_observe(inputs, labels, not_aug, epoch=0)
        model.meta_end_task(dataset)
        result["losses"].append(list(losses))
        losses.clear()
        result["blocks"].append(listed(torch.cat(list(classifier.weights))))
        result["sigma"].append(float(classifier.sigma))
        result["memory_examples"].append(listed(model.buffer.examples[:len(model.buffer)]))
        result["memory_labels"].append(model.buffer.labels[:len(model.buffer)].tolist())
        model.net.eval()
        result["logits"].append(listed(model(probe_images(shape))))
    labels, scores = margin_inputs()
    result["margin_loss"] = float(lucir_batch_hard_triplet_loss(labels, scores, settings["k_mr"],
                                                                settings["mr_margin"], 3))
    return result


def run_original_lwfmc() -> dict:
    """LwF-MC of the original: losses and logits."""
    from models.lwf_mc import LwFMC

    settings = LWFMC_SETTINGS
    args = common_args(settings, wd_reg=settings["wd_reg"])
    dataset = original_dataset(args)
    model = LwFMC(original_mlp(), torch.nn.CrossEntropyLoss(), args, None, dataset=dataset)
    result: dict[str, Any] = {"losses": [], "logits": []}
    for task in range(N_TASKS):
        dataset.train_loader = torch.utils.data.DataLoader(TaskDataset(*task_images(task)), batch_size=BATCH)
        model.net.train()
        model.meta_begin_task(dataset)
        result["losses"].append([model.meta_observe(inputs, labels, not_aug, epoch=0)
                                 for inputs, labels, not_aug in dataset.train_loader])
        model.meta_end_task(dataset)
        model.net.eval()
        result["logits"].append(listed(model(probe_images())))
    return result


def mirror_commit(name: str) -> str:
    """The commit of the local mirror the code was extracted from (``unknown`` without one)."""
    command = ["git", "--git-dir", f"/work/.mirror/{name}/repo", "rev-parse", "HEAD"]
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip() or "unknown"


def main() -> None:
    """Run lucir and lwf_mc of the original in a child process and write the reference file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--original", type=Path, required=True, help="the extracted original Mammoth (git archive)")
    parser.add_argument("--original-path", default=None, help="a directory of packages the original needs (kornia)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    arguments = parser.parse_args()
    if arguments.child:
        torch.set_num_threads(1)  # the sums in the order the tests compute them (they use one thread too)
        import_original(arguments.original.resolve(), arguments.original_path)
        print(json.dumps({
            "source": {"repository": "aimagelab/mammoth", "commit": mirror_commit("aimagelab+mammoth"),
                       "torch": torch.__version__},
            "lucir": {"settings": LUCIR_SETTINGS, **run_original_lucir("mlp")},
            "lucir_resnet": {"settings": LUCIR_SETTINGS, **run_original_lucir("resnet")},
            "lwf_mc": {"settings": LWFMC_SETTINGS, **run_original_lwfmc()},
        }))
        return
    command = [sys.executable, __file__, "--child", "--original", str(arguments.original)]
    if arguments.original_path is not None:
        command += ["--original-path", str(arguments.original_path)]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode:
        raise SystemExit(f"the original's run failed:\n{finished.stderr[-3000:]}")
    reference = json.loads(finished.stdout.strip().splitlines()[-1])
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(reference) + "\n")
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()
