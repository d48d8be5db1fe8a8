"""The MammothBackbone contract, checked on every registered backbone.

Parametrised over ``list_backbones()`` at collection time, so a newly registered backbone is
covered without touching this file. Each backbone is built once per module and restored to
its initial state after every test.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.utils import parameters_to_vector

from mammoth.backbones import RETURNT_VALUES, MammothBackbone, build_backbone, list_backbones
from mammoth.errors import BackboneError
from flat_operations import OPERATIONS, call_flat_operation

NUM_CLASSES = 10
INPUT_SHAPE = (3, 32, 32)
BATCH = 2


class Probe:
    """One built backbone, its initial state, and the results of one pass of each kind."""

    def __init__(self, name: str) -> None:
        torch.manual_seed(0)
        self.net = build_backbone(name, num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE).eval()
        self.state = copy.deepcopy(self.net.state_dict())
        self.x = torch.randn(BATCH, *INPUT_SHAPE, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            self.outputs = {returnt: self.net(self.x, returnt=returnt) for returnt in RETURNT_VALUES}
            self.outputs["default"] = self.net(self.x)
            self.outputs["features()"] = self.net.features(self.x)
        # One backward with the first parameter frozen: it must read as zeros in get_grads.
        self.frozen = next(self.net.parameters())
        self.frozen.requires_grad_(False)
        self.net(self.x).square().mean().backward()
        self.grads = [None if p.grad is None else p.grad.clone() for p in self.net.parameters()]
        self.dirty = True
        self.reset()

    def reset(self) -> None:
        if self.dirty:  # only tests that write parameters pay for the reload
            self.net.load_state_dict(self.state)
            self.dirty = False
        for parameter in self.net.parameters():
            parameter.requires_grad_(True)
            parameter.grad = None

    def restore_grads(self) -> None:
        """Put back the gradients of the recorded backward (first parameter frozen, no grad)."""
        self.frozen.requires_grad_(False)
        for parameter, grad in zip(self.net.parameters(), self.grads):
            parameter.grad = None if grad is None else grad.clone()


@pytest.fixture(scope="module")
def _probes() -> dict:
    return {}


@pytest.fixture(params=list_backbones())
def probe(request: pytest.FixtureRequest, _probes: dict) -> Probe:
    if request.param not in _probes:
        _probes[request.param] = Probe(request.param)
    yield _probes[request.param]
    _probes[request.param].reset()


@pytest.fixture
def net(probe: Probe) -> MammothBackbone:
    return probe.net


def concatenated_grads(model: torch.nn.Module) -> torch.Tensor:
    """Reference: every .grad flattened in parameters() order, zeros where there is none."""
    return torch.cat(
        [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel()) for p in model.parameters()]
    )


def inside_storage(parameter: torch.Tensor, vector: torch.Tensor) -> bool:
    start = vector.untyped_storage().data_ptr()
    end = start + vector.untyped_storage().nbytes()
    return start <= parameter.data_ptr() < end


# ---- returnt ----


def test_is_a_mammoth_backbone_with_sizes(net: MammothBackbone) -> None:
    assert isinstance(net, MammothBackbone)
    assert net.num_classes == NUM_CLASSES
    assert isinstance(net.num_features, int) and net.num_features > 0


def test_out_shape_and_default(probe: Probe) -> None:
    out = probe.outputs["out"]
    assert out.shape == (BATCH, NUM_CLASSES)
    torch.testing.assert_close(probe.outputs["default"], out)  # "out" is the default


def test_features_shape(probe: Probe) -> None:
    assert probe.outputs["features"].shape == (BATCH, probe.net.num_features)


def test_both_is_out_and_features(probe: Probe) -> None:
    both = probe.outputs["both"]
    assert isinstance(both, tuple) and len(both) == 2
    torch.testing.assert_close(both[0], probe.outputs["out"])
    torch.testing.assert_close(both[1], probe.outputs["features"])


def test_classifier_maps_features_to_out(probe: Probe) -> None:
    with torch.no_grad():
        logits = probe.net.classifier(probe.outputs["features"])
    torch.testing.assert_close(logits, probe.outputs["out"])


def test_features_method_equals_returnt_features(probe: Probe) -> None:
    torch.testing.assert_close(probe.outputs["features()"], probe.outputs["features"])


def test_full_ends_with_features_and_out(probe: Probe) -> None:
    full = probe.outputs["full"]
    assert isinstance(full, list) and len(full) >= 2
    assert all(isinstance(item, torch.Tensor) and item.shape[0] == BATCH for item in full)
    torch.testing.assert_close(full[-1], probe.outputs["out"])
    torch.testing.assert_close(full[-2], probe.outputs["features"])


def test_invalid_returnt_lists_allowed_values(probe: Probe) -> None:
    with pytest.raises(BackboneError) as info:
        probe.net(probe.x[:1], returnt="logits")
    assert str(info.value) == "invalid returnt 'logits'; allowed: out, features, both, full"


# ---- flat parameters ----


def test_get_params_is_parameters_to_vector(net: MammothBackbone) -> None:
    params = net.get_params()
    assert params.dim() == 1
    assert params.numel() == sum(p.numel() for p in net.parameters()) == net.num_params()
    assert torch.equal(params, parameters_to_vector(net.parameters()))


def test_get_params_is_a_copy(net: MammothBackbone) -> None:
    params = net.get_params()
    assert not any(inside_storage(p, params) for p in net.parameters())
    first = next(net.parameters())
    before = first.detach().clone()
    params.add_(1.0)
    assert torch.equal(first.detach(), before)


def test_set_params_round_trip(probe: Probe) -> None:
    net, probe.dirty = probe.net, True
    original = [p.detach().clone() for p in net.parameters()]
    net.set_params(net.get_params() + 1)
    for parameter, before in zip(net.parameters(), original):
        assert torch.equal(parameter.detach(), before + 1)
    net.set_params(torch.cat([p.reshape(-1) for p in original]))
    for parameter, before in zip(net.parameters(), original):
        assert torch.equal(parameter.detach(), before)


def test_set_params_copies_the_vector(probe: Probe) -> None:
    net, probe.dirty = probe.net, True
    values = net.get_params() + 1
    expected = values.clone()
    net.set_params(values)
    assert not any(inside_storage(p, values) for p in net.parameters())
    values.mul_(0.0)
    assert torch.equal(parameters_to_vector(net.parameters()), expected)


# ---- flat gradients ----


def test_get_grads_without_backward_is_zeros(net: MammothBackbone) -> None:
    assert torch.equal(net.get_grads(), torch.zeros(net.num_params()))


def test_get_grads_after_backward(probe: Probe) -> None:
    probe.restore_grads()
    grads = probe.net.get_grads()
    assert grads.shape == (probe.net.num_params(),)
    assert torch.equal(grads, concatenated_grads(probe.net))
    assert grads.abs().sum() > 0


def test_get_grads_frozen_parameter_reads_zeros(probe: Probe) -> None:
    probe.restore_grads()
    assert probe.frozen.grad is None and not probe.frozen.requires_grad
    grads = probe.net.get_grads()
    assert grads.numel() == probe.net.num_params()  # frozen parameters keep their slot
    assert torch.equal(grads[: probe.frozen.numel()], torch.zeros(probe.frozen.numel()))
    assert torch.equal(grads[probe.frozen.numel() :], concatenated_grads(probe.net)[probe.frozen.numel() :])


def test_set_grads_creates_missing_grads_as_copies(net: MammothBackbone) -> None:
    frozen = next(net.parameters())
    frozen.requires_grad_(False)
    values = torch.randn(net.num_params(), generator=torch.Generator().manual_seed(2))
    expected = values.clone()
    net.set_grads(values)
    offset = 0
    for parameter in net.parameters():
        assert parameter.grad is not None and parameter.grad.shape == parameter.shape
        assert torch.equal(parameter.grad.reshape(-1), expected[offset : offset + parameter.numel()])
        assert not inside_storage(parameter.grad, values)
        offset += parameter.numel()
    values.mul_(0.0)
    assert torch.equal(net.get_grads(), expected)


def test_set_grads_overwrites_existing_grads(probe: Probe) -> None:
    probe.restore_grads()
    values = torch.randn(probe.net.num_params(), generator=torch.Generator().manual_seed(3))
    probe.net.set_grads(values)
    assert torch.equal(probe.net.get_grads(), values)
    assert torch.equal(concatenated_grads(probe.net), values)


# ---- out= buffers ----


def test_get_params_fills_out_buffer(net: MammothBackbone) -> None:
    buffer = torch.full((net.num_params(),), float("nan"))
    result = net.get_params(out=buffer)
    assert result is buffer
    assert torch.equal(buffer, parameters_to_vector(net.parameters()))


def test_get_grads_fills_out_buffer(probe: Probe) -> None:
    probe.restore_grads()
    buffer = torch.full((probe.net.num_params(),), float("nan"))
    result = probe.net.get_grads(out=buffer)
    assert result is buffer
    assert torch.equal(buffer, concatenated_grads(probe.net))


# ---- invalid vectors ----


@pytest.mark.parametrize("operation", OPERATIONS)
def test_wrong_length_names_both_lengths(net: MammothBackbone, operation: str) -> None:
    n = net.num_params()
    with pytest.raises(BackboneError) as info:
        call_flat_operation(net, operation, torch.empty(n + 1))
    assert str(n) in str(info.value) and str(n + 1) in str(info.value)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_wrong_dtype_names_both_dtypes(net: MammothBackbone, operation: str) -> None:
    first = next(net.parameters())
    before = first.detach().clone()
    with pytest.raises(BackboneError) as info:
        call_flat_operation(net, operation, torch.empty(net.num_params(), dtype=torch.float64))
    assert "float64" in str(info.value) and "float32" in str(info.value)
    assert torch.equal(first.detach(), before)  # nothing was written


@pytest.mark.parametrize("operation", OPERATIONS)
def test_two_dimensional_vector_is_refused(net: MammothBackbone, operation: str) -> None:
    n = net.num_params()
    with pytest.raises(BackboneError) as info:
        call_flat_operation(net, operation, torch.empty(1, n))
    message = str(info.value)
    assert "1-D" in message and str(n) in message and f"(1, {n})" in message
