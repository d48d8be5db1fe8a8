"""Flat parameter / gradient utilities across devices.

The device-mismatch checks run everywhere (a ``meta`` vector against a CPU model); the CUDA
tests run only where CUDA is available.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parameters_to_vector

from mammoth.backbones import MammothBackbone, build_backbone
from mammoth.errors import BackboneError
from flat_operations import OPERATIONS, call_flat_operation

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def small_net() -> MammothBackbone:
    torch.manual_seed(0)
    return build_backbone("mnistmlp", num_classes=3, input_shape=(1, 4, 4), hidden_sizes=[8, 6])


@pytest.mark.parametrize("operation", OPERATIONS)
def test_meta_vector_on_cpu_model_names_both_devices(operation: str) -> None:
    net = small_net()
    before = parameters_to_vector(net.parameters()).clone()
    vector = torch.empty(net.num_params(), device="meta")
    with pytest.raises(BackboneError) as info:
        call_flat_operation(net, operation, vector)
    message = str(info.value)
    assert "cpu" in message and "meta" in message
    assert torch.equal(parameters_to_vector(net.parameters()), before)
    assert all(p.grad is None for p in net.parameters())


# ---- CUDA ----


@pytest.fixture
def cuda_net() -> MammothBackbone:
    return small_net().cuda()


@needs_cuda
def test_cuda_get_params_on_device(cuda_net: MammothBackbone) -> None:
    params = cuda_net.get_params()
    assert params.device.type == "cuda"
    assert torch.equal(params, parameters_to_vector(cuda_net.parameters()))


@needs_cuda
def test_cuda_set_params_round_trip_and_copies(cuda_net: MammothBackbone) -> None:
    values = cuda_net.get_params() + 1
    expected = values.clone()
    cuda_net.set_params(values)
    values.zero_()
    assert torch.equal(parameters_to_vector(cuda_net.parameters()), expected)


@needs_cuda
def test_cuda_get_and_set_grads(cuda_net: MammothBackbone) -> None:
    x = torch.randn(2, 1, 4, 4, device="cuda")
    cuda_net(x).square().mean().backward()
    reference = torch.cat([p.grad.reshape(-1) for p in cuda_net.parameters()])
    grads = cuda_net.get_grads()
    assert grads.device.type == "cuda" and torch.equal(grads, reference)
    values = torch.randn(cuda_net.num_params(), device="cuda")
    cuda_net.set_grads(values)
    assert torch.equal(cuda_net.get_grads(), values)


@needs_cuda
def test_cuda_set_grads_creates_missing_grads(cuda_net: MammothBackbone) -> None:
    values = torch.randn(cuda_net.num_params(), device="cuda")
    cuda_net.set_grads(values)
    assert all(p.grad is not None and p.grad.device.type == "cuda" for p in cuda_net.parameters())
    assert torch.equal(cuda_net.get_grads(), values)


@needs_cuda
def test_cuda_out_buffers(cuda_net: MammothBackbone) -> None:
    buffer = torch.empty(cuda_net.num_params(), device="cuda")
    assert cuda_net.get_params(out=buffer) is buffer
    assert torch.equal(buffer, parameters_to_vector(cuda_net.parameters()))
    assert cuda_net.get_grads(out=buffer) is buffer
    assert torch.equal(buffer, torch.zeros_like(buffer))


@needs_cuda
@pytest.mark.parametrize("operation", OPERATIONS)
def test_cpu_vector_on_cuda_model_names_both_devices(cuda_net: MammothBackbone, operation: str) -> None:
    with pytest.raises(BackboneError) as info:
        call_flat_operation(cuda_net, operation, torch.zeros(cuda_net.num_params()))
    message = str(info.value)
    assert "cuda" in message and "cpu" in message


@needs_cuda
@pytest.mark.parametrize("operation", OPERATIONS)
def test_cuda_vector_on_cpu_model_names_both_devices(operation: str) -> None:
    net = small_net()
    with pytest.raises(BackboneError) as info:
        call_flat_operation(net, operation, torch.zeros(net.num_params(), device="cuda"))
    message = str(info.value)
    assert "cuda" in message and "cpu" in message
