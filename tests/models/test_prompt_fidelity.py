"""l2p, dualprompt and coda-prompt against the ORIGINAL Mammoth's code: the same tiny ViT and
initial weights, the same batches and settings give the losses, chosen prompts and test logits
that ``scripts/reference_prompt_methods.py`` stored from the original's own classes, through
either backbone that serves the token interface (a timm ViT, and the built-in vit holding the
same weights)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import Tensor

from mammoth.backbones.timm import TimmBackbone
from mammoth.backbones.vit import VisionTransformer
from mammoth.datasets.source import InMemorySource
from mammoth.engine.context import build_context
from mammoth.models import build_model
from reference_tasks import PairTasks

REFERENCE = Path(__file__).parent / "data" / "prompt_reference.safetensors"
#: float32 on a CPU, 6 Adam steps; our attention is torch's fused one, the original's partly a softmax by hand.
LOSS_TOLERANCE, LOGIT_TOLERANCE = 1e-5, 1e-4


def _reference() -> tuple[dict[str, Tensor], dict[str, Any], dict[str, str]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(REFERENCE), "pt") as handle:
        metadata = handle.metadata()
    return load_file(str(REFERENCE)), json.loads(metadata["recipe"]), json.loads(metadata["versions"])


TENSORS, RECIPE, VERSIONS = _reference()


def batch(task: int, step: int, size: int) -> tuple[Tensor, Tensor]:
    """The script's batches: normalised inputs and labels of ``step`` of ``task`` (-1: the test batch)."""
    generator = torch.Generator().manual_seed(1000 + 100 * task + step)
    inputs = (torch.rand(size, 3, 32, 32, generator=generator) - 0.5) / 0.5
    labels = 2 * task + torch.randint(0, 2, (size,), generator=generator)
    return inputs, labels


class RecipeDataset(PairTasks):
    """The recipe's benchmark: 4 classes in 2 tasks, batches of 6, no augmentation."""

    name = "prompt-recipe"
    n_classes, n_tasks, setting = RECIPE["n_classes"], RECIPE["n_tasks"], "class-il"
    config = SimpleNamespace(batch_size=RECIPE["batch_size"], n_epochs=1)

    def task_source(self, task: int) -> InMemorySource:
        inputs, labels = batch(task, 0, RECIPE["batch_size"])
        return InMemorySource(inputs, labels)


RUNS = sorted(RECIPE["runs"])


def runs_of(method: str) -> list[str]:
    """The recipe's runs of ``method``."""
    return [run for run in RUNS if RECIPE["runs"][run]["method"] == method]


def timm_backbone() -> tuple[Any, dict[str, Tensor]]:
    """The recipe's ViT as ``backbone=timm``, with the reference's initial weights."""
    spec = RECIPE["backbone"]
    net = TimmBackbone(RECIPE["n_classes"], tuple(spec["input_shape"]), name=spec["name"], model_args=spec["model_args"])
    return net, {key[len("backbone."):]: value for key, value in TENSORS.items() if key.startswith("backbone.")}


def builtin_backbone() -> tuple[Any, dict[str, Tensor]]:
    """The recipe's ViT as the built-in ``backbone=vit`` (torchvision's blocks), the reference's
    initial timm weights renamed to it: the same network, another implementation."""
    args = RECIPE["backbone"]["model_args"]
    net = VisionTransformer(RECIPE["n_classes"], tuple(RECIPE["backbone"]["input_shape"]), patch_size=args["patch_size"],
                            width=args["embed_dim"], depth=args["depth"], heads=args["num_heads"])
    timm = {key[len("backbone.trunk."):]: value for key, value in TENSORS.items() if key.startswith("backbone.trunk.")}
    names = {"cls_token": "stages.0.class_token", "pos_embed": "stages.0.position",
             "patch_embed.proj.weight": "stages.0.projection.weight", "patch_embed.proj.bias": "stages.0.projection.bias",
             "norm.weight": f"stages.{args['depth'] + 1}.norm.weight", "norm.bias": f"stages.{args['depth'] + 1}.norm.bias"}
    parts = {"norm1": "ln_1", "attn.qkv.weight": "self_attention.in_proj_weight",
             "attn.qkv.bias": "self_attention.in_proj_bias", "attn.proj": "self_attention.out_proj", "norm2": "ln_2",
             "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3"}
    state = {"classifier.weight": TENSORS["backbone.classifier.weight"], "classifier.bias": TENSORS["backbone.classifier.bias"]}
    for key, value in timm.items():
        if key in names:
            state[names[key]] = value
            continue
        _, block, rest = key.split(".", 2)
        part = next(part for part in parts if rest.startswith(part))
        state[f"stages.{int(block) + 1}.{parts[part]}{rest[len(part):]}"] = value
    return net, state


BACKBONES = {"timm": timm_backbone, "vit": builtin_backbone}


def build(run: str, backbone: str = "timm") -> Any:
    """Our model of ``run`` on the recipe's ViT, with the reference's initial weights, attached."""
    net, backbone_state = BACKBONES[backbone]()
    dataset = RecipeDataset()
    model = build_model(RECIPE["runs"][run]["method"], net=net, dataset=dataset, **RECIPE["runs"][run]["settings"])
    state = {f"net.{key}": value for key, value in backbone_state.items()}
    prefix = f"{run}.init."
    state.update({key[len(prefix):]: value for key, value in TENSORS.items() if key.startswith(prefix)})
    model.load_state_dict(state)
    model.attach(build_context(dataset, "cpu", torch.Generator().manual_seed(0)))
    return model


def train_recipe(model: Any, run: str) -> tuple[list[float], list[Tensor]]:
    """Both tasks' steps of the recipe; the losses and the prompts chosen before each step (l2p,
    dualprompt)."""
    method = RECIPE["runs"][run]["method"]
    losses, chosen = [], []
    for task in range(RECIPE["n_tasks"]):
        model.train()
        model.begin_task(task)
        if method == "coda_prompt" and task == 1:
            copy_reinitialised_components(model, run, task)
        for step in range(RECIPE["steps"]):
            inputs, labels = batch(task, step, RECIPE["batch_size"])
            if method != "coda_prompt":
                with torch.no_grad():
                    chosen.append(prompts_chosen(model, inputs, train=True))
            losses.append(model.observe(inputs, labels, inputs))
        model.end_epoch(0)  # the recipe's task is one epoch
    model.eval()
    return losses, chosen


def prompts_chosen(model: Any, inputs: Tensor, train: bool) -> Tensor:
    """The prompts l2p or dualprompt picks for ``inputs``, in training or at test."""
    if RECIPE_METHOD[type(model).__name__] == "l2p":
        return model.prompted(inputs)["index"]
    return model.prompted(inputs, train=train)["index"]


RECIPE_METHOD = {"L2P": "l2p", "DualPrompt": "dualprompt"}


def copy_reinitialised_components(model: Any, run: str, task: int) -> None:
    """The original's Gram-Schmidt draws for ``task``'s components (torch's global generator) in
    place of ours (the run's generator); test_coda_prompt checks ours on their own."""
    start, end = task * model.per_task, (task + 1) * model.per_task
    with torch.no_grad():
        for layer in model.layers:
            for part in ("p", "k", "a"):
                getattr(model, f"e_{part}_{layer}")[start:end] = TENSORS[f"{run}.task{task}.e_{part}_{layer}"][start:end]


@functools.cache
def trained(run: str, backbone: str = "timm") -> tuple[Any, list[float], list[Tensor]]:
    """``run``'s model after the recipe (trained once per session), its losses and chosen prompts."""
    model = build(run, backbone)
    return (model, *train_recipe(model, run))


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("run", RUNS)
def test_losses_and_test_logits_match_the_original(run: str, backbone: str) -> None:
    model, losses, _ = trained(run, backbone)
    expected = TENSORS[f"{run}.losses"]
    assert torch.allclose(torch.tensor(losses, dtype=torch.float64), expected, atol=LOSS_TOLERANCE, rtol=0), \
        (losses, expected.tolist())
    test_inputs, _ = batch(0, -1, RECIPE["batch_size"])
    with torch.no_grad():
        logits = model(test_inputs)
    reference = TENSORS[f"{run}.test_logits"]
    assert logits.shape == (RECIPE["batch_size"], RECIPE["n_classes"]) == reference.shape
    assert torch.allclose(logits, reference, atol=LOGIT_TOLERANCE, rtol=0), (logits - reference).abs().max()


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("run", runs_of("l2p") + runs_of("dualprompt"))
def test_the_original_prompts_are_chosen_in_training_and_at_test(run: str, backbone: str) -> None:
    model, _, chosen = trained(run, backbone)
    assert torch.equal(torch.stack(chosen), TENSORS[f"{run}.train_index"])
    with torch.no_grad():
        test_index = prompts_chosen(model, batch(0, -1, RECIPE["batch_size"])[0], train=False)
    assert torch.equal(test_index, TENSORS[f"{run}.test_index"])


def test_the_recipe_covers_what_the_defaults_leave_untested() -> None:
    settings = {run: RECIPE["runs"][run]["settings"] for run in RUNS}
    assert settings["l2p-batchwise-mask"]["batchwise_prompt"] and settings["l2p-batchwise-mask"]["use_prompt_mask"]
    assert settings["dualprompt-permute-fix"]["use_permute_fix"] and not settings["dualprompt"].get("use_permute_fix")
    assert settings["coda_prompt-virtual-batch"]["virtual_bs_iterations"] == 2 and settings["coda_prompt"]["ortho_mu"] > 0
    # batch-wise selection gives every example the same prompts; per-example selection does not
    assert len(TENSORS["l2p-batchwise-mask.test_index"].unique(dim=0)) == 1
    assert len(TENSORS["l2p.test_index"].unique(dim=0)) > 1


def test_the_reference_ran_the_original_with_the_timm_it_pins() -> None:
    assert VERSIONS["original_timm"] == "0.9.8"  # the original's requirements.txt: timm==0.9.8
