"""Reference values of the original Mammoth's ``slca`` and ``ranpac`` (and LAMDA-PILOT's ``simplecil``) for the tests.

The script runs the ORIGINAL code (``models/slca.py`` with ``models/slca_utils``, ``models/ranpac.py``
with ``models/ranpac_utils``, driven through its ContinualModel's ``meta_begin_task`` /
``meta_observe`` / ``meta_end_task``) on a tiny Vision Transformer of the original's own class
(``backbone/vit.py``), whose weights are set by :func:`recipe_tensor` from each tensor's timm name,
on the images of :func:`task_images`, and writes the losses, class statistics, random-projection
results and logits to ``tests/models/data/feature_methods_reference.json``. The tests build the
same tiny ViT with ``backbone=timm`` (the same names, so the same recipe gives the same weights),
feed the same batches to this implementation and hold it to these numbers.

What is adapted to run the original here, and why:

- Its networks are fixed to ViT-B/16 at 224 pixels with pretrained weights, which are not
  downloadable here: SLCA's ``get_convnet`` is replaced by one returning the original's
  ``VisionTransformer`` at 32 pixels, width 48, 2 blocks (then, as the original does for
  ``vit-b-p16``, a fresh final LayerNorm); RanPAC's adapter ViT keeps its hard-coded width 768
  (its weight split needs it) and is built with 2 blocks at 32 pixels.
- ``datasets`` is replaced by a stub (the original imports every benchmark, which needs
  packages not installed here); the stub's ``get_dataset`` answers SLCA's tasks and classes.
- The draws this implementation takes from the run's generator are given to the original
  instead of its own global-RNG draws: the new heads' and the cosine classifier's initial
  weights are recorded from the original, and RanPAC's random projection and the order of
  each task's features are drawn here from ``torch.Generator().manual_seed(seed)`` in the order
  this implementation draws them. SLCA's alignment draws (``MultivariateNormal.sample`` and
  ``randperm`` on the global RNG) are reproduced by seeding the global RNG; the adapters'
  dropout by seeding it before each step.

SimpleCIL is not in the original Mammoth: ``--pilot`` runs LAMDA-PILOT's ``models/simplecil.py``
(its ``Learner.incremental_train`` with a stub DataManager) on the SLCA tiny ViT, whose
``get_backbone`` is replaced the same way, and stores its prototypes and logits
(tests/models/test_simplecil.py). Each codebase runs in its own process (both have top-level
``models`` and ``utils`` packages).

To rerun (about 20 seconds on 2 CPU cores)::

    mkdir -p /tmp/orig-mammoth /tmp/pilot
    git -C /work/.mirror/aimagelab+mammoth/repo archive HEAD | tar -x -C /tmp/orig-mammoth
    git --git-dir /work/.mirror/sun-hailong+LAMDA-PILOT/repo archive HEAD | tar -x -C /tmp/pilot
    pip install --target /tmp/origdeps --no-deps kornia kornia_rs timm==0.9.8   # the timm the original pins
    pip install --target /tmp/pilotdeps --no-deps timm==0.6.13                    # PILOT's (0.6.12 fails on Python 3.11)
    python scripts/reference_feature_methods.py --original /tmp/orig-mammoth --original-path /tmp/origdeps \
        --pilot /tmp/pilot --pilot-path /tmp/pilotdeps

The stored file was written with timm 0.9.8 on the original's side (its ``source`` entry records
the versions); this implementation's side runs on the project's timm.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import types
import zlib
from argparse import Namespace
from pathlib import Path
from typing import Any

import torch

OUTPUT = Path(__file__).resolve().parents[1] / "tests" / "models" / "data" / "feature_methods_reference.json"

#: The benchmark both runs see: 2 tasks of 2 classes, 32x32 RGB images, 6 per class, batches of 4.
N_TASKS, CLASSES_PER_TASK, PER_CLASS, BATCH = 2, 2, 6, 4
IMAGE = (3, 32, 32)
#: The tiny ViTs: (timm model name, its arguments) for this implementation's backbone=timm.
SLCA_VIT = ("vit_tiny_patch16_224", {"embed_dim": 48, "num_heads": 3, "depth": 2})
RANPAC_VIT = ("vit_base_patch16_224", {"depth": 2})
SLCA_SETTINGS = {"lr": 0.05, "ca_epochs": 2, "ca_with_logit_norm": 0.1, "virtual_bs_iterations": 1,
                 "weight_decay": 0.0, "momentum": 0.9, "ca_seed": 7}
RANPAC_SETTINGS = {"lr": 0.05, "rp_size": 32, "adapter_size": 64, "momentum": 0.9, "weight_decay": 0.0005,
                   "seeds": [11, 12], "dropout_seed": 100}


# ---- what both runs share (the tests import these) ----


def recipe_tensor(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The value of the tensor ``name`` (a timm / original state-dict name) of ``shape``: normal draws
    from a generator seeded by the name; matrices with std 1/sqrt(fan-in), norm weights around 1, the rest std 0.1."""
    values = torch.randn(shape, generator=torch.Generator().manual_seed(zlib.crc32(name.encode())))
    if "norm" in name and name.endswith("weight"):
        return 1.0 + 0.1 * values
    if name.endswith("weight") and len(shape) >= 2:
        return values / math.prod(shape[1:]) ** 0.5
    return 0.1 * values


def apply_recipe(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> None:
    """Set every tensor of ``module``'s state dict (but names starting with ``skip``) by :func:`recipe_tensor`."""
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not name.startswith(skip) and tensor.is_floating_point():
                tensor.copy_(recipe_tensor(name, tuple(tensor.shape)))


def task_images(task: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images in [0, 1] and labels of ``task``: each class a fixed colour pattern plus noise."""
    generator = torch.Generator().manual_seed(500 + task)
    labels = torch.arange(CLASSES_PER_TASK).repeat(PER_CLASS) + task * CLASSES_PER_TASK
    patterns = torch.rand(N_TASKS * CLASSES_PER_TASK, *IMAGE, generator=torch.Generator().manual_seed(499))
    images = (0.7 * patterns[labels] + 0.3 * torch.rand(len(labels), *IMAGE, generator=generator)).clamp(0, 1)
    return images, labels


def probe_images() -> torch.Tensor:
    """Images of every class whose logits are compared after each task."""
    return torch.cat([task_images(task)[0][:4] for task in range(N_TASKS)])


def batches(task: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches of ``task``, in order."""
    images, labels = task_images(task)
    return [(images[start : start + BATCH], labels[start : start + BATCH]) for start in range(0, len(labels), BATCH)]


def listed(tensor: torch.Tensor) -> Any:
    """A tensor as nested lists of floats (7 significant digits)."""
    tensor = tensor.detach()
    return [listed(row) for row in tensor] if tensor.ndim else float(f"{float(tensor):.7g}")


# ---- the original's side ----


class FakeLoader(list):
    """A list of ``(inputs, labels)`` with the ``.dataset.transform`` the original's end_task sets."""

    def __init__(self, items: list) -> None:
        super().__init__(items)
        self.dataset = types.SimpleNamespace(transform=None)


def original_dataset(loader_items: list) -> Any:
    """The parts of the original's ContinualDataset its slca and ranpac read."""
    def get_offsets(task: int) -> tuple[int, int]:
        return task * CLASSES_PER_TASK, (task + 1) * CLASSES_PER_TASK

    return types.SimpleNamespace(N_CLASSES=N_TASKS * CLASSES_PER_TASK, N_TASKS=N_TASKS, SETTING="class-il",
                                 N_CLASSES_PER_TASK=CLASSES_PER_TASK, get_offsets=get_offsets, TEST_TRANSFORM=None,
                                 train_loader=FakeLoader(loader_items))


def import_original(root: Path, extra_path: str | None) -> None:
    """Put the original on ``sys.path`` with a stub ``datasets`` package."""
    sys.path[:0] = [str(root)] + ([extra_path] if extra_path else [])
    stub = types.ModuleType("datasets")
    stub.get_dataset = lambda args: types.SimpleNamespace(N_CLASSES_PER_TASK=CLASSES_PER_TASK, N_TASKS=N_TASKS)
    stub.get_dataset_names = stub.get_dataset_config_names = lambda *args, **kwargs: []
    sys.modules["datasets"] = stub


def common_args(**values: Any) -> Namespace:
    """The original's command-line arguments the two methods and its ContinualModel read."""
    return Namespace(optimizer="sgd", optim_nesterov=0, label_perc=1, nowand=1, debug_mode=0, n_epochs=1,
                     buffer_size=0, seed=0, **values)


def run_original_slca() -> dict:
    """SLCA of the original on the tiny ViT: losses, initial heads, class statistics, aligned classifier, logits."""
    from backbone.vit import VisionTransformer
    from models.slca import SLCA
    from models.slca_utils import inc_net

    def tiny_convnet(name: str, pretrained: bool = False) -> torch.nn.Module:
        model = VisionTransformer(img_size=32, patch_size=16, num_classes=0, **SLCA_VIT[1])
        apply_recipe(model)
        model.norm = torch.nn.LayerNorm(model.embed_dim)  # as the original's get_convnet('vit-b-p16')
        return model

    inc_net.get_convnet = tiny_convnet
    torch.manual_seed(0)  # the original's own draws (the heads' initial weights, recorded below)
    settings = SLCA_SETTINGS
    args = common_args(lr=settings["lr"], optim_wd=settings["weight_decay"], optim_mom=0.0, memory_size=0,
                       memory_per_class=0, fixed_memory=0, feature_extractor_type="vit-b-p16",
                       ca_epochs=settings["ca_epochs"], ca_with_logit_norm=settings["ca_with_logit_norm"],
                       milestones="40", lr_decay=0.1, virtual_bs_iterations=settings["virtual_bs_iterations"])
    result: dict[str, Any] = {"losses": [], "initial_heads": [], "logits": []}
    dataset = original_dataset([])
    model = SLCA(None, torch.nn.CrossEntropyLoss(), args, None, dataset=dataset)
    network = model.net._network
    for task in range(N_TASKS):
        dataset.train_loader = FakeLoader(batches(task))
        model.meta_begin_task(dataset)
        model.net.train()
        result["initial_heads"].append({"weight": listed(network.fc.heads[-1][0].weight),
                                        "bias": listed(network.fc.heads[-1][0].bias)})
        result["losses"].append([model.meta_observe(x, y, x, epoch=0) for x, y in batches(task)])
        torch.manual_seed(settings["ca_seed"])
        model.meta_end_task(dataset)
        with torch.no_grad():
            network.eval()
            result["logits"].append(listed(model(probe_images())))
    seen = N_TASKS * CLASSES_PER_TASK
    result["class_means"] = listed(model.class_means[:seen])
    result["class_covariances"] = listed(model.class_covs[:seen])
    result["aligned_weight"] = listed(torch.cat([head[0].weight for head in network.fc.heads]))
    result["aligned_bias"] = listed(torch.cat([head[0].bias for head in network.fc.heads]))
    return result


def run_original_ranpac() -> dict:
    """RanPAC of the original on the tiny adapter ViT: first-session losses, projection results, logits."""
    from backbone.vit import VisionTransformer
    from models.ranpac import RanPAC
    from models.ranpac_utils import inc_net

    adapter_vit = inc_net.VisionTransformer

    def tiny_adapter_vit(**arguments: Any) -> torch.nn.Module:
        return adapter_vit(**{**arguments, "depth": RANPAC_VIT[1]["depth"], "img_size": 32})

    inc_net.VisionTransformer = tiny_adapter_vit
    torch.manual_seed(0)  # the original's own draws (the cosine classifier's initial weights, recorded below)
    settings = RANPAC_SETTINGS
    backbone = VisionTransformer(img_size=32, patch_size=16, num_classes=N_TASKS * CLASSES_PER_TASK, **RANPAC_VIT[1])
    apply_recipe(backbone)
    backbone.device = torch.device("cpu")
    args = common_args(lr=settings["lr"], optim_wd=settings["weight_decay"], optim_mom=settings["momentum"],
                       rp_size=settings["rp_size"])
    dataset = original_dataset([])
    model = RanPAC(backbone, torch.nn.CrossEntropyLoss(), args, None, dataset=dataset)
    convnet = model.net._network.convnet
    for index, block in enumerate(convnet.blocks):  # the adapters by the recipe (the original draws down_proj at random)
        with torch.no_grad():
            for name, tensor in block.adaptmlp.state_dict().items():
                tensor.copy_(recipe_tensor(f"adapters.{index}.{name}", tuple(tensor.shape)))
    result: dict[str, Any] = {"losses": [], "logits": [], "ridges": []}
    ridges: list[float] = []
    select = model.optimise_ridge_parameter
    model.optimise_ridge_parameter = lambda features, targets: ridges.append(select(features, targets)) or ridges[-1]
    setup = model.setup_RP
    for task in range(N_TASKS):
        images, labels = task_images(task)
        generator = torch.Generator().manual_seed(settings["seeds"][task])
        model.meta_begin_task(dataset)
        model.net.train()
        if task == 0:
            result["initial_head"] = listed(model.net._network.fc.weight)
            for step, (x, y) in enumerate(batches(task)):
                torch.manual_seed(settings["dropout_seed"] + step)
                result["losses"].append(model.meta_observe(x, y, x, epoch=0))
            projection = torch.randn(convnet.embed_dim, settings["rp_size"], generator=generator)
            model.setup_RP = lambda projection=projection: (
                setup(), setattr(model.net._network.fc, "W_rand", projection), setattr(model, "W_rand", projection.clone()))
        order = torch.randperm(len(labels), generator=generator)
        dataset.train_loader = FakeLoader([(images[order[s : s + BATCH]], labels[order[s : s + BATCH]])
                                           for s in range(0, len(order), BATCH)])
        model.meta_end_task(dataset)
        with torch.no_grad():
            model.net._network.eval()
            result["logits"].append(listed(model(probe_images())))
    result["ridges"] = ridges
    result["gram"] = listed(model.G)
    result["label_projection"] = listed(model.Q)
    return result


def run_pilot_simplecil(root: Path, extra_path: str | None) -> dict:
    """LAMDA-PILOT's SimpleCIL (the original Mammoth has none) on the SLCA tiny ViT: prototypes and logits."""
    sys.path[:0] = [str(root)] + ([extra_path] if extra_path else [])
    import numpy as np
    import timm
    from models import simplecil
    from timm.models.vision_transformer import VisionTransformer
    from utils import inc_net

    def tiny_backbone(args: dict, pretrained: bool = False) -> torch.nn.Module:
        # timm 0.6's vit_tiny_patch16_224 refuses a new width: its class, with the arguments that name sets
        model = VisionTransformer(img_size=32, patch_size=16, num_classes=0, **SLCA_VIT[1])
        apply_recipe(model)
        model.out_dim = model.embed_dim
        return model.eval()

    class TaskImages(torch.utils.data.Dataset):
        """``(index, image, label)`` of one task, with the ``labels`` PILOT's replace_fc reads."""

        def __init__(self, task: int) -> None:
            self.images, labels = task_images(task)
            self.targets, self.labels = labels, labels.numpy()

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, index: int) -> tuple:
            return index, self.images[index], self.targets[index]

    class DataManager:
        """The parts of PILOT's DataManager its SimpleCIL reads."""

        def get_task_size(self, task: int) -> int:
            return CLASSES_PER_TASK

        def get_dataset(self, indices: Any, source: str, mode: str, **kwargs: Any) -> TaskImages:
            return TaskImages(int(indices[-1]) // CLASSES_PER_TASK)

    inc_net.get_backbone = tiny_backbone
    simplecil.num_workers = 0
    torch.manual_seed(0)
    learner = simplecil.Learner({"memory_size": 0, "device": [torch.device("cpu")],
                                 "backbone_type": "pretrained_vit_b16_224"})
    result: dict[str, Any] = {"logits": []}
    for _ in range(N_TASKS):
        learner.incremental_train(DataManager())
        learner.after_task()
        with torch.no_grad():
            learner._network.eval()
            result["logits"].append(listed(learner._network(probe_images())["logits"]))
    result["prototypes"] = listed(learner._network.fc.weight)
    result["sigma"] = float(learner._network.fc.sigma)
    result["source"] = {"repository": "sun-hailong/LAMDA-PILOT", "commit": mirror_commit("sun-hailong+LAMDA-PILOT"),
                        "timm": timm.__version__, "numpy": np.__version__}
    return result


def mirror_commit(name: str) -> str:
    """The commit of the local mirror the code was extracted from (``unknown`` without one)."""
    command = ["git", "--git-dir", f"/work/.mirror/{name}/repo", "rev-parse", "HEAD"]
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip() or "unknown"


def child_result(arguments: argparse.Namespace, part: str) -> dict:
    """Run one part in a fresh process (the original and PILOT both have top-level ``models`` and ``utils``)."""
    command = [sys.executable, __file__, "--part", part, "--original", str(arguments.original)]
    for flag, value in (("--original-path", arguments.original_path), ("--pilot", arguments.pilot),
                        ("--pilot-path", arguments.pilot_path)):
        if value is not None:
            command += [flag, str(value)]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode:
        raise SystemExit(f"the {part} part failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run slca and ranpac of the original (and PILOT's simplecil) and write the reference file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--original", type=Path, required=True, help="the extracted original Mammoth (git archive)")
    parser.add_argument("--original-path", default=None, help="a directory of packages the original needs (kornia)")
    parser.add_argument("--pilot", type=Path, default=None, help="the extracted LAMDA-PILOT (git archive), for simplecil")
    parser.add_argument("--pilot-path", default=None, help="a directory of packages PILOT needs (timm==0.6.13)")
    parser.add_argument("--part", choices=("mammoth", "pilot"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    arguments = parser.parse_args()
    if arguments.part == "pilot":
        print(json.dumps(run_pilot_simplecil(arguments.pilot.resolve(), arguments.pilot_path)))
        return
    if arguments.part == "mammoth":
        import_original(arguments.original.resolve(), arguments.original_path)
        import timm

        print(json.dumps({
            "source": {"repository": "aimagelab/mammoth", "commit": mirror_commit("aimagelab+mammoth"), "torch": torch.__version__,
                       "timm": timm.__version__},
            "slca": {"settings": SLCA_SETTINGS, **run_original_slca()},
            "ranpac": {"settings": RANPAC_SETTINGS, **run_original_ranpac()},
        }))
        return
    reference = child_result(arguments, "mammoth")
    if arguments.pilot is not None:
        reference["simplecil"] = child_result(arguments, "pilot")
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(reference) + "\n")
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()
