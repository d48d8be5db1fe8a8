"""The flat-utility contract tests once more with the flat storage and torch's private fast paths
switched off (``MammothBackbone.flat_storage``, ``mammoth.backbones.base.FAST_PATHS``), so the
gathering paths (channels_last, mixed storage, DDP's bucket views) and the public fallbacks an
older torch uses are tested too; on a few backbones that between them have frozen, 0-d-free,
conv, norm and linear parameters."""

from __future__ import annotations

import pytest
import torch

from mammoth.backbones import base
from test_contract import (  # noqa: F401 - re-collected here, with the fast paths off
    Probe,
    _probes,
    net,
    test_get_grads_after_backward,
    test_get_grads_fills_out_buffer,
    test_get_grads_frozen_parameter_reads_zeros,
    test_get_grads_without_backward_is_zeros,
    test_get_params_fills_out_buffer,
    test_get_params_is_a_copy,
    test_get_params_is_parameters_to_vector,
    test_set_grads_creates_missing_grads_as_copies,
    test_set_grads_overwrites_existing_grads,
    test_set_params_copies_the_vector,
    test_set_params_round_trip,
    test_two_dimensional_vector_is_refused,
    test_wrong_dtype_names_both_dtypes,
    test_wrong_length_names_both_lengths,
)


@pytest.fixture(autouse=True)
def _no_fast_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base.MammothBackbone, "flat_storage", False)
    for name in base.FAST_PATHS:
        monkeypatch.setitem(base.FAST_PATHS, name, False)


@pytest.fixture(params=["mnistmlp", "reduced-resnet18", "vit"])
def probe(request: pytest.FixtureRequest, _probes: dict) -> Probe:
    if request.param not in _probes:
        _probes[request.param] = Probe(request.param)
    assert not _probes[request.param].net.flatten_parameters().flat
    yield _probes[request.param]
    _probes[request.param].reset()


def test_the_fast_paths_are_off_and_no_private_op_is_called(monkeypatch: pytest.MonkeyPatch) -> None:
    def private(*args, **kwargs):
        raise AssertionError("a private torch op was called with the fast paths off")

    for module, name in ((torch, "_chunk_cat"), (torch, "_foreach_copy_"), (torch._C._nn, "flatten_dense_tensors"),
                         (torch._C._nn, "unflatten_dense_tensors")):
        monkeypatch.setattr(module, name, private, raising=False)
    net = base.MammothBackbone()
    net.stages, net.classifier = torch.nn.ModuleList(), torch.nn.Linear(2, 3)  # 6 weights, 3 biases
    values = torch.arange(9, dtype=torch.float32)
    net.set_params(values)
    assert net.classifier.weight.tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    assert net.classifier.bias.tolist() == [6.0, 7.0, 8.0]
    assert net.get_params().tolist() == values.tolist()
    net.set_grads(values * 2)
    net.set_grads(values * 3)  # the second overwrites existing grads (the foreach_copy path)
    assert net.get_grads().tolist() == (values * 3).tolist()
    out = torch.empty(9)
    assert net.get_params(out=out) is out and out.tolist() == values.tolist()
