"""The prompt methods' experiment presets hold the original Mammoth's settings for seq-cifar100-224:
models/config/<method>.yaml ['seq-cifar100-224'] merged over the datasets/configs/seq-cifar100-224/
<dataset_config>.yaml it names (aimagelab/mammoth commit e75a491c), and the weights its method loads."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from mammoth.backbones.vit import VisionTransformer
from mammoth.datasets import build_dataset
from mammoth.models import build_model
from composing import compose_mammoth

# preset -> {our dotted key: the original's value}
EXPECTED = {
    "l2p-seq-cifar100-224": {  # l2p.yaml: lr 0.03, batchwise_prompt 1, pull_constraint_coeff 0.5; l2p dataset config
        "dataset.name": "seq-cifar100-224", "dataset.batch_size": 128, "dataset.n_epochs": 5, "model.lr": 0.03,
        "model.batchwise_prompt": True, "model.pull_constraint_coeff": 0.5, "model.optimizer": "adam",
        "backbone.name": "vit_base_patch16_224.orig_in21k", "backbone.pretrained": True,
    },
    "dualprompt-seq-cifar100-224": {  # dualprompt.yaml: lr 0.03, batch 128; l2p dataset config
        "dataset.name": "seq-cifar100-224", "dataset.batch_size": 128, "dataset.n_epochs": 5, "model.lr": 0.03,
        "model.batchwise_prompt": True, "model.pull_constraint_coeff": 1.0, "model.optimizer": "adam",
        "backbone.name": "vit_base_patch16_224.orig_in21k", "backbone.pretrained": True,
    },
    "coda-prompt-seq-cifar100-224": {  # coda_prompt.yaml: lr 1e-3, adam, batch 128, 20 epochs
        "dataset.name": "seq-cifar100-224", "dataset.batch_size": 128, "dataset.n_epochs": 20, "model.lr": 0.001,
        "model.optimizer": "adam", "model.pool_size": 100, "model.prompt_len": 8,
        "backbone.name": "vit_base_patch16_224.augreg_in21k_ft_in1k", "backbone.pretrained": True,
    },
}


@pytest.fixture(scope="module")
def composed() -> dict:
    return {name: compose_mammoth(f"experiment={name}") for name in EXPECTED}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_holds_the_originals_settings(composed, name: str) -> None:
    cfg = composed[name]
    assert {key: OmegaConf.select(cfg, key) for key in EXPECTED[name]} == EXPECTED[name]
    assert cfg.backbone._target_.endswith("TimmBackbone")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_builds_its_method(composed, name: str) -> None:
    cfg = composed[name]
    dataset = build_dataset(cfg.dataset)  # reads no data
    # a small stand-in for ViT-B/16, as wide as coda-prompt's pool of 100 orthogonal keys needs
    net = VisionTransformer(num_classes=dataset.n_classes, input_shape=(3, 8, 8), patch_size=4, width=102, depth=5,
                            heads=3)
    model = build_model(cfg.model, net=net, dataset=dataset)
    assert (model.lr, model.optimizer_name) == (EXPECTED[name]["model.lr"], "adam")
    assert model.head.out_features == 100
