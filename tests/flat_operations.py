"""The four flat-vector operations that take a caller's vector, callable by name in parametrised tests."""

from __future__ import annotations

import torch

from mammoth.backbones.base import MammothBackbone

#: ``set_params(v)``, ``set_grads(v)``, ``get_params(out=v)``, ``get_grads(out=v)``.
OPERATIONS = ["set_params", "set_grads", "get_params_out", "get_grads_out"]


def call_flat_operation(net: MammothBackbone, operation: str, vector: torch.Tensor) -> None:
    """Run ``operation`` (one of :data:`OPERATIONS`) of ``net`` with ``vector``."""
    if operation.endswith("_out"):
        getattr(net, operation.removesuffix("_out"))(out=vector)
    else:
        getattr(net, operation)(vector)
