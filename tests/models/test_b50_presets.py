"""The B50 Inc10 presets of issue 25 (CIFAR-100: 50 classes, then 5 tasks of 10): each holds the
settings of its B0 preset (PyCIL's for podnet and wa, the original Mammoth's for lucir) with the
split changed, builds its method on the 6 tasks, and names the published number it reproduces
(tests/reporting/test_ledger.py checks the entries against the ledger's rules)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from composing import compose_mammoth
from mammoth.backbones.mlp import MNISTMLP
from mammoth.datasets import build_dataset
from mammoth.models import build_model

#: B50 Inc10 preset -> the B0 preset whose method settings it keeps
B0 = {"lucir-seq-cifar100-b50-inc10": "lucir-seq-cifar100-2000", "podnet-seq-cifar100-b50-inc10": "podnet-seq-cifar100-2000",
      "wa-seq-cifar100-b50-inc10": "wa-seq-cifar100-2000"}
#: what the preset reproduces, the classifier's and the nearest mean's (none for wa: its paper has no B50
#: number and averages without the first step)
PUBLISHED = {"lucir-seq-cifar100-b50-inc10": (63.42, 63.12), "podnet-seq-cifar100-b50-inc10": (64.83, 64.48)}
#: the papers' memory: 20 exemplars per class seen (wa keeps PyCIL's fixed total of 2000)
PER_CLASS = {"lucir-seq-cifar100-b50-inc10", "podnet-seq-cifar100-b50-inc10"}


@pytest.fixture(scope="module")
def composed() -> dict:
    return {name: compose_mammoth(f"experiment={name}") for name in (*B0, *B0.values())}


@pytest.mark.parametrize("name", sorted(B0))
def test_preset_keeps_its_b0_settings_on_the_b50_split(composed, name: str) -> None:
    cfg, base = composed[name], composed[B0[name]]
    ours_model, their_model = OmegaConf.to_container(cfg.model), OmegaConf.to_container(base.model)
    if name in PER_CLASS:  # the papers' 20 a class where the B0 preset keeps a total of 2000
        assert (ours_model.pop("buffer_size"), ours_model.pop("memory_per_class")) == (None, 20)
        assert (their_model.pop("buffer_size"), their_model.pop("memory_per_class")) == (2000, None)
    assert ours_model == their_model
    ours, theirs = OmegaConf.to_container(cfg.dataset), OmegaConf.to_container(base.dataset)
    assert (ours.pop("base_classes"), ours.pop("increment"), ours.pop("n_tasks")) == (50, 10, None)
    theirs.pop("n_tasks"), theirs.pop("base_classes"), theirs.pop("increment")
    assert ours == theirs  # batch size, epochs and (podnet, wa) PyCIL's class order as the B0 preset
    dataset = build_dataset(cfg.dataset)  # reads no data
    assert (dataset.n_tasks, dataset.task_sizes, dataset.uneven_tasks) == (6, (50, 10, 10, 10, 10, 10), True)


@pytest.mark.parametrize("name", sorted(B0))
def test_preset_builds_its_method_and_names_its_published_number(composed, name: str) -> None:
    cfg = composed[name]
    dataset = build_dataset(cfg.dataset)
    net = MNISTMLP(num_classes=dataset.n_classes, input_shape=(1, 2, 2), hidden_sizes=(2,))
    model = build_model(cfg.model, net=net, dataset=dataset)
    assert (model.lr, model.buffer_size, model.memory_per_class) == ((0.1, None, 20) if name in PER_CLASS else (0.1, 2000, None))
    if name.startswith("lucir"):
        assert [len(block) for block in model.head.weights] == [50, 10, 10, 10, 10, 10]  # a cosine block per task
    ledger = OmegaConf.to_container(cfg.ledger) if cfg.get("ledger") is not None else []
    assert [(entry["metric"], entry["value"], entry["tolerance"]) for entry in ledger] == (
        [("class_il.average_incremental_weighted", PUBLISHED[name][0], 2.0),
         ("nme_class_il.average_incremental_weighted", PUBLISHED[name][1], 2.0)] if name in PUBLISHED else [])
