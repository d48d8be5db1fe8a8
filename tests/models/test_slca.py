"""model=slca: the slow learner (backbone at lr/100, one head per task), class statistics and
classifier alignment, held to the original Mammoth's numbers (scripts/reference_feature_methods.py)."""

from __future__ import annotations

import pytest
import torch
from feature_reference import ImageDataset, reference, script, tensor, tiny_vit
from omegaconf import OmegaConf

import mammoth.models.slca  # noqa: F401  registers model=slca
from mammoth.backbones.vit import VisionTransformer
from mammoth.engine.context import build_context
from mammoth.errors import ConfigError
from mammoth.models import build_model
from composing import compose_mammoth


def make_slca(seed: int = 0, **values):
    """slca on the script's tiny ViT and benchmark (reset_final_norm gives the original's fresh final LayerNorm)."""
    settings = {key: value for key, value in reference()["slca"]["settings"].items() if key != "ca_seed"}
    net = tiny_vit("slca")
    net.trunk.norm.eps = 1e-5  # the original's fresh LayerNorm has torch's default eps (reset_final_norm keeps ours)
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


# ---- the slow learner, on the fake 2-task MLP benchmark of conftest.py ----


def test_backbone_learns_at_a_hundredth_of_the_heads_rate_and_only_the_current_head_trains(make_model) -> None:
    model = make_model("slca", lr=0.1)
    model.begin_task(0)
    backbone, head = model.optimizer.param_groups
    assert (backbone["lr"], head["lr"], head["momentum"]) == (pytest.approx(0.001), 0.1, 0.9)
    assert [id(p) for p in backbone["params"]] == [id(p) for p in model.net.parameters()]
    assert [id(p) for p in head["params"]] == [id(p) for p in model.heads[0].parameters()]
    model.begin_task(1)
    assert [id(p) for p in model.optimizer.param_groups[1]["params"]] == [id(p) for p in model.heads[1].parameters()]
    assert not any(p.requires_grad for p in model.heads[0].parameters())
    assert model.heads[1].bias.abs().sum() == 0 and 0.01 < float(model.heads[1].weight.detach().std()) < 0.03  # std 0.02


def test_virtual_batches_step_as_the_original_after_batches_k_2k(make_model, make_batch) -> None:
    # virtual_bs_iterations=2: no step after batches 0 and 1; after batch 2 one step with (g0 + g1 + g2) / 2
    model = make_model("slca", lr=0.1, virtual_bs_iterations=2)
    model.begin_task(0)
    batches = [make_batch(0, seed=seed) for seed in range(3)]
    start = model.heads[0].weight.detach().clone()
    summed = torch.zeros_like(start)
    for inputs, labels, _ in batches:
        head = model.heads[0]
        loss = model.loss(head(model.net(inputs, returnt="features")), labels)
        summed += torch.autograd.grad(loss, head.weight)[0] / 2
    for number, batch in enumerate(batches):
        model.observe(*batch)
        if number < 2:
            assert torch.equal(model.heads[0].weight, start)
    assert torch.allclose(model.heads[0].weight, start - 0.1 * summed, atol=1e-6)


def test_statistics_are_class_means_and_covariances_and_alignment_follows_the_runs_generator(make_model, run_task) -> None:
    model, again, other = make_model("slca", lr=0.1), make_model("slca", lr=0.1), make_model("slca", lr=0.1, seed=1)
    for each in (model, again, other):
        for task in range(2):
            run_task(each, task)
    data = model.context.task_data(1)
    with torch.no_grad():
        model.net.eval()
        features = model.net(model.context.test_transform(data.read(torch.arange(len(data)), "cpu")), returnt="features")
    chosen = features[data.labels == 2]
    assert torch.allclose(model.class_means[2], chosen.mean(0), atol=1e-5)
    assert torch.allclose(model.class_covariances[2], torch.cov(chosen.T) + 1e-4 * torch.eye(chosen.shape[1]), atol=1e-5)
    assert int(model.aligned_tasks) == 2
    assert torch.equal(model.aligned_weight, again.aligned_weight)  # the same seed, the same samples
    assert not torch.equal(model.aligned_weight, other.aligned_weight)
    x = torch.rand(3, 1, 4, 4)
    expected = torch.nn.functional.linear(model.net(x, returnt="features"), model.aligned_weight, model.aligned_bias)
    assert torch.allclose(model(x), expected, atol=1e-6)


def test_the_next_task_trains_from_the_heads_before_alignment(make_model, run_task) -> None:
    model = make_model("slca", lr=0.1)
    for task in range(2):
        run_task(model, task)
    trained = model.heads[0].weight.detach().clone()
    assert not torch.allclose(model.aligned_weight[:2], trained)
    x = torch.rand(3, 1, 4, 4)
    model.seen_tasks.fill_(1), model.aligned_tasks.zero_()
    assert torch.equal(model(x)[:, :2], model.heads[0](model.net(x, returnt="features")))


def test_refusals_name_the_value_and_what_is_allowed(make_net, dataset) -> None:
    with pytest.raises(ConfigError, match="slca on a domain-il benchmark; allowed: class-il or task-il"):
        dataset.setting = "domain-il"
        build_model("slca", net=make_net(), dataset=dataset)
    dataset.setting = "class-il"
    with pytest.raises(ConfigError, match="model.ca_with_logit_norm"):
        build_model("slca", net=make_net(), dataset=dataset, ca_with_logit_norm=-1.0)
    with pytest.raises(ConfigError, match="model.virtual_bs_iterations"):
        build_model("slca", net=make_net(), dataset=dataset, virtual_bs_iterations=0)


def test_preset_holds_the_originals_settings() -> None:
    cfg = compose_mammoth("experiment=slca-seq-cifar100-224")
    values = {key: OmegaConf.select(cfg, key) for key in (
        "dataset.name", "dataset.batch_size", "dataset.n_epochs", "model.lr", "model.ca_epochs",
        "model.ca_with_logit_norm", "model.momentum", "backbone.name", "backbone.pretrained")}
    assert values == {"dataset.name": "seq-cifar100-224", "dataset.batch_size": 128, "dataset.n_epochs": 20,
                      "model.lr": 0.01, "model.ca_epochs": 5, "model.ca_with_logit_norm": 0.1, "model.momentum": 0.9,
                      "backbone.name": "vit-b16-in21k", "backbone.pretrained": True}
    assert cfg.model._target_ == "mammoth.models.slca.SLCA"


def test_the_final_layer_norm_of_a_vit_starts_afresh_as_the_originals() -> None:
    recipe = tiny_vit("slca").trunk
    fresh = build_model("slca", net=tiny_vit("slca"), dataset=ImageDataset()).net.trunk
    kept = build_model("slca", net=tiny_vit("slca"), dataset=ImageDataset(), reset_final_norm=False).net.trunk
    assert torch.equal(fresh.norm.weight, torch.ones(48)) and torch.equal(fresh.norm.bias, torch.zeros(48))
    assert torch.equal(kept.norm.weight, recipe.norm.weight) and not torch.equal(recipe.norm.weight, torch.ones(48))
    assert torch.equal(fresh.blocks[1].norm2.weight, recipe.blocks[1].norm2.weight)  # only the final norm
    vit = VisionTransformer(num_classes=4, input_shape=(3, 32, 32), patch_size=8, width=12, depth=1, heads=3)
    with torch.no_grad():
        vit.stages[-1].norm.weight.fill_(2.0)
    assert torch.equal(build_model("slca", net=vit, dataset=ImageDataset()).net.stages[-1].norm.weight, torch.ones(12))
