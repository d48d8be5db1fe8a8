"""The prompt and pretrained-feature presets feed the backbone as the original's per-method dataset
configs do: ``MEAN``/``STD`` of aimagelab/mammoth (commit e75a491c)
``datasets/configs/<dataset>/<config>.yaml``, where ``<config>`` is the ``dataset_config`` of the
method's ``models/config/<method>.yaml`` (dualprompt: l2p), or the config the preset follows."""

from __future__ import annotations

import pytest

from mammoth.datasets import build_dataset
from composing import compose_mammoth

NONE = ([0, 0, 0], [1, 1, 1])
# preset -> (mean, std) of the original's dataset config
EXPECTED = {
    "l2p-seq-cifar100-224": NONE,  # seq-cifar100-224/l2p.yaml
    "dualprompt-seq-cifar100-224": NONE,  # seq-cifar100-224/l2p.yaml (dualprompt.yaml: dataset_config l2p)
    "coda-prompt-seq-cifar100-224": NONE,  # seq-cifar100-224/coda_prompt.yaml
    "slca-seq-cifar100-224": ([0.5071, 0.4867, 0.4408], [0.2675, 0.2565, 0.2761]),  # seq-cifar100-224/slca.yaml
    "ranpac-seq-cifar100-224": NONE,  # seq-cifar100-224/ranpac.yaml
    "ranpac-seq-cub200": NONE,  # seq-cub200/ranpac.yaml
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_normalises_as_the_originals_dataset_config(name: str) -> None:
    cfg = compose_mammoth(f"experiment={name}")
    mean, std = EXPECTED[name]
    assert list(cfg.dataset.mean) == pytest.approx(mean) and list(cfg.dataset.std) == pytest.approx(std)
    dataset = build_dataset(cfg.dataset)
    assert dataset.mean == pytest.approx(tuple(mean)) and dataset.std == pytest.approx(tuple(std))

