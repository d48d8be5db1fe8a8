"""What the fidelity tests share: a reference script loaded as a module, and the benchmark every
reference script trains on (class-IL tasks of 2 classes each, fed as they are)."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=None)
def reference_script(name: str) -> ModuleType:
    """``scripts/NAME.py`` as a module (the reference scripts' top levels need only torch)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class PairTasks:
    """A class-IL benchmark's facts as the reference scripts use them: task ``t`` holds classes
    ``2t`` and ``2t + 1``, and the images are fed with no augmentation and no normalisation.
    A subclass gives the data (``task_source``) and the sizes (``n_classes``, ``input_shape``, ...)."""

    setting = "class-il"

    def task_classes(self, task: int) -> range:
        """Classes ``2*task`` and ``2*task + 1``."""
        return range(2 * task, 2 * task + 2)

    def train_transform(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """No augmentation (the scripts feed raw images)."""
        return x

    def test_transform(self, x: Tensor) -> Tensor:
        """No normalisation."""
        return x
