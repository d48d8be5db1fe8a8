"""Reference values of the original Mammoth's LiDER (``models/derpp_lider.py`` over
``models/utils/lider_model.py``) and STAR (``models/er_star.py`` and ``models/derpp_star.py`` over
``models/star_utils/star_perturber.py``) for the tests of ``model=derpp +model/regularizer=lider``.

The script runs the ORIGINAL code unchanged in a child process (``DerppLider`` driven through its
ContinualModel's ``meta_begin_task`` / ``meta_observe`` / ``meta_end_task``) on a tiny network of
two convolution stages through the original's backbone interface (``MammothBackbone``,
``returnt='full'`` giving ``(logits, [stage1, stage2])``, as its ResNet gives its stages), on the
batches of :func:`batches`, and writes its losses step by step over 2 tasks, its Lipschitz budget
and the logits after each task to ``tests/models/data/regularizers_reference.json``. The tests
(``tests/models/test_regularizers.py``) build the same network as a mammoth backbone (the stages
and the pooled features of ``returnt="full"``), feed the same batches to ``derpp`` with
``regularizer=lider`` and to ``er`` and ``derpp`` with ``regularizer=star``, and hold them to these numbers.

What is adapted to run the original here, and why:

- ``datasets`` is replaced by a stub (the original imports every benchmark, which needs packages
  not installed here; ``derpp_star`` imports ``ContinualDataset`` for a type hint only); the
  dataset's ``train_loader`` is the list of the task's batches.
- STAR's proxy network (the original's ``get_backbone(args)``) is the same tiny network (its
  weights are loaded from the trained one before each use). Its noise scale, the module constant
  ``EPS`` (1e-20: below float32's resolution, so the proxy starts at the network, where the
  divergence and its gradient are rounding noise, which the original then scales to each weight's
  norm: the first step follows the last bits of the computation, which differ between thread
  counts and CPUs), is set to ``STAR_EPS`` here and in the tests, and its noise (``torch.randn_like``,
  called by ``init_rand`` only) draws from ``torch.Generator().manual_seed(STAR_SEED)``, as the
  regulariser's generator does in the tests.
- The draws this implementation takes from its own generators are given to the original instead
  of its global-RNG draws: ``torch.rand`` (the power iteration's random start, the only call of it
  in the code run) draws from ``torch.Generator().manual_seed(LIP_SEED)``, as the regulariser's
  generator does in the tests; the buffer's ``np.random.choice`` is recorded, and the tests replay
  the same indices from this implementation's buffer (both buffers hold the stream in order: it
  never fills).
- The network has no pre-ReLU outputs to return (``set_return_prerelu`` is a no-op): the stage
  outputs are what both sides distil (docs/differences.md: this implementation's ResNet gives its
  stages after the ReLU).

To rerun (about 10 seconds on 2 CPU cores)::

    mkdir -p /tmp/orig-mammoth && git -C /work/.mirror/aimagelab+mammoth/repo archive HEAD | tar -x -C /tmp/orig-mammoth
    pip install --target /tmp/origdeps --no-deps kornia kornia_rs timm==0.9.8
    python scripts/reference_twf_regularizers.py --original /tmp/orig-mammoth --original-path /tmp/origdeps
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
from torch import nn

OUTPUT = Path(__file__).resolve().parents[1] / "tests" / "models" / "data" / "regularizers_reference.json"

#: 2 tasks of 2 classes, 3x8x8 images, 8 per class, batches of 4; a memory that never fills.
N_TASKS, CLASSES_PER_TASK, PER_CLASS, BATCH = 2, 2, 8, 4
IMAGE = (3, 8, 8)
LIDER_SETTINGS = {"lr": 0.05, "alpha": 0.3, "beta": 0.3, "alpha_lip_lambda": 0.3, "beta_lip_lambda": 0.5,
                  "buffer_size": 100, "minibatch_size": 4, "headless_init_act": "relu", "grad_iter_step": -2}
#: STAR's settings: p_gamma and p_lam large enough that the perturbation moves the losses visibly.
STAR_SETTINGS = {"lr": 0.05, "alpha": 0.3, "beta": 0.3, "buffer_size": 100, "minibatch_size": 4, "p_steps": 2,
                 "p_lam": 4.0, "p_gamma": 0.3}
#: STAR's noise scale in the fidelity runs (the original's module constant ``EPS``, 1e-20, set on both
#: sides; module docstring) and the seed of the generator its noise draws from (both sides).
STAR_EPS, STAR_SEED = 1e-3, 4321
#: The seed of the generator the power iterations draw their random start from (both sides).
LIP_SEED = 1234


# ---- what both runs share (the tests import these) ----


def tiny_modules() -> tuple[nn.Module, nn.Module, nn.Linear]:
    """The two convolution stages and the classifier, with the same initial weights on both sides.

    Tanh, not ReLU: LiDER divides each pixel's features by their norm over the channels (plus
    float32's epsilon), so a pixel whose channels are all 0 after a ReLU, or all just above 0,
    gives 0 or values of order 1 by the last bits of the convolution: the same code then differs
    between thread counts. Tanh's outputs are never all 0."""
    torch.manual_seed(0)
    first = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh())
    second = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.Tanh())
    return first, second, nn.Linear(6, N_TASKS * CLASSES_PER_TASK)


def task_images(task: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images in [0, 1] and labels of ``task``: each class a fixed pattern plus noise."""
    generator = torch.Generator().manual_seed(700 + task)
    labels = torch.arange(CLASSES_PER_TASK).repeat(PER_CLASS) + task * CLASSES_PER_TASK
    patterns = torch.rand(N_TASKS * CLASSES_PER_TASK, *IMAGE, generator=torch.Generator().manual_seed(699))
    images = (0.6 * patterns[labels] + 0.4 * torch.rand(len(labels), *IMAGE, generator=generator)).clamp(0, 1)
    return images, labels


def batches(task: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches of ``task``, in order."""
    images, labels = task_images(task)
    return [(images[start : start + BATCH], labels[start : start + BATCH]) for start in range(0, len(labels), BATCH)]


def probe_images() -> torch.Tensor:
    """Images of every class whose logits are compared after each task."""
    return torch.cat([task_images(task)[0][:4] for task in range(N_TASKS)])


def listed(tensor: torch.Tensor) -> Any:
    """A tensor as nested lists of floats (10 significant digits)."""
    tensor = tensor.detach()
    return [listed(row) for row in tensor] if tensor.ndim else float(f"{float(tensor):.10g}")


# ---- the original's side ----


def import_original(root: Path, extra_path: str | None) -> None:
    """Put the original on ``sys.path`` with a stub ``datasets`` package."""
    sys.path[:0] = [str(root)] + ([extra_path] if extra_path else [])
    stub = types.ModuleType("datasets")
    stub.get_dataset = lambda args: types.SimpleNamespace(N_CLASSES_PER_TASK=CLASSES_PER_TASK, N_TASKS=N_TASKS)
    stub.get_dataset_names = stub.get_dataset_config_names = lambda *args, **kwargs: []
    stub.__path__ = []  # a package: derpp_star imports datasets.utils.continual_dataset (for a type hint)
    utils, continual = types.ModuleType("datasets.utils"), types.ModuleType("datasets.utils.continual_dataset")
    continual.ContinualDataset = object
    utils.__path__ = []
    sys.modules.update({"datasets": stub, "datasets.utils": utils, "datasets.utils.continual_dataset": continual})


def original_dataset() -> Any:
    """The parts of the original's ContinualDataset its ContinualModel and LiDER read."""
    def get_offsets(task: int) -> tuple[int, int]:
        return task * CLASSES_PER_TASK, (task + 1) * CLASSES_PER_TASK

    return types.SimpleNamespace(N_CLASSES=N_TASKS * CLASSES_PER_TASK, N_TASKS=N_TASKS, SETTING="class-il",
                                 N_CLASSES_PER_TASK=CLASSES_PER_TASK, get_offsets=get_offsets, TEST_TRANSFORM=None,
                                 train_loader=[])


def original_tiny() -> type:
    """The tiny network's class through the original's backbone interface."""
    from backbone import MammothBackbone

    class Tiny(MammothBackbone):
        """The tiny network through the original's backbone interface."""

        def __init__(self) -> None:
            super().__init__()
            self.stage1, self.stage2, self.classifier = tiny_modules()

        def set_return_prerelu(self, enable: bool = True) -> None:
            """No pre-ReLU outputs here (module docstring)."""

        def forward(self, x: torch.Tensor, returnt: str = "out") -> Any:
            first = self.stage1(x)
            second = self.stage2(first)
            features = second.mean((2, 3))
            if returnt == "features":
                return features
            out = self.classifier(features)
            if returnt == "out":
                return out
            if returnt == "both":
                return out, features
            return out, [first, second]

    return Tiny


def record_choices() -> list[list[int]]:
    """Record every ``np.random.choice`` (the original buffer's draws) in the list returned."""
    import numpy as np

    np.random.seed(0)  # the reference file is the same at every rerun
    draws: list[list[int]] = []
    plain_choice = np.random.choice

    def recorded_choice(*args: Any, **kwargs: Any) -> Any:
        choice = plain_choice(*args, **kwargs)
        draws.append([int(index) for index in np.atleast_1d(choice)])
        return choice

    np.random.choice = recorded_choice
    np.random.choice.plain = plain_choice
    return draws


def run_original_lider() -> dict:
    """DerppLider of the original on the tiny network: losses, buffer draws, budget, logits."""
    import numpy as np
    from models.derpp_lider import DerppLider

    Tiny = original_tiny()
    lip_generator = torch.Generator().manual_seed(LIP_SEED)
    plain_rand = torch.rand
    torch.rand = lambda *size, **kwargs: plain_rand(*size, **{"generator": lip_generator, **kwargs})
    draws = record_choices()
    settings = LIDER_SETTINGS
    args = Namespace(optimizer="sgd", optim_nesterov=0, label_perc=1, nowand=1, debug_mode=0, n_epochs=1, seed=0,
                     lr=settings["lr"], optim_wd=0.0, optim_mom=0.0, buffer_size=settings["buffer_size"],
                     minibatch_size=settings["minibatch_size"], alpha=settings["alpha"], beta=settings["beta"],
                     alpha_lip_lambda=settings["alpha_lip_lambda"], beta_lip_lambda=settings["beta_lip_lambda"],
                     headless_init_act=settings["headless_init_act"], grad_iter_step=settings["grad_iter_step"])
    dataset = original_dataset()
    model = DerppLider(Tiny(), nn.CrossEntropyLoss(), args, None, dataset=dataset)
    result: dict[str, Any] = {"losses": [], "draws": draws, "logits": []}
    for task in range(N_TASKS):
        dataset.train_loader = batches(task)
        model.meta_begin_task(dataset)
        if task == 0:
            result["budget"] = listed(model.net.lip_coeffs)
        model.net.train()
        result["losses"].append([model.meta_observe(x, y, x, epoch=0) for x, y in batches(task)])
        model.meta_end_task(dataset)
        with torch.no_grad():
            model.net.eval()
            result["logits"].append(listed(model.net(probe_images())))
    torch.rand = plain_rand
    np.random.choice = np.random.choice.plain
    return result


def run_original_star(which: str) -> dict:
    """ErSTAR or DerppSTAR of the original on the tiny network: losses, buffer draws, logits (its
    proxy's noise draws from torch's global generator, seeded: 1e-20 of each weight's norm, below
    float32's resolution)."""
    import numpy as np
    from models.derpp_star import DerppSTAR
    from models.er_star import ErSTAR
    from models.star_utils import star_perturber

    Tiny = original_tiny()
    star_perturber.get_backbone = lambda args: Tiny()  # the proxy: the same network (its weights are loaded)
    star_perturber.EPS = STAR_EPS  # module docstring: the noise's scale, so the first step follows a gradient
    noise = torch.Generator().manual_seed(STAR_SEED)
    plain_randn_like = torch.randn_like
    torch.randn_like = lambda tensor, **kwargs: torch.randn(tensor.shape, generator=noise).to(tensor)  # init_rand's only
    draws = record_choices()
    settings = STAR_SETTINGS
    args = Namespace(optimizer="sgd", optim_nesterov=0, label_perc=1, nowand=1, debug_mode=0, n_epochs=1, seed=0,
                     lr=settings["lr"], optim_wd=0.0, optim_mom=0.0, buffer_size=settings["buffer_size"],
                     minibatch_size=settings["minibatch_size"], alpha=settings["alpha"], beta=settings["beta"],
                     p_steps=settings["p_steps"], p_lam=settings["p_lam"], p_gamma=settings["p_gamma"])
    dataset = original_dataset()
    model = {"er": ErSTAR, "derpp": DerppSTAR}[which](Tiny(), nn.CrossEntropyLoss(), args, None, dataset=dataset)
    result: dict[str, Any] = {"losses": [], "draws": draws, "logits": []}
    for task in range(N_TASKS):
        dataset.train_loader = batches(task)
        model.meta_begin_task(dataset)
        model.net.train()
        result["losses"].append([model.meta_observe(x, y, x, epoch=0) for x, y in batches(task)])
        model.meta_end_task(dataset)
        with torch.no_grad():
            model.net.eval()
            result["logits"].append(listed(model.net(probe_images())))
    np.random.choice = np.random.choice.plain
    torch.randn_like = plain_randn_like
    return result


def mirror_commit(name: str) -> str:
    """The commit of the local mirror the code was extracted from (``unknown`` without one)."""
    command = ["git", "--git-dir", f"/work/.mirror/{name}/repo", "rev-parse", "HEAD"]
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip() or "unknown"


def main() -> None:
    """Run the original's derpp_lider in a child process and write the reference file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--original", type=Path, required=True, help="the extracted original Mammoth (git archive)")
    parser.add_argument("--original-path", default=None, help="a directory of packages the original needs (kornia)")
    parser.add_argument("--part", choices=("mammoth",), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    arguments = parser.parse_args()
    if arguments.part == "mammoth":
        import_original(arguments.original.resolve(), arguments.original_path)
        print(json.dumps({"source": {"repository": "aimagelab/mammoth", "commit": mirror_commit("aimagelab+mammoth"),
                                     "torch": torch.__version__},
                          "lider": {"settings": LIDER_SETTINGS, "lip_seed": LIP_SEED, **run_original_lider()},
                          "star": {"settings": STAR_SETTINGS, "eps": STAR_EPS, "noise_seed": STAR_SEED,
                                   **run_original_star("er")},
                          "derpp_star": {"settings": STAR_SETTINGS, "eps": STAR_EPS, "noise_seed": STAR_SEED,
                                         **run_original_star("derpp")}}))
        return
    command = [sys.executable, __file__, "--part", "mammoth", "--original", str(arguments.original)]
    if arguments.original_path is not None:
        command += ["--original-path", str(arguments.original_path)]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode:
        raise SystemExit(f"the original's run failed:\n{finished.stderr[-3000:]}")
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(json.loads(finished.stdout.strip().splitlines()[-1])) + "\n")
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()
