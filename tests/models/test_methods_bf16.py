"""Every registered method under ``precision=bf16`` on seq-digits learns as it does under fp32, and
autocast never computes with a stale copy of a weight updated inside a training step (mer's
per-example optimizer steps and Reptile updates diverged to a loss of 1e6 under bf16 when it did)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mammoth.backbones import build_backbone
from mammoth.datasets import build_dataset
from mammoth.engine.loop import run_tasks
from mammoth.engine.precision import autocast
from mammoth.models import MODELS, build_model

#: Arguments of the methods that need some: the original's best for seq-mnist where a method has no
#: default (ewc_on and mer as tests/test_methods_seq_digits.py runs them; ewc_on at its lr 0.03: at
#: 0.1 its penalty of weight 90 makes the steps oscillate, and any rounding changes the loss by 25 %),
#: inner loops shortened as the resume tests do, ranpac and the prompt methods sized for 2 blocks.
BUFFER = {"buffer_size": 64}
ARGUMENTS = {
    "agem": BUFFER, "der": BUFFER, "derpp": BUFFER, "er": BUFFER, "er-ace": BUFFER, "gem": BUFFER, "icarl": BUFFER,
    "bic": {**BUFFER, "bic_epochs": 10},
    "gdumb": {**BUFFER, "fitting_epochs": 4},
    "lucir": {**BUFFER, "fitting_epochs": 2},
    "mer": {**BUFFER, "beta": 1.0, "gamma": 1.0},
    "xder": {**BUFFER, "alpha": 0.3, "beta": 0.8},
    "ewc-on": {"e_lambda": 90.0, "gamma": 1.0, "lr": 0.03},
    "si": {"c": 10.0, "xi": 0.9},
    "mas": {"lr": 0.01},  # at lr 0.1 its default penalty (lambda_reg 1) on the unnormalised importances diverges
    "ranpac": {"adapter_size": 4, "rp_size": 32},
    "dualprompt": {"g_prompt_layer_idx": [0], "e_prompt_layer_idx": [1]},
    "coda-prompt": {"pool_size": 10},
}

#: The band of a bf16 run around the fp32 one. bf16 keeps 8 significant bits of every matmul input
#: (a relative rounding of up to 2**-9, about 0.2 %), and sums in float32. Measured on these runs
#: (seeds 1 and 7, every method): each task's last-epoch loss within 0.6 % of fp32's, each task's
#: final Class-IL accuracy within 3.3 points (6 of the ~180 test images of a task). The band is a
#: few times that, so other CPUs and GPUs (whose bf16 kernels sum in other orders) stay inside it; a
#: run that computes with stale weights (mer under autocast's weight cache) is 40 to 94 points and
#: 100 to 1e8 times the loss away.
LOSS_BAND = 0.05  # relative
ACCURACY_BAND = 10.0  # points


def arguments(name: str) -> dict:
    """The arguments ``name`` runs with: :data:`ARGUMENTS`, or for a method not listed there a value
    for each argument without a default (sizes 64, other numbers 0.5), as the resume tests do."""
    if name in ARGUMENTS:
        return ARGUMENTS[name]
    memory = MODELS.get(name).argument("memory_per_class") is not None  # a memory of either size: buffer_size then
    return {argument.name: 64 if "size" in argument.name else (1 if argument.hint is int else 0.5)
            for argument in MODELS.get(name).arguments
            if argument.required or (memory and argument.name == "buffer_size")}


def tiny_network(name: str, dataset) -> torch.nn.Module:
    """The backbone these tests train ``name`` on: an MLP of 32 hidden units, or a 2-block vit of width 24
    for a method that needs tokens."""
    if getattr(MODELS.get(name).target, "requires_tokens", False):
        return build_backbone("vit", num_classes=dataset.n_classes, input_shape=dataset.input_shape, patch_size=4,
                              width=24, depth=2, heads=3)
    return build_backbone("mnistmlp", num_classes=dataset.n_classes, input_shape=dataset.input_shape, hidden_sizes=[32])


def run(name: str, precision: str, run_dir: Path) -> tuple[list[float], list[float]]:
    """``name`` on seq-digits in 2 tasks of 5 digits (1 epoch, batches of 32, seed 7) under ``precision``,
    on an MLP of 32 hidden units (a 2-block vit of width 24 for methods that need tokens): each task's
    last-epoch loss and the final Class-IL accuracy of each task."""
    dataset = build_dataset({"name": "seq-digits", "n_epochs": 1, "batch_size": 32, "n_tasks": 2}, seed=7)
    torch.manual_seed(7)
    model = build_model(name, net=tiny_network(name, dataset), dataset=dataset, **arguments(name))
    losses: dict[int, float] = {}
    state = run_tasks(model, dataset, torch.device("cpu"), run_dir, 7, {"model": name}, precision=precision,
                      on_epoch_end=lambda task, epoch, loss: losses.__setitem__(task, loss))
    return [losses[task] for task in sorted(losses)], state.accuracies["class_il"][-1]


@pytest.fixture
def one_thread():
    """torch on one CPU thread for the test (``threads=1``: these tiny steps only wait on a second one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", sorted(MODELS.names()))
def test_every_method_learns_under_bf16_as_under_fp32(tmp_path: Path, name: str, one_thread) -> None:
    (tmp_path / "fp32").mkdir(), (tmp_path / "bf16").mkdir()
    full_losses, full_accuracies = run(name, "fp32", tmp_path / "fp32")
    mixed_losses, mixed_accuracies = run(name, "bf16", tmp_path / "bf16")
    assert len(mixed_losses) == len(full_losses)  # the same tasks trained in the main loop
    for task, (full, mixed) in enumerate(zip(full_losses, mixed_losses)):
        assert abs(mixed - full) <= LOSS_BAND * full, f"task {task + 1}: loss {mixed} under bf16, {full} under fp32"
    for task, (full, mixed) in enumerate(zip(full_accuracies, mixed_accuracies)):
        assert abs(mixed - full) <= ACCURACY_BAND, f"task {task + 1}: Class-IL {mixed} under bf16, {full} under fp32"


def test_a_weight_updated_inside_the_autocast_region_reaches_the_next_forward() -> None:
    layer = torch.nn.Linear(8, 2)
    x = torch.randn(4, 8)
    with autocast("bf16", "cpu"):
        before = layer(x)
        with torch.no_grad():
            layer.weight.mul_(-1.0)  # in place, as an optimizer step or mer's Reptile update
        after = layer(x)
    with autocast("bf16", "cpu"):
        fresh = layer(x)
    assert after.dtype == torch.bfloat16
    assert torch.equal(after, fresh) and not torch.equal(after, before)
