"""model=podnet: the local-similarity classifier with NCA, POD-spatial over the stages of
``returnt="full"``, POD-flat, class-balanced finetuning, held to PyCIL's own numbers step by step
(scripts/reference_pycil_methods.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from pycil_reference import ImageDataset, TinyNet, memory_rows, one_thread, reference, script, tensor, train_like_the_script

from composing import compose_mammoth
from mammoth.datasets.source import Batch
from mammoth.engine.context import build_context
from mammoth.errors import ConfigError
from mammoth.models import build_model
from mammoth.models.podnet import as_maps, nca_loss, pod_spatial_loss


def make_podnet(seed: int = 0, **values):
    """podnet on the script's tiny network, benchmark, memory and epochs (PyCIL's constants as the script sets them)."""
    recorded = reference()["podnet"]
    dataset = ImageDataset()
    model = build_model("podnet", net=TinyNet(), dataset=dataset, buffer_size=recorded["memory_size"],
                        ft_epochs=recorded["constants"]["ft_epochs"], **values)
    model.attach(build_context(dataset, "cpu", torch.Generator().manual_seed(seed)))
    return model


def expected_losses(steps: list, factor: float) -> list[float]:
    """PyCIL's step loss: nca + factor * (1 * flat + 5 * spatial) (its lambda_f_base, lambda_c_base)."""
    return [step["nca"] + factor * (1.0 * step.get("flat_unweighted", 0.0) + 5.0 * step.get("spatial_unweighted", 0.0))
            for step in steps]


def test_podnet_matches_pycils_losses_logits_finetuning_memory_and_predictions(one_thread) -> None:
    recorded = reference()["podnet"]
    model = make_podnet()
    epochs = recorded["constants"]["epochs"]
    step_scores = []
    scores = model.scores
    model.scores = lambda features: step_scores.append(scores(features)) or step_scores[-1]
    calls, finetuned = [0], {}

    def scripted_fit(step, source, n_epochs, description, end_epoch=None, **kwargs):
        # the finetuning through context.fit, in the order of the script's loader
        finetuned["set"] = memory_rows(source.read(torch.arange(len(source)), "cpu"), source.labels)
        losses = train_like_the_script(
            model, source, n_epochs, calls[0], lambda x, y: step(Batch(x, y, x, torch.arange(len(y)))))
        finetuned["losses"] = losses
        calls[0] += n_epochs
        return losses[-1]

    model.context.fit = scripted_fit
    for task, expected in enumerate(recorded["tasks"]):
        seen = 2 * task + 2
        model.begin_task(task)
        with torch.no_grad():  # PyCIL's fresh proxies (its global-RNG draws) in place of ours
            model.lsc.proxies[task].copy_(tensor(expected["initial_proxies"]))
        data = model.context.task_data(task)
        model.train()
        del step_scores[:]
        losses = train_like_the_script(model, model.training_data(task, data), epochs, calls[0],
                                       lambda x, y: model.observe(x, y, x))
        calls[0] += epochs
        # float32 through 10 SGD steps in the same order: agreement to rounding
        assert torch.allclose(torch.tensor(losses), torch.tensor(expected_losses(expected["train_steps"], expected["train_factor"])), atol=1e-5)
        for ours, step in zip(step_scores, expected["train_steps"], strict=True):
            assert torch.allclose(ours.detach(), tensor(step["logits"]), atol=1e-5)
        del step_scores[:]
        model.end_task(task, data)
        if task > 0:
            assert finetuned["set"] == expected["finetune_set"]
            wanted = expected_losses(expected["finetune_steps"], expected["finetune_factor"])
            assert torch.allclose(torch.tensor(finetuned["losses"]), torch.tensor(wanted), atol=1e-5)
            for ours, step in zip(step_scores[: len(wanted)], expected["finetune_steps"], strict=True):
                assert torch.allclose(ours.detach(), tensor(step["logits"]), atol=1e-5)
        assert memory_rows(model.buffer.examples, model.buffer.labels) == expected["memory"]
        assert model.lsc.sigma.item() == pytest.approx(expected["sigma"], abs=1e-6)
        proxies = torch.cat(list(model.lsc.proxies[: task + 1])).detach()
        assert torch.allclose(proxies, tensor(expected["final_proxies"]), atol=1e-6)
        model.eval()
        with torch.no_grad():
            probe = model(script().probe_images())
        assert torch.allclose(probe[:, :seen], tensor(expected["probe_logits"]), atol=1e-5)
        assert (probe[:, seen:] == float("-inf")).all()


# ---- the parts ----


def test_nca_is_pycils_with_the_margin_taken_from_every_class() -> None:
    similarities, targets = torch.tensor([[0.9, 0.1, -0.2], [0.3, 0.5, 0.4]]), torch.tensor([0, 2])
    shifted = similarities - 0.6
    shifted = shifted - shifted.max(1, keepdim=True).values
    expected = []
    for row, target in zip(shifted, targets):
        others = torch.cat([row[:target], row[target + 1 :]])
        expected.append(-(row[target] - torch.log(1 + others.exp().sum())))  # the target's entry counts as exp(0)
    assert nca_loss(similarities, targets).item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-6)
    # PyCIL's margin cancels in the shift by the row maximum
    assert nca_loss(similarities, targets, margin=0.2).item() == pytest.approx(nca_loss(similarities, targets).item(), rel=1e-6)
    # margin_on_target (the paper's): the target's similarity alone loses 0.6
    on_target = similarities.clone()
    on_target[[0, 1], targets] -= 0.6
    assert nca_loss(similarities, targets, margin_on_target=True).item() == pytest.approx(
        nca_loss(on_target, targets, margin=0.0).item(), rel=1e-6)
    assert nca_loss(similarities, targets, margin_on_target=True).item() > nca_loss(similarities, targets).item()


def test_pod_spatial_pools_squared_maps_over_width_and_height() -> None:
    generator = torch.Generator().manual_seed(0)
    new, old = torch.rand(2, 3, 4, 5, generator=generator), torch.rand(2, 3, 4, 5, generator=generator)
    pooled = [torch.cat([x.pow(2).sum(3).flatten(1), x.pow(2).sum(2).flatten(1)], 1) for x in (new, old)]
    expected = (F.normalize(pooled[0], dim=1) - F.normalize(pooled[1], dim=1)).norm(dim=1).mean()
    assert pod_spatial_loss([new, new], [old, old]).item() == pytest.approx(expected.item(), rel=1e-6)
    assert pod_spatial_loss([new], [new]).item() == 0.0 and pod_spatial_loss([], []).item() == 0.0
    assert as_maps(torch.ones(2, 3)).shape == (2, 3, 1, 1) and as_maps(torch.ones(2, 3, 4)).shape == (2, 3, 4, 1)


def test_the_stages_distilled_are_those_of_returnt_full_after_the_stem(one_thread) -> None:
    from mammoth.backbones.resnet import ResNet

    net = ResNet(num_classes=4, input_shape=(3, 8, 8), depth=18, width=2)
    outputs = net(torch.rand(2, 3, 8, 8), returnt="full")
    maps = outputs[1:-2]
    assert [tuple(m.shape[1:]) for m in maps] == [(2, 8, 8), (4, 4, 4), (8, 2, 2), (16, 1, 1)]  # layer1..layer4


def test_old_proxies_are_frozen_and_the_task_trains_its_own(make_model, run_task) -> None:
    model = make_model("podnet", buffer_size=8, ft_epochs=1, nb_proxy=3)
    assert [tuple(p.shape) for p in model.lsc.proxies] == [(6, 16), (6, 16)]
    run_task(model, 0)
    old = model.lsc.proxies[0].detach().clone()
    model.begin_task(1)
    trained = {id(p) for group in model.optimizer.param_groups for p in group["params"]}
    assert id(model.lsc.proxies[1]) in trained and id(model.lsc.sigma) in trained
    assert id(model.lsc.proxies[0]) not in trained and id(model.net.classifier.weight) not in trained
    assert isinstance(model.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    run_task(model, 1)
    assert torch.equal(model.lsc.proxies[0], old)
    assert sorted(model.buffer.labels.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_second_task_distils_with_the_adaptive_factor(make_model, run_task, make_batch) -> None:
    model = make_model("podnet", buffer_size=8, ft_epochs=0)
    run_task(model, 0)
    model.begin_task(1)
    inputs, labels, _ = make_batch(1)
    losses = model.losses(inputs, labels)
    features = model.net(inputs, returnt="features")
    old = model.old_net(inputs, returnt="features")
    flat = (1 - F.cosine_similarity(features, old)).mean() * math.sqrt(4 / 2)
    assert losses["flat"].item() == pytest.approx(flat.item(), rel=1e-5, abs=1e-7)
    assert losses["spatial"].item() == 0.0  # the MLP has one hidden stage: the features, no maps


def test_finetuning_trains_on_a_class_balanced_set(make_model, run_task, one_thread) -> None:
    model = make_model("podnet", buffer_size=8, ft_epochs=2)
    run_task(model, 0)
    seen = []
    fit = model.context.fit
    model.context.fit = lambda step, source, epochs, *args, **kwargs: (seen.append((source.labels.tolist(), epochs)),
                                                                       fit(step, source, epochs, *args, **kwargs))[1]
    run_task(model, 1)
    (labels, epochs), = seen[1:]  # seen[0]: the task's own training
    assert sorted(labels) == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4 and epochs == 2  # 8 // 2 old classes each


def test_refusals_name_the_value_and_what_is_allowed(make_net, dataset) -> None:
    with pytest.raises(ConfigError, match=r"^model\.nb_proxy"):
        build_model("podnet", net=make_net(), dataset=dataset, buffer_size=8, nb_proxy=0)
    with pytest.raises(ConfigError, match=r"^model\.ft_lr"):
        build_model("podnet", net=make_net(), dataset=dataset, buffer_size=8, ft_lr=0.0)
    dataset.setting = "domain-il"
    with pytest.raises(ConfigError, match=r"^model=podnet does not support domain-il"):
        build_model("podnet", net=make_net(), dataset=dataset, buffer_size=8)


def test_preset_holds_pycils_settings() -> None:
    cfg = compose_mammoth("experiment=podnet-seq-cifar100-2000")
    values = OmegaConf.to_container(cfg.model)
    assert cfg.model._target_ == "mammoth.models.podnet.PODNet" and cfg.dataset.name == "seq-cifar100"
    assert {key: values[key] for key in ("buffer_size", "nb_proxy", "lambda_c_base", "lambda_f_base", "ft_epochs", "ft_lr",
                                          "lr", "momentum", "weight_decay", "lr_scheduler")} == {
        "buffer_size": 2000, "nb_proxy": 10, "lambda_c_base": 5.0, "lambda_f_base": 1.0, "ft_epochs": 20, "ft_lr": 0.005,
        "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0005, "lr_scheduler": "cosine"}
    assert (cfg.dataset.batch_size, cfg.dataset.n_epochs, cfg.dataset.n_tasks) == (128, 160, 10)
