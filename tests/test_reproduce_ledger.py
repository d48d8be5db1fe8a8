"""Every ledger entry reproduced: each preset over 3 seeds on its real data, against the published
value. Hours on a GPU, so only on request: MAMMOTH_DATA=DIR python -m pytest -m reproduce
(DIR holds the benchmarks as dataset.root expects them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mammoth.reporting.ledger import load_ledger
from mammoth.reproduce import reproduce

pytestmark = pytest.mark.reproduce
PRESETS = list(dict.fromkeys(entry.preset for entry in load_ledger()))


@pytest.mark.parametrize("preset", PRESETS)
def test_the_preset_reproduces_its_published_result(preset: str, tmp_path: Path) -> None:
    root = os.environ.get("MAMMOTH_DATA")
    if not root:
        pytest.fail("set MAMMOTH_DATA to the directory of the benchmarks (dataset.root) to run the ledger")
    table, reproduced = reproduce(preset, 3, [f"dataset.root={root}"], tmp_path)
    assert reproduced, f"experiment={preset}:\n{table}"
