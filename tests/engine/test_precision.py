"""precision.py: the allowed precisions per device, autocast's dtype, the scaler, channels-last batches."""

import pytest
import torch

from mammoth.engine.precision import autocast, check_precision, grad_scaler, to_memory_format
from mammoth.errors import ConfigError


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cpu_precisions_are_allowed(precision):
    assert check_precision(precision, "cpu") == precision


def test_fp16_on_cpu_is_refused_in_one_line():
    with pytest.raises(ConfigError) as error:
        check_precision("fp16", torch.device("cpu"))
    assert str(error.value).splitlines() == [
        "precision=fp16 needs a CUDA device (its gradient scaling is for GPUs), and this run is on cpu; "
        "allowed on CPU: fp32, bf16"
    ]


def test_unknown_precision_names_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"^precision='half' is not supported; allowed: fp32, bf16, fp16$"):
        check_precision("half", "cpu")


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_autocast_runs_matmuls_in_the_precision(precision, dtype):
    layer = torch.nn.Linear(4, 3)
    with autocast(precision, "cpu"):
        out = layer(torch.randn(2, 4))
    assert out.dtype == dtype
    assert layer.weight.dtype == torch.float32  # mixed precision: the weights stay float32


def test_bf16_output_is_close_to_fp32():
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 8)
    x = torch.randn(16, 64)
    with autocast("bf16", "cpu"):
        low = layer(x).float()
    high = layer(x)
    assert not torch.equal(low, high)
    assert torch.allclose(low, high, atol=0.05, rtol=0.02)


def test_only_fp16_gets_a_grad_scaler():
    assert grad_scaler("fp32", "cpu") is None
    assert grad_scaler("bf16", "cpu") is None
    assert isinstance(grad_scaler("fp16", "cpu"), torch.amp.GradScaler)


def test_channels_last_applies_to_image_batches_only():
    images = torch.randn(2, 3, 5, 5)
    converted = to_memory_format(images, True)
    assert converted.is_contiguous(memory_format=torch.channels_last)
    assert not images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(converted, images)
    features = torch.randn(2, 7)
    assert to_memory_format(features, True) is features
    assert to_memory_format(images, False) is images
