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


# ---- through the harness ----

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import mammoth  # noqa: E402
import composing  # noqa: E402
from mammoth.engine.context import build_context  # noqa: E402
from mammoth.engine.precision import check_method_precision  # noqa: E402
from mammoth.models import MODELS  # noqa: E402


def _run(output_dir: Path, *overrides: str) -> dict:
    mammoth.run(composing.compose_run(output_dir, "model=sgd", "dataset.n_epochs=1", *overrides, seed=3))
    return json.loads((output_dir / "results.json").read_text())


def test_a_bf16_run_records_its_precision_and_learns_like_fp32(tmp_path: Path) -> None:
    full = _run(tmp_path / "fp32")
    mixed = _run(tmp_path / "bf16", "precision=bf16")
    assert full["config"]["precision"] == "fp32" and mixed["config"]["precision"] == "bf16"
    # bf16 rounds every matmul (test_autocast_and_channels_last_reach_the_training_step shows it
    # is on): the accuracies may differ a little, and each task is learnt as in fp32
    for task, (row_full, row_mixed) in enumerate(zip(full["task_il"]["matrix"], mixed["task_il"]["matrix"])):
        assert abs(row_full[task] - row_mixed[task]) < 5.0
    assert min(row[task] for task, row in enumerate(mixed["class_il"]["matrix"])) > 85.0


def test_fp16_is_refused_on_the_cpu_before_training(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^precision=fp16 needs a CUDA device"):
        _run(tmp_path / "fp16", "precision=fp16")
    assert not (tmp_path / "fp16" / "results.json").exists()


@pytest.mark.parametrize("name", sorted(name for name in MODELS.names() if not getattr(MODELS.get(name).target, "supports_fp16", True)))
def test_methods_that_step_themselves_refuse_fp16(name: str) -> None:
    with pytest.raises(ConfigError) as error:
        check_method_precision("fp16", name, MODELS.get(name).target)
    assert str(error.value) == (f"model={name} does not support precision=fp16 (it calls backward and steps its "
                                "optimizer itself, without gradient scaling); allowed for it: fp32, bf16")
    check_method_precision("bf16", name, MODELS.get(name).target)  # bf16 needs no scaling


def test_the_fp16_refusals_are_the_methods_that_call_backward_themselves() -> None:
    import inspect

    for name in MODELS.names():
        method = MODELS.get(name).target
        source = "".join(inspect.getsource(cls) for cls in method.__mro__
                         if cls.__module__.startswith("mammoth.models") and cls.__name__ != "ContinualModel")
        assert getattr(method, "supports_fp16", True) == (".backward(" not in source), name


def test_autocast_and_channels_last_reach_the_training_step() -> None:
    from mammoth.datasets import build_dataset

    dataset = build_dataset({"name": "seq-digits"})
    context = build_context(dataset, "cpu", torch.Generator().manual_seed(0), precision="bf16", channels_last=True)
    seen = []

    def step(batch) -> float:
        seen.append((torch.nn.functional.linear(batch.inputs.flatten(1), torch.randn(3, 64)).dtype,
                     batch.inputs.is_contiguous(memory_format=torch.channels_last)))
        return 0.0

    context.fit(step, dataset.task_source(0).subset(torch.arange(40)), epochs=1, description="check", batch_size=20)
    assert seen == [(torch.bfloat16, True)] * 2


def test_the_step_scales_the_loss_and_ends_at_the_unscaled_update() -> None:
    from types import SimpleNamespace

    from mammoth.models.base import ContinualModel

    def trained(scaler) -> tuple[torch.Tensor, list[float]]:
        torch.manual_seed(0)
        net = torch.nn.Linear(4, 2)
        model = ContinualModel.__new__(ContinualModel)
        torch.nn.Module.__init__(model)
        model.net = net
        model.optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        model._context = SimpleNamespace(grad_scaler=scaler)
        seen_gradients = []
        net.weight.register_hook(lambda grad: seen_gradients.append(float(grad.abs().sum())))
        loss = net(torch.ones(3, 4)).pow(2).mean()
        model.step(loss)
        return net.weight.detach().clone(), seen_gradients

    plain, plain_gradients = trained(None)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaled, scaled_gradients = trained(scaler)
    assert scaled_gradients[0] == pytest.approx(1024.0 * plain_gradients[0], rel=1e-5)  # backward of the scaled loss
    assert torch.allclose(scaled, plain, atol=1e-6)  # the step is that of the true gradient
    assert scaler.get_scale() == 1024.0  # no overflow: the scale stays until its growth interval


def test_the_docs_list_the_methods_that_refuse_fp16() -> None:
    import re

    from docs_pages import methods_table, page

    text = " ".join(page("datasets.md").split())  # Run-wide settings: precision
    listed = re.search(r"methods that step their optimizer themselves: ([a-z_\-, ]+)\)", text).group(1)
    refusing = {name for name in MODELS.names() if not getattr(MODELS.get(name).target, "supports_fp16", True)}
    assert {name.strip().replace("-", "_") for name in listed.split(",")} == {name.replace("-", "_") for name in refusing}
    rows = methods_table()  # and the fp16 column of the methods table
    assert set(rows) == set(MODELS.names())
    assert {name for name, row in rows.items() if row["fp16"] == "refused"} == refusing
    assert {name for name, row in rows.items() if row["fp16"] == "yes"} == set(MODELS.names()) - refusing
