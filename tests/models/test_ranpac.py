"""model=ranpac: first-session adapters, random projection, Gram matrix, ridge selection and the
solved classifier, held to the original Mammoth's numbers (scripts/reference_feature_methods.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from feature_reference import ImageDataset, reference, script, tensor, tiny_vit
from omegaconf import OmegaConf

import mammoth.models.ranpac  # noqa: F401  registers model=ranpac
from mammoth.backbones.timm import TimmBackbone
from mammoth.backbones.vit import VisionTransformer
from mammoth.engine.context import build_context
from mammoth.errors import BackboneError, ConfigError
from mammoth.models import build_model
from mammoth.models.ranpac import RIDGES
from composing import compose_mammoth


def make_ranpac(seed: int = 0, net=None, **values):
    """ranpac on the script's tiny adapter ViT (width 768, 2 blocks) and benchmark."""
    settings = {key: value for key, value in reference()["ranpac"]["settings"].items()
                if key not in ("seeds", "dropout_seed")}
    dataset = ImageDataset()
    model = build_model("ranpac", net=tiny_vit("ranpac") if net is None else net, dataset=dataset,
                        **{**settings, **values})
    model.attach(build_context(dataset, "cpu", torch.Generator().manual_seed(seed)))
    return model


def test_ranpac_matches_the_originals_first_session_projection_ridge_and_logits() -> None:
    recorded = reference()["ranpac"]
    settings = recorded["settings"]
    model = make_ranpac()
    losses, logits = [], []
    for task in range(2):
        model.begin_task(task)
        if task == 0:
            with torch.no_grad():
                for index, adapter in enumerate(model.adapters):
                    for name, value in adapter.state_dict().items():
                        value.copy_(script().recipe_tensor(f"adapters.{index}.{name}", tuple(value.shape)))
                model.cosine_head.weight.copy_(tensor(recorded["initial_head"]))
            model.train()
            for step, (x, y) in enumerate(script().batches(0)):
                torch.manual_seed(settings["dropout_seed"] + step)  # the adapters' dropout, as the script seeds it
                losses.append(model.observe(x, y, x))
        model.context.generator.manual_seed(settings["seeds"][task])
        model.end_task(task, model.context.task_data(task))
        assert float(model.ridge) == recorded["ridges"][task]
        model.eval()
        with torch.no_grad():
            logits.append(model(script().probe_images()))
    assert torch.allclose(torch.tensor(losses), tensor(recorded["losses"]), atol=1e-5)
    assert torch.allclose(model.gram, tensor(recorded["gram"]), rtol=1e-4, atol=1e-3)
    assert torch.allclose(model.label_projection, tensor(recorded["label_projection"]), rtol=1e-4, atol=1e-4)
    for task, scores in enumerate(logits):
        seen = 2 * (task + 1)
        assert torch.allclose(scores[:, :seen], tensor(recorded["logits"][task]), rtol=1e-3, atol=1e-4)
        assert (scores[:, seen:] == float("-inf")).all()


# ---- behaviour, on a small built-in vit and on the MLP benchmark of conftest.py ----


def small_vit() -> VisionTransformer:
    """The built-in vit at 32 pixels: patches of 8, width 12, 2 blocks."""
    torch.manual_seed(0)
    return VisionTransformer(num_classes=4, input_shape=(3, 32, 32), patch_size=8, width=12, depth=2, heads=3)


def test_adapters_run_parallel_to_each_blocks_mlp_on_the_residual_stream() -> None:
    model = make_ranpac(net=small_vit(), adapter_size=4, rp_size=8)
    model.begin_task(0)
    with torch.no_grad():
        for adapter in model.adapters:
            adapter.up_proj.weight.normal_()
    model.eval()
    x = script().probe_images()
    net = model.net
    tokens = net.embed_tokens(x)
    for index, adapter in enumerate(model.adapters):
        block = net.stages[1 + index]
        normed = block.ln_1(tokens)
        middle = block.self_attention(normed, normed, normed, need_weights=False)[0] + tokens
        tokens = middle + block.mlp(block.ln_2(middle)) + 0.1 * adapter.up_proj(torch.relu(adapter.down_proj(middle)))
    with torch.no_grad():
        assert torch.allclose(net(x, returnt="features"), net.pool_tokens(net.final_norm(tokens)), atol=1e-5)


def test_first_session_trains_adapters_and_cosine_head_only_and_later_tasks_train_nothing(run_task) -> None:
    model = make_ranpac(net=small_vit(), adapter_size=4, rp_size=8)
    backbone = model.net.get_params()
    model.begin_task(0)
    assert all(not p.requires_grad for p in model.net.parameters())
    trainable = {id(p) for group in model.optimizer.param_groups for p in group["params"]}
    assert trainable == {id(p) for p in [*model.adapters.parameters(), *model.cosine_head.parameters()]}
    assert float(model.cosine_head.sigma.detach()) == 1.0 and model.adapters[0].up_proj.weight.abs().sum() == 0
    run_task(model, 0)
    adapted = [p.detach().clone() for p in model.adapters.parameters()]
    assert not torch.equal(adapted[2], torch.zeros_like(adapted[2]))  # up_proj learned
    assert not any(p.requires_grad for p in model.adapters.parameters())
    run_task(model, 1)
    assert torch.equal(model.net.get_params(), backbone)
    assert all(torch.equal(a, b) for a, b in zip(adapted, model.adapters.parameters()))
    assert len(model.training_data(1, model.context.task_data(1))) == 0


def test_without_adapters_any_backbone_gets_the_ridge_classifier_of_the_projected_features(make_model, run_task) -> None:
    model = make_model("ranpac", adapter_size=0, rp_size=16)
    before = model.net.get_params()
    for task in range(2):
        run_task(model, task)
    assert torch.equal(model.net.get_params(), before)
    projected, targets = [], []
    with torch.no_grad():
        model.net.eval()
        for task in range(2):
            data = model.context.task_data(task)
            features = model.net(model.context.test_transform(data.read(torch.arange(len(data)), "cpu")), returnt="features")
            projected.append(torch.relu(features @ model.random_projection))
            targets.append(torch.nn.functional.one_hot(data.labels, 4).float())
    projected, targets = torch.cat(projected), torch.cat(targets)
    assert torch.allclose(model.gram, projected.T @ projected, rtol=1e-5, atol=1e-4)
    assert torch.allclose(model.label_projection, projected.T @ targets, rtol=1e-5, atol=1e-4)
    ridge = float(model.ridge)
    assert ridge in RIDGES
    solved = torch.linalg.solve(model.gram + ridge * torch.eye(16), model.label_projection).T
    assert torch.allclose(model.classifier, solved, rtol=1e-4, atol=1e-5)
    x = torch.rand(3, 1, 4, 4)
    with torch.no_grad():
        expected = torch.relu(model.net(x, returnt="features") @ model.random_projection) @ solved.T
        assert torch.allclose(model(x), expected, rtol=1e-4, atol=1e-4)


def test_projection_comes_from_the_runs_generator(make_model, run_task) -> None:
    drawn = []
    for seed in (0, 0, 1):
        model = make_model("ranpac", adapter_size=0, rp_size=16, seed=seed)
        run_task(model, 0)
        drawn.append(model.random_projection.clone())
    assert torch.equal(drawn[0], drawn[1]) and not torch.equal(drawn[0], drawn[2])
    assert 0.8 < float(drawn[0].std()) < 1.2  # standard normal


def test_a_checkpoint_restores_adapters_projection_and_classifier(run_task) -> None:
    model = make_ranpac(net=small_vit(), adapter_size=4, rp_size=8)
    run_task(model, 0)
    restored = make_ranpac(net=small_vit(), adapter_size=4, rp_size=8, seed=1)
    restored.load_state_dict(model.state_dict())
    model.eval(), restored.eval()
    x = script().probe_images()
    with torch.no_grad():
        assert torch.equal(restored(x), model(x))
        copied = copy.deepcopy(model)  # the hooks are the adapters' own methods: a copy runs its own adapters
        copied.adapters[0].up_proj.weight.add_(1.0)
        assert not torch.equal(copied(x), model(x)) and torch.equal(restored(x), model(x))


def test_default_adapters_need_transformer_blocks(make_net, dataset) -> None:
    with pytest.raises(BackboneError, match=r"MNISTMLP has no transformer blocks .* allowed: .*model.adapter_size=0"):
        build_model("ranpac", net=make_net(), dataset=dataset)
    with pytest.raises(ConfigError, match="model.adapter_size=-1 is not a size"):
        build_model("ranpac", net=make_net(), dataset=dataset, adapter_size=-1)


@pytest.mark.parametrize(("preset", "dataset"), [("ranpac-seq-cifar100-224", "seq-cifar100-224"),
                                                 ("ranpac-seq-cub200", "seq-cub200")])
def test_presets_hold_the_originals_settings(preset: str, dataset: str) -> None:
    cfg = compose_mammoth(f"experiment={preset}")
    keys = ("dataset.name", "dataset.batch_size", "dataset.n_epochs", "model.lr", "model.momentum",
            "model.weight_decay", "model.rp_size", "model.adapter_size", "backbone.name", "backbone.pretrained")
    assert {key: OmegaConf.select(cfg, key) for key in keys} == {
        "dataset.name": dataset, "dataset.batch_size": 48, "dataset.n_epochs": 20, "model.lr": 0.01,
        "model.momentum": 0.9, "model.weight_decay": 0.0005, "model.rp_size": 10000, "model.adapter_size": 64,
        "backbone.name": "vit-b16-in21k", "backbone.pretrained": True}


def test_adapters_fit_other_timm_transformers_and_refuse_post_norm_blocks() -> None:
    swin = TimmBackbone(num_classes=4, input_shape=(3, 32, 32), name="swin_tiny_patch4_window7_224",
                        model_args={"depths": (1, 1), "num_heads": (3, 6), "embed_dim": 24, "window_size": 4})
    model = make_ranpac(net=swin, adapter_size=4, rp_size=8)
    assert [adapter.down_proj.in_features for adapter in model.adapters] == [24, 48]  # each stage's width
    model.begin_task(0)
    with torch.no_grad():
        model.eval()
        plain = model.net(script().probe_images(), returnt="features")  # fresh adapters add nothing
        model.adapters[1].up_proj.weight.fill_(1.0)
        assert not torch.equal(model.net(script().probe_images(), returnt="features"), plain)
    post_norm = TimmBackbone(num_classes=4, input_shape=(3, 32, 32), name="vit_base_patch16_rpn_224",
                             model_args={"depth": 1, "embed_dim": 24, "num_heads": 2})
    with pytest.raises(BackboneError, match="ResPostBlock normalises after its MLP"):
        make_ranpac(net=post_norm)
