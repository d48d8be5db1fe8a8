"""The presets of agem-r, fdr, rpc, gss and hal hold the original Mammoth's best arguments.

Copied from aimagelab/mammoth (the commit of /tmp/orig-mammoth, 2026): ``BEST`` from
utils/best_args.py (seq-mnist, seq-cifar10, buffer 200) and models/config/rpc.yaml (rpc has no
best_args entry), in the original's argument names; each preset is composed with Hydra and
compared key by key.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from composing import compose_mammoth
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]

#: preset -> (dataset, method, the original's arguments)
BEST = {
    "agem-r-seq-mnist-200": ("seq-mnist", "agem-r", {"lr": 0.1, "minibatch_size": 128, "batch_size": 10, "n_epochs": 1,
                                                     "buffer_size": 200}),
    "agem-r-seq-cifar10-200": ("seq-cifar10", "agem-r", {"lr": 0.03, "minibatch_size": 32, "batch_size": 32,
                                                         "n_epochs": 50, "buffer_size": 200}),
    # alpha (0.5, 0.3) left out: the original's fdr never reads --alpha
    "fdr-seq-mnist-200": ("seq-mnist", "fdr", {"lr": 0.03, "minibatch_size": 128, "batch_size": 128, "n_epochs": 1,
                                               "buffer_size": 200}),
    "fdr-seq-cifar10-200": ("seq-cifar10", "fdr", {"lr": 0.03, "minibatch_size": 32, "batch_size": 32, "n_epochs": 50,
                                                   "buffer_size": 200}),
    # models/config/rpc.yaml (no best_args entry)
    "rpc-seq-cifar10-100": ("seq-cifar10", "rpc", {"lr": 0.0001, "optimizer": "adam", "batch_size": 128, "n_epochs": 5,
                                                   "buffer_size": 100}),
    "gss-seq-mnist-200": ("seq-mnist", "gss", {"lr": 0.1, "minibatch_size": 10, "gss_minibatch_size": 10, "batch_size": 128,
                                               "batch_num": 1, "n_epochs": 1, "buffer_size": 200}),
    "gss-seq-cifar10-200": ("seq-cifar10", "gss", {"lr": 0.03, "minibatch_size": 32, "gss_minibatch_size": 32,
                                                   "batch_size": 32, "n_epochs": 50, "batch_num": 1, "buffer_size": 200}),
    "hal-seq-mnist-200": ("seq-mnist", "hal", {"lr": 0.1, "minibatch_size": 128, "batch_size": 128, "hal_lambda": 0.1,
                                               "beta": 0.7, "gamma": 0.5, "n_epochs": 1, "buffer_size": 200}),
    "hal-seq-cifar10-200": ("seq-cifar10", "hal", {"lr": 0.03, "minibatch_size": 32, "batch_size": 32, "n_epochs": 50,
                                                   "hal_lambda": 0.2, "beta": 0.5, "gamma": 0.1, "steps_on_anchors": 100,
                                                   "finetuning_epochs": 1, "buffer_size": 200}),
}

#: The original's argument names -> ours.
OURS = {"lr": "model.lr", "minibatch_size": "model.minibatch_size", "buffer_size": "model.buffer_size",
        "batch_size": "dataset.batch_size", "n_epochs": "dataset.n_epochs", "alpha": "model.alpha",
        "gss_minibatch_size": "model.gss_minibatch_size", "batch_num": "model.batch_num",
        "hal_lambda": "model.hal_lambda", "beta": "model.beta", "gamma": "model.gamma", "optimizer": "model.optimizer",
        "steps_on_anchors": "model.steps_on_anchors", "finetuning_epochs": "model.finetuning_epochs"}

#: The preset files of these methods.
PREFIXES = ("agem-r-", "fdr-", "rpc-", "gss-", "hal-")


def test_every_preset_of_these_methods_is_in_the_table() -> None:
    names = {path.stem for path in (REPO / "mammoth" / "app" / "conf" / "experiment").glob("*.yaml")}
    assert {name for name in names if name.startswith(PREFIXES)} == set(BEST)


@pytest.mark.parametrize("name", sorted(BEST))
def test_preset_holds_the_originals_best_arguments(name: str) -> None:
    dataset, method, values = BEST[name]
    cfg = compose_mammoth(f"experiment={name}")
    assert cfg.dataset.name == dataset
    assert cfg.model._target_ == compose_mammoth(f"model={method}").model._target_
    assert {OURS[key]: OmegaConf.select(cfg, OURS[key]) for key in values} == {OURS[key]: v for key, v in values.items()}
