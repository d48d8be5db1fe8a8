"""model=simplecil: prototypes are the per-class mean features, scores their cosine similarity,
and the backbone never changes; held to LAMDA-PILOT's SimpleCIL (scripts/reference_feature_methods.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from feature_reference import ImageDataset, reference, script, tensor, tiny_vit
from omegaconf import OmegaConf

import mammoth.models.simplecil  # noqa: F401  registers model=simplecil
from mammoth.engine.context import build_context
from mammoth.engine.evaluation import evaluate_tasks
from mammoth.models import build_model
from composing import compose_mammoth


def test_prototypes_are_class_means_and_the_backbone_is_untouched(make_model, run_task) -> None:
    model = make_model("simplecil")
    before = model.net.get_params()
    for task in range(2):
        run_task(model, task)
    assert torch.equal(model.net.get_params(), before)
    expected = torch.zeros(4, model.net.num_features)
    model.net.eval()
    with torch.no_grad():
        for task in range(2):
            data = model.context.task_data(task)
            features = model.net(model.context.test_transform(data.read(torch.arange(len(data)), "cpu")), returnt="features")
            for label in model.context.task_classes(task):
                expected[label] = features[data.labels == label].mean(0)
    assert torch.allclose(model.prototypes, expected, atol=1e-5)
    x = torch.rand(3, 1, 4, 4)
    scores = model(x)
    reference = F.normalize(model.net(x, returnt="features"), dim=1) @ F.normalize(expected, dim=1).T
    assert torch.allclose(scores, reference, atol=1e-5)


def test_classes_without_a_prototype_score_minus_infinity(make_model, run_task) -> None:
    model = make_model("simplecil")
    run_task(model, 0)
    scores = model(torch.rand(2, 1, 4, 4))
    assert torch.isfinite(scores[:, :2]).all() and (scores[:, 2:] == float("-inf")).all()
    accuracy = evaluate_tasks(model, model.context, [model.context.task_data(0)])
    assert accuracy["class_il"][0] > 50.0  # nearest mean on its own training data beats chance (50%)


def test_prototypes_survive_a_checkpoint(make_model, run_task) -> None:
    model = make_model("simplecil")
    run_task(model, 0)
    restored = make_model("simplecil")
    restored.load_state_dict(model.state_dict())
    x = torch.rand(2, 1, 4, 4)
    assert torch.equal(restored(x), model(x))


@pytest.mark.parametrize(("preset", "dataset"), [("simplecil-seq-cifar100-224", "seq-cifar100-224"),
                                                 ("simplecil-seq-imagenet-r", "seq-imagenet-r")])
def test_presets_take_lamda_pilots_backbone_and_batches(preset: str, dataset: str) -> None:
    cfg = compose_mammoth(f"experiment={preset}")
    keys = ("dataset.name", "dataset.batch_size", "backbone.name", "backbone.pretrained")
    assert {key: OmegaConf.select(cfg, key) for key in keys} == {
        "dataset.name": dataset, "dataset.batch_size": 128, "backbone.name": "vit-b16-in21k-ft-in1k",
        "backbone.pretrained": True}
    assert cfg.model._target_ == "mammoth.models.simplecil.SimpleCIL"


def test_simplecil_matches_lamda_pilots_prototypes_and_logits() -> None:
    # scripts/reference_feature_methods.py --pilot: PILOT's SimpleCIL on the same tiny ViT and images
    recorded = reference()["simplecil"]
    dataset = ImageDataset()
    model = build_model("simplecil", net=tiny_vit("slca"), dataset=dataset)
    model.attach(build_context(dataset, "cpu", torch.Generator().manual_seed(0)))
    model.eval()
    for task in range(2):
        model.begin_task(task)
        model.end_task(task, model.context.task_data(task))
        with torch.no_grad():
            scores = model(script().probe_images())
        seen = 2 * (task + 1)
        assert torch.allclose(scores[:, :seen], tensor(recorded["logits"][task]), atol=1e-5)  # PILOT's sigma is 1
        assert (scores[:, seen:] == float("-inf")).all()
    assert recorded["sigma"] == 1.0
    assert torch.allclose(model.prototypes, tensor(recorded["prototypes"]), atol=1e-5)
