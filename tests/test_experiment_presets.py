"""Every preset in mammoth/app/conf/experiment/ holds the original Mammoth's best arguments.

The tables below are copied from aimagelab/mammoth (commit e75a491c, 2026-05-20): ``BEST_ARGS``
from utils/best_args.py (the grid of Buzzega et al. 2020, ``--load_best_args``), ``MODEL_CONFIG``
from models/config/<model>.yaml (``--model_config best``, which the original prefers where both
exist), the seq-cifar100 schedules from datasets/seq_cifar100.py (its defaults) and
datasets/configs/seq-cifar100/xder.yaml. Each preset is composed with Hydra's compose API and
compared with them, key by key.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from composing import compose_mammoth

REPO = Path(__file__).resolve().parents[1]

# utils/best_args.py: dataset -> method -> buffer size (-1: no buffer) -> arguments.
BEST_ARGS = {
    "seq-mnist": {
        "sgd": {
            -1: {"lr": 0.03, "batch_size": 10, "n_epochs": 1},
        },
        "er": {
            200: {"lr": 0.01, "minibatch_size": 10, "batch_size": 10, "n_epochs": 1},
            500: {"lr": 0.1, "minibatch_size": 10, "batch_size": 10, "n_epochs": 1},
            5120: {"lr": 0.1, "minibatch_size": 10, "batch_size": 10, "n_epochs": 1},
        },
        "der": {
            200: {"lr": 0.03, "minibatch_size": 10, "alpha": 0.2, "batch_size": 10, "n_epochs": 1},
            500: {"lr": 0.03, "minibatch_size": 128, "alpha": 1.0, "batch_size": 10, "n_epochs": 1},
            5120: {"lr": 0.1, "minibatch_size": 128, "alpha": 0.5, "batch_size": 10, "n_epochs": 1},
        },
        "derpp": {
            200: {"lr": 0.03, "minibatch_size": 128, "alpha": 0.2, "beta": 1.0, "batch_size": 10, "n_epochs": 1},
            500: {"lr": 0.03, "minibatch_size": 10, "alpha": 1.0, "beta": 0.5, "batch_size": 10, "n_epochs": 1},
            5120: {"lr": 0.1, "minibatch_size": 64, "alpha": 0.2, "beta": 0.5, "batch_size": 10, "n_epochs": 1},
        },
    },
    "perm-mnist": {
        "sgd": {
            -1: {"lr": 0.2, "batch_size": 128, "n_epochs": 1},
        },
        "er": {
            200: {"lr": 0.2, "minibatch_size": 128, "batch_size": 128, "n_epochs": 1},
            500: {"lr": 0.2, "minibatch_size": 128, "batch_size": 128, "n_epochs": 1},
            5120: {"lr": 0.2, "minibatch_size": 128, "batch_size": 128, "n_epochs": 1},
        },
        "der": {
            200: {"lr": 0.2, "minibatch_size": 128, "alpha": 1.0, "batch_size": 128, "n_epochs": 1},
            500: {"lr": 0.2, "minibatch_size": 128, "alpha": 1.0, "batch_size": 128, "n_epochs": 1},
            5120: {"lr": 0.2, "minibatch_size": 128, "alpha": 0.5, "batch_size": 128, "n_epochs": 1},
        },
        "derpp": {
            200: {"lr": 0.1, "minibatch_size": 128, "alpha": 1.0, "beta": 1.0, "batch_size": 128, "n_epochs": 1},
            500: {"lr": 0.2, "minibatch_size": 128, "alpha": 1.0, "beta": 0.5, "batch_size": 128, "n_epochs": 1},
            5120: {"lr": 0.2, "minibatch_size": 128, "alpha": 0.5, "beta": 1.0, "batch_size": 128, "n_epochs": 1},
        },
    },
    "rot-mnist": {
        "sgd": {
            -1: {"lr": 0.2, "batch_size": 128, "n_epochs": 1},
        },
        "er": {
            200: {"lr": 0.2, "minibatch_size": 128, "batch_size": 128, "n_epochs": 1},
            500: {"lr": 0.2, "minibatch_size": 128, "batch_size": 128, "n_epochs": 1},
            5120: {"lr": 0.2, "minibatch_size": 128, "batch_size": 128, "n_epochs": 1},
        },
        "der": {
            200: {"lr": 0.2, "minibatch_size": 128, "alpha": 1.0, "batch_size": 128, "n_epochs": 1},
            500: {"lr": 0.2, "minibatch_size": 128, "alpha": 0.5, "batch_size": 128, "n_epochs": 1},
            5120: {"lr": 0.2, "minibatch_size": 128, "alpha": 0.5, "batch_size": 128, "n_epochs": 1},
        },
        "derpp": {
            200: {"lr": 0.1, "minibatch_size": 128, "alpha": 1.0, "beta": 0.5, "batch_size": 128, "n_epochs": 1},
            500: {"lr": 0.2, "minibatch_size": 128, "alpha": 0.5, "beta": 1.0, "batch_size": 128, "n_epochs": 1},
            5120: {"lr": 0.2, "minibatch_size": 128, "alpha": 0.5, "beta": 0.5, "batch_size": 128, "n_epochs": 1},
        },
    },
    "seq-cifar10": {
        "sgd": {
            -1: {"lr": 0.1, "batch_size": 32, "n_epochs": 50},
        },
        "er": {
            200: {"lr": 0.1, "minibatch_size": 32, "batch_size": 32, "n_epochs": 50},
            500: {"lr": 0.1, "minibatch_size": 32, "batch_size": 32, "n_epochs": 50},
            5120: {"lr": 0.1, "minibatch_size": 32, "batch_size": 32, "n_epochs": 50},
        },
        "der": {
            200: {"lr": 0.03, "minibatch_size": 32, "alpha": 0.3, "batch_size": 32, "n_epochs": 50},
            500: {"lr": 0.03, "minibatch_size": 32, "alpha": 0.3, "batch_size": 32, "n_epochs": 50},
            5120: {"lr": 0.03, "minibatch_size": 32, "alpha": 0.3, "batch_size": 32, "n_epochs": 50},
        },
        "derpp": {
            200: {"lr": 0.03, "minibatch_size": 32, "alpha": 0.1, "beta": 0.5, "batch_size": 32, "n_epochs": 50},
            500: {"lr": 0.03, "minibatch_size": 32, "alpha": 0.2, "beta": 0.5, "batch_size": 32, "n_epochs": 50},
            5120: {"lr": 0.03, "minibatch_size": 32, "alpha": 0.1, "beta": 1.0, "batch_size": 32, "n_epochs": 50},
        },
    },
    "seq-cifar100": {
        "sgd": {
            -1: {"lr": 0.03, "optim_mom": 0, "optim_wd": 0},
        },
        "er": {
            500: {"lr": 0.1, "optim_mom": 0, "optim_wd": 0},
            2000: {"lr": 0.1, "optim_mom": 0, "optim_wd": 0},
        },
        "der": {
            500: {"lr": 0.03, "optim_mom": 0, "optim_wd": 0, "alpha": 0.3},
            2000: {"lr": 0.03, "optim_mom": 0, "optim_wd": 0, "alpha": 0.3},
        },
        "derpp": {
            500: {"lr": 0.03, "optim_mom": 0, "optim_wd": 0, "alpha": 0.1, "beta": 0.5},
            2000: {"lr": 0.03, "optim_mom": 0, "optim_wd": 0, "alpha": 0.1, "beta": 0.5},
        },
    },
    "seq-tinyimg": {
        "sgd": {
            -1: {"lr": 0.03, "batch_size": 32, "n_epochs": 100},
        },
        "er": {
            200: {"lr": 0.1, "minibatch_size": 32, "batch_size": 32, "n_epochs": 100},
            500: {"lr": 0.03, "minibatch_size": 32, "batch_size": 32, "n_epochs": 100},
            5120: {"lr": 0.1, "minibatch_size": 32, "batch_size": 32, "n_epochs": 100},
        },
        "der": {
            200: {"lr": 0.03, "minibatch_size": 32, "softmax_temp": 2.0, "alpha": 0.1, "batch_size": 32, "n_epochs": 100},
            500: {"lr": 0.03, "minibatch_size": 32, "alpha": 0.1, "batch_size": 32, "n_epochs": 100},
            5120: {"lr": 0.03, "minibatch_size": 32, "alpha": 0.1, "batch_size": 32, "n_epochs": 100},
        },
        "derpp": {
            200: {"lr": 0.03, "minibatch_size": 32, "alpha": 0.1, "beta": 1.0, "batch_size": 32, "n_epochs": 100},
            500: {"lr": 0.03, "minibatch_size": 32, "alpha": 0.2, "beta": 0.5, "batch_size": 32, "n_epochs": 100},
            5120: {"lr": 0.03, "minibatch_size": 32, "alpha": 0.1, "beta": 0.5, "batch_size": 32, "n_epochs": 100},
        },
    },
}

# models/config/<method>.yaml: dataset -> buffer size -> arguments ("dataset_config" names a
# datasets/configs/<dataset>/<name>.yaml that the original loads too).
MODEL_CONFIG = {
    "der": {"seq-cifar100": {500: {"alpha": 0.3, "lr": 0.03, "dataset_config": "xder"}}},
    "derpp": {"seq-cifar100": {500: {"alpha": 0.3, "beta": 0.5, "lr": 0.03, "dataset_config": "xder"}}},
    "er": {"seq-cifar10": {500: {"lr": 0.1}}},
}

# datasets/configs/seq-cifar100/xder.yaml
XDER = {"lr_scheduler": "multisteplr", "batch_size": 32, "lr_milestones": [35, 45], "sched_multistep_lr_gamma": 0.2,
        "n_epochs": 50}
# seq-cifar100's own defaults (datasets/seq_cifar100.py; the gamma is utils/args.py's default)
SEQ_CIFAR100_DEFAULTS = {"lr_scheduler": "multisteplr", "lr_milestones": [35, 45], "sched_multistep_lr_gamma": 0.1,
                         "n_epochs": 50, "batch_size": 32}

# The original's argument names -> ours (None: no counterpart here, see the comments).
OURS = {
    "lr": "model.lr",
    "minibatch_size": "model.minibatch_size",
    "alpha": "model.alpha",
    "beta": "model.beta",
    "optim_mom": "model.momentum",
    "optim_wd": "model.weight_decay",
    "lr_milestones": "model.lr_milestones",
    "sched_multistep_lr_gamma": "model.sched_multistep_lr_gamma",
    "batch_size": "dataset.batch_size",
    "n_epochs": "dataset.n_epochs",
    "lr_scheduler": None,  # multisteplr is implied by non-empty lr_milestones
    "dataset_config": None,  # its values are merged in below
    "softmax_temp": None,  # listed for seq-tinyimg der 200, but the original's der has no such argument
}

METHODS = ("sgd", "joint", "er", "der", "derpp")


def original_arguments(method: str, dataset: str, buffer: int) -> dict:
    """What the original runs with: best_args (joint takes sgd's, as its main.py does), then the
    model config where one exists, with the dataset config it names or the dataset's defaults."""
    values = dict(BEST_ARGS[dataset]["sgd" if method == "joint" else method][buffer])
    best = MODEL_CONFIG.get(method, {}).get(dataset, {}).get(buffer)
    if best is not None:
        values.update(best)
    if dataset == "seq-cifar100":
        values = {**(XDER if values.get("dataset_config") == "xder" else SEQ_CIFAR100_DEFAULTS), **values}
    return values


def expected_presets() -> dict[str, tuple[str, str, dict]]:
    """Preset name -> (dataset, method, {our dotted key: value})."""
    presets = {}
    for dataset, methods in BEST_ARGS.items():
        for method in METHODS:
            for buffer in methods["sgd" if method == "joint" else method]:
                name = f"{method}-{dataset}" + ("" if buffer == -1 else f"-{buffer}")
                values = {OURS[key]: value for key, value in original_arguments(method, dataset, buffer).items() if OURS[key]}
                if buffer != -1:
                    values["model.buffer_size"] = buffer
                presets[name] = (dataset, method, values)
    return presets


EXPECTED = expected_presets()
OLD_NAMES = {"der-seq-cifar10": "der-seq-cifar10-500", "derpp-seq-cifar10": "derpp-seq-cifar10-500",
             "er-seq-mnist": "er-seq-mnist-500"}


@pytest.fixture(scope="module")
def composed() -> dict:
    """Every preset file composed with Hydra (one initialisation for all)."""
    names = sorted(path.stem for path in (REPO / "mammoth" / "app" / "conf" / "experiment").glob("*.yaml"))
    return {name: compose_mammoth(f"experiment={name}") for name in names}


def _get(cfg, key: str):
    value = OmegaConf.select(cfg, key, throw_on_missing=True)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def test_the_table_covers_every_method_dataset_and_buffer() -> None:
    # 6 datasets: sgd and joint once each; er, der, derpp per buffer: 200, 500, 5120 (seq-cifar100: 500, 2000)
    assert len(EXPECTED) == 6 * 2 + 5 * 3 * 3 + 3 * 2
    assert {name for name in EXPECTED if name.startswith("derpp-seq-cifar100-")} == {
        "derpp-seq-cifar100-500", "derpp-seq-cifar100-2000"}


#: Presets of the pretrained-ViT methods, checked in tests/models/test_prompt_presets.py (slca, ranpac,
#: simplecil: in tests/models/test_slca.py, test_ranpac.py, test_simplecil.py; wa, podnet: test_wa.py, test_podnet.py;
#: mas, rwalk, ewc: in tests/models/test_importance_methods.py; lucir, lwf_mc: tests/models/test_lucir_lwfmc_presets.py).
PROMPT_PRESETS = ("l2p-", "dualprompt-", "coda-prompt-", "slca-", "ranpac-", "simplecil-", "wa-", "podnet-", "mas-", "rwalk-",
                  "ewc-seq-", "lucir-", "lwf-mc-")


#: Presets of the original's agem_r, fdr, rpc, gss and hal, checked in tests/models/test_original_presets.py.
ORIGINAL_METHOD_PRESETS = ("agem-r-", "fdr-", "rpc-", "gss-", "hal-")


#: Presets of a method with a regulariser (derpp + lider, er + star, ...), checked in tests/models/test_regularizers.py.
REGULARIZER_PRESETS = ("-lider-", "-star-")


def test_every_preset_file_is_in_the_table(composed) -> None:
    assert {name for name in composed if not name.startswith(PROMPT_PRESETS + ORIGINAL_METHOD_PRESETS)
            and not any(part in name for part in REGULARIZER_PRESETS)} == set(EXPECTED) | set(OLD_NAMES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_holds_the_originals_best_arguments(composed, name: str) -> None:
    dataset, method, values = EXPECTED[name]
    cfg = composed[name]
    assert cfg.dataset.name == dataset
    assert cfg.model._target_.rsplit(".", 1)[-1].lower() == method
    assert {key: _get(cfg, key) for key in values} == values
    # what the original's best arguments leave out keeps the original's default
    if "model.lr_milestones" not in values:
        assert cfg.model.lr_milestones is None and dataset != "seq-cifar100"
    for key, default in (("model.momentum", 0.0), ("model.weight_decay", 0.0), ("model.optimizer", "sgd")):
        assert _get(cfg, key) == values.get(key, default)


def test_a_few_values_by_hand(composed) -> None:
    # the values the issue names: derpp seq-cifar10 buffer 500 has alpha 0.2 (0.1 is buffer 200's)
    assert (composed["derpp-seq-cifar10-500"].model.alpha, composed["derpp-seq-cifar10-200"].model.alpha) == (0.2, 0.1)
    # seq-cifar100 uses the multi-step schedule: epochs 35 and 45 of 50; seq-cifar10 has none in the original
    assert list(composed["der-seq-cifar100-500"].model.lr_milestones) == [35, 45]
    assert composed["der-seq-cifar100-500"].model.sched_multistep_lr_gamma == 0.2
    assert composed["sgd-seq-cifar100"].model.sched_multistep_lr_gamma == 0.1
    assert composed["der-seq-cifar10-500"].model.lr_milestones is None
    assert composed["der-seq-cifar10-500"].dataset.n_epochs == 50


@pytest.mark.parametrize(("old", "new"), sorted(OLD_NAMES.items()))
def test_old_names_are_the_buffer_500_presets(composed, old: str, new: str) -> None:
    assert OmegaConf.to_container(composed[old]) == OmegaConf.to_container(composed[new])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_builds_its_model_with_the_schedule(composed, name: str) -> None:
    from mammoth.backbones.mlp import MNISTMLP
    from mammoth.datasets import build_dataset
    from mammoth.models import build_model

    cfg = composed[name]
    dataset = build_dataset(cfg.dataset)  # reads no data
    net = MNISTMLP(num_classes=dataset.n_classes, input_shape=(1, 2, 2), hidden_sizes=(2,))
    model = build_model(cfg.model, net=net, dataset=dataset)
    assert model.lr == EXPECTED[name][2]["model.lr"]
    assert model.lr_milestones == ((35, 45) if cfg.dataset.name == "seq-cifar100" else ())
