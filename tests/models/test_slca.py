"""model=slca: the slow learner (backbone at lr/100, one head per task), class statistics and
classifier alignment, held to the original Mammoth's numbers (scripts/reference_feature_methods.py)."""

from __future__ import annotations

import torch
from feature_reference import ImageDataset, reference, script, tensor, tiny_vit
from torch import nn

import mammoth.models.slca  # noqa: F401  registers model=slca
from mammoth.engine.context import build_context
from mammoth.models import build_model


def make_slca(seed: int = 0, **values):
    """slca on the script's tiny ViT (with the original's fresh final LayerNorm) and benchmark."""
    settings = {key: value for key, value in reference()["slca"]["settings"].items() if key != "ca_seed"}
    net = tiny_vit("slca")
    net.trunk.norm = nn.LayerNorm(net.num_features)  # the original's get_convnet('vit-b-p16') does this
    dataset = ImageDataset()
    model = build_model("slca", net=net, dataset=dataset, **{**settings, **values})
    model.attach(build_context(dataset, "cpu", torch.Generator().manual_seed(seed)))
    return model


def run_like_the_script(model) -> dict:
    """The script's run: per task, the original's initial head, its batches, end_task with the
    generator at the alignment seed; the losses and the probe's logits after each task."""
    recorded = reference()["slca"]
    losses, logits = [], []
    for task in range(2):
        model.begin_task(task)
        with torch.no_grad():
            model.heads[task].weight.copy_(tensor(recorded["initial_heads"][task]["weight"]))
            model.heads[task].bias.copy_(tensor(recorded["initial_heads"][task]["bias"]))
        model.train()
        losses.append([model.observe(x, y, x) for x, y in script().batches(task)])
        model.context.generator.manual_seed(recorded["settings"]["ca_seed"])
        model.end_task(task, model.context.task_data(task))
        model.eval()
        with torch.no_grad():
            logits.append(model(script().probe_images()))
    return {"losses": losses, "logits": logits}


def test_slca_matches_the_originals_losses_statistics_alignment_and_logits() -> None:
    recorded = reference()["slca"]
    model = make_slca()
    ours = run_like_the_script(model)
    assert torch.allclose(torch.tensor(ours["losses"]), tensor(recorded["losses"]), atol=1e-5)
    assert torch.allclose(model.class_means, tensor(recorded["class_means"]), atol=1e-5)
    assert torch.allclose(model.class_covariances, tensor(recorded["class_covariances"]), atol=1e-6)
    assert torch.allclose(model.aligned_weight, tensor(recorded["aligned_weight"]), rtol=1e-4, atol=1e-4)
    assert torch.allclose(model.aligned_bias, tensor(recorded["aligned_bias"]), rtol=1e-4, atol=1e-4)
    for task, logits in enumerate(ours["logits"]):
        seen = 2 * (task + 1)
        assert torch.allclose(logits[:, :seen], tensor(recorded["logits"][task]), rtol=1e-4, atol=1e-3)
        assert (logits[:, seen:] == float("-inf")).all()
