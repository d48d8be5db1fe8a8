"""The lucir and lwf_mc experiment presets hold the original Mammoth's settings: utils/best_args.py
['seq-cifar100']['lucir'][500 | 2000], with models/config/lucir.yaml ['seq-cifar100'][2000] over it
(what ``--model_config best`` loads) or seq-cifar100's defaults (multisteplr [35, 45], 50 epochs,
batch 32) where the config has no entry; models/config/lwf_mc.yaml ['seq-cifar100'] (lr 0.03, optim_wd
5e-4) over seq-cifar100's defaults (aimagelab/mammoth commit e75a491c)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from composing import compose_mammoth
from mammoth.backbones.mlp import MNISTMLP
from mammoth.datasets import build_dataset
from mammoth.models import build_model

LUCIR_BEST = {"model.momentum": 0.9, "model.weight_decay": 0.0, "model.lr_finetune": 0.01, "model.lamda_base": 5.0,
              "model.lamda_mr": 1.0, "model.k_mr": 2, "model.mr_margin": 0.5, "model.fitting_epochs": 20,
              "model.imprint_weights": True, "model.sched_multistep_lr_gamma": 0.1, "dataset.name": "seq-cifar100"}
# preset -> {our dotted key: the original's value}
EXPECTED = {
    "lucir-seq-cifar100-2000": {**LUCIR_BEST, "model.buffer_size": 2000, "model.lr": 0.1, "dataset.batch_size": 128,
                                "dataset.n_epochs": 160, "model.lr_milestones": [80, 120]},
    "lucir-seq-cifar100-500": {**LUCIR_BEST, "model.buffer_size": 500, "model.lr": 0.03, "dataset.batch_size": 32,
                               "dataset.n_epochs": 50, "model.lr_milestones": [35, 45]},
    "lwf-mc-seq-cifar100": {"dataset.name": "seq-cifar100", "model.lr": 0.03, "model.weight_decay": 0.0005,
                            "model.momentum": 0.0, "model.wd_reg": 0.0, "dataset.batch_size": 32,
                            "dataset.n_epochs": 50, "model.lr_milestones": [35, 45], "model.sched_multistep_lr_gamma": 0.1},
}


@pytest.fixture(scope="module")
def composed() -> dict:
    return {name: compose_mammoth(f"experiment={name}") for name in EXPECTED}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_holds_the_originals_settings(composed, name: str) -> None:
    cfg = composed[name]
    values = {key: OmegaConf.select(cfg, key) for key in EXPECTED[name]}
    assert {key: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for key, v in values.items()} == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(name for name in EXPECTED if name.startswith("lucir")))
def test_lucir_preset_builds_its_method(composed, name: str) -> None:
    cfg = composed[name]
    dataset = build_dataset(cfg.dataset)  # reads no data
    net = MNISTMLP(num_classes=dataset.n_classes, input_shape=(1, 2, 2), hidden_sizes=(2,))
    model = build_model(cfg.model, net=net, dataset=dataset)
    assert (model.lr, model.buffer_size, model.fitting_epochs) == (EXPECTED[name]["model.lr"],
                                                                   EXPECTED[name]["model.buffer_size"], 20)
    assert [len(block) for block in model.head.weights] == [10] * 10  # a cosine block per task


def test_lwf_mc_preset_builds_its_method(composed) -> None:
    cfg = composed["lwf-mc-seq-cifar100"]
    dataset = build_dataset(cfg.dataset)  # reads no data
    net = MNISTMLP(num_classes=dataset.n_classes, input_shape=(1, 2, 2), hidden_sizes=(2,))
    model = build_model(cfg.model, net=net, dataset=dataset)
    assert (model.lr, model.weight_decay, model.wd_reg, model.lr_milestones) == (0.03, 0.0005, 0.0, (35, 45))
