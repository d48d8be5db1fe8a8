"""Parameters and gradients stored as views of one flat buffer (mammoth.backbones.flat).

On every kind of backbone (built-in, torchvision, timm, a user's subclass): the storage changes,
never the values or the Parameter objects; the flat calls are one copy; and the storage follows
what a run does to a network (``.to()``, ``channels_last``, ``load_state_dict``, freezing, added
parameters, zero_grad(set_to_none=True), mixed precision, optimizers made before flattening).
The two-process DDP checks are in test_flat_storage_ddp.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector
from torch.utils._python_dispatch import TorchDispatchMode

from mammoth.backbones import MammothBackbone, build_backbone

SHAPE = (3, 8, 8)


class UserNet(MammothBackbone):
    """A user's subclass: a conv stage with BatchNorm, then a linear classifier."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.stages = nn.ModuleList([
            nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        ])
        self.classifier = nn.Linear(4, num_classes)
        self.num_features, self.num_classes = 4, num_classes


def make(kind: str) -> MammothBackbone:
    torch.manual_seed(0)
    if kind == "user":
        return UserNet()
    if kind == "mnistmlp":
        return build_backbone("mnistmlp", num_classes=3, input_shape=SHAPE, hidden_sizes=[6, 5])
    if kind == "vit":
        return build_backbone("vit", num_classes=3, input_shape=SHAPE, width=8, depth=1, heads=2)
    if kind == "torchvision":
        return build_backbone("torchvision", num_classes=3, input_shape=SHAPE, arch="shufflenet_v2_x0_5")
    if kind == "timm":
        pytest.importorskip("timm")
        return build_backbone("timm", num_classes=3, input_shape=SHAPE, name="vit_tiny_patch16_224",
                              model_args={"depth": 1, "embed_dim": 8, "num_heads": 2, "patch_size": 4})
    raise AssertionError(kind)


KINDS = ["user", "mnistmlp", "vit", "torchvision", "timm"]


def inputs(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, *SHAPE, generator=torch.Generator().manual_seed(1))


def concatenated_grads(net: nn.Module) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in net.parameters()])


def in_buffer(tensor: torch.Tensor, buffer: torch.Tensor) -> bool:
    return tensor.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr()


class AtenOps(TorchDispatchMode):
    """Records the aten operations run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops.append(str(func.overloadpacket.__name__))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kind", KINDS)
def test_flattening_keeps_values_parameter_objects_and_grads(kind: str) -> None:
    net = make(kind)
    net(inputs()).square().mean().backward()
    parameters = list(net.parameters())
    values, grads = parameters_to_vector(parameters).clone(), concatenated_grads(net)
    storage = net.flatten_parameters()
    assert storage.flat and storage.reason is None
    assert list(net.parameters()) == parameters and all(a is b for a, b in zip(net.parameters(), parameters))
    assert all(in_buffer(p, storage.buffer) for p in parameters)
    assert torch.equal(storage.buffer, values) and torch.equal(net.get_params(), values)
    assert storage.grad_buffer is None  # the gradients are stored flat at the first gradient call
    assert torch.equal(net.get_grads(), grads) and torch.equal(net.flat_grads(), grads)
    assert all(in_buffer(p.grad, storage.grad_buffer) for p in parameters if p.grad is not None)


@pytest.mark.parametrize("kind", KINDS)
def test_each_flat_call_is_one_copy(kind: str) -> None:
    net = make(kind)
    net(inputs()).sum().backward()
    values, grads = net.get_params().clone() + 1, net.get_grads().clone() * 2
    out = torch.empty_like(values)
    calls = {
        "get_params(out)": lambda: net.get_params(out=out),
        "set_params": lambda: net.set_params(values),
        "get_grads(out)": lambda: net.get_grads(out=out),
        "set_grads": lambda: net.set_grads(grads),
    }
    for name, call in calls.items():
        with AtenOps() as recorded:
            call()
        assert recorded.ops == ["copy_"], name
    with AtenOps() as recorded:
        view, params_view = net.flat_grads(), net.flat_params()
    assert recorded.ops == [] and torch.equal(view, grads) and torch.equal(params_view, values)
    assert params_view.data_ptr() == next(net.parameters()).data_ptr()
    assert torch.equal(parameters_to_vector(net.parameters()), values)
    assert torch.equal(concatenated_grads(net), grads)


def test_an_optimizer_made_before_flattening_trains_exactly_as_without() -> None:
    flat, plain = make("user"), make("user")
    plain.flat_storage = False
    x, y = inputs(4), torch.tensor([0, 1, 2, 0])
    optimizers = {}
    for net in (flat, plain):
        optimizers[id(net)] = (torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3),
                               torch.optim.Adam(net.parameters(), lr=1e-2))
    for step in range(4):
        for net in (flat, plain):
            for optimizer in optimizers[id(net)]:
                optimizer.zero_grad()  # set_to_none=True: drops the .grad views
                nn.functional.cross_entropy(net(x), y).backward()
                net.get_grads()  # the first call flattens flat, mid-training (optimizer state exists)
                optimizer.step()
    assert flat.flatten_parameters().flat and not plain.flatten_parameters().flat
    assert all(not in_buffer(p, flat.flatten_parameters().buffer) for p in plain.parameters())
    assert torch.equal(flat.get_params(), plain.get_params())
    sgd, adam = optimizers[id(flat)]
    assert all(any(p is q for q in flat.parameters()) for p in sgd.state)
    assert torch.equal(adam.state[flat.classifier.weight]["exp_avg"], optimizers[id(plain)][1].state[plain.classifier.weight]["exp_avg"])


def test_zero_grad_set_to_none_then_backward_puts_the_grads_back_in_the_buffer() -> None:
    net = make("user")
    storage = net.flatten_parameters()
    net.flat_grads()
    for _ in range(2):
        net.zero_grad(set_to_none=True)
        assert all(p.grad is None for p in net.parameters())
        net(inputs()).sum().backward()
        assert all(in_buffer(p.grad, storage.grad_buffer) for p in net.parameters())
        assert torch.equal(net.flat_grads(), concatenated_grads(net))


def test_a_backbone_used_only_through_its_parameters_leaves_the_gradients_alone() -> None:
    """mer reads and writes parameters only: its backward passes must not pay for moving gradients."""
    net = make("user")
    net.set_params(net.get_params() + 1)
    storage = net.flatten_parameters()
    net(inputs()).sum().backward()
    assert storage.grad_buffer is None and not storage.manages_grads
    assert all(p.grad is not None and not in_buffer(p.grad, storage.buffer) for p in net.parameters())
    assert all(not p._post_accumulate_grad_hooks for p in net.parameters())
    assert torch.equal(net.get_grads(), concatenated_grads(net)) and storage.manages_grads


def test_a_parameter_unused_by_the_loss_reads_zero_and_keeps_no_grad() -> None:
    net = make("user")
    net.set_grads(torch.ones(net.num_params()))  # stale values in the gradient buffer
    net.zero_grad(set_to_none=True)
    net.classifier(torch.randn(2, 4)).sum().backward()  # the conv stage gets no gradient
    grads = net.flat_grads()
    conv = net.stages[0][0].weight
    assert conv.grad is None
    assert grads[: conv.numel()].abs().sum() == 0 and torch.equal(grads, concatenated_grads(net))


def test_a_grad_assigned_by_hand_is_read_and_moved_into_the_buffer() -> None:
    net = make("mnistmlp")
    storage = net.flatten_parameters()
    weight = net.classifier.weight
    weight.grad = torch.full_like(weight, 3.0)
    assert torch.equal(net.get_grads(), concatenated_grads(net))
    assert in_buffer(weight.grad, storage.grad_buffer) and bool((weight.grad == 3).all())


def test_a_grad_that_views_another_tensor_makes_the_storage_step_back() -> None:
    """DDP's gradient_as_bucket_view makes each .grad a view of its buckets: the flat calls must
    then read and write those, not the buffer."""
    net = make("mnistmlp")
    storage = net.flatten_parameters()
    bucket = torch.arange(net.num_params(), dtype=torch.float32)
    offset = 0
    for parameter in net.parameters():
        parameter.grad = bucket[offset: offset + parameter.numel()].view_as(parameter)
        offset += parameter.numel()
    assert torch.equal(net.get_grads(), bucket) and torch.equal(net.flat_grads(), bucket)
    assert not storage.manages_grads
    net.set_grads(bucket * 2)
    assert torch.equal(bucket, torch.arange(net.num_params(), dtype=torch.float32) * 2)  # written through


@pytest.mark.parametrize("convert", ["double", "half", "to(float64)", "float"])
def test_dtype_conversion_re_flattens(convert: str) -> None:
    net = make("vit")
    net.flatten_parameters()
    parameters = list(net.parameters())
    net = {"double": net.double, "half": net.half, "to(float64)": lambda: net.to(torch.float64), "float": net.float}[convert]()
    expected = parameters_to_vector(net.parameters())
    storage = net.flatten_parameters()
    assert storage.flat and storage.buffer.dtype == expected.dtype == {"half": torch.float16, "float": torch.float32}.get(
        convert, torch.float64)
    assert all(a is b for a, b in zip(net.parameters(), parameters))
    assert torch.equal(net.get_params(), expected) and all(in_buffer(p, storage.buffer) for p in net.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_cuda_re_flattens_on_the_device() -> None:
    net = make("vit")
    values = net.get_params()
    net.cuda()
    storage = net.flatten_parameters()
    assert storage.flat and storage.buffer.is_cuda and torch.equal(net.get_params().cpu(), values)


def test_channels_last_keeps_its_memory_format_and_gathers() -> None:
    net = make("user").to(memory_format=torch.channels_last)
    conv = net.stages[0][0].weight
    storage = net.flatten_parameters()
    assert not storage.flat and "channels_last" in storage.reason
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    values = torch.cat([p.reshape(-1) for p in net.parameters()]) + 1
    net.set_params(values)
    assert torch.equal(net.get_params(), values) and torch.equal(net.flat_params(), values)
    assert torch.equal(torch.cat([p.reshape(-1) for p in net.parameters()]), values)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    net.to(memory_format=torch.contiguous_format)
    assert net.flatten_parameters().flat and torch.equal(net.get_params(), values)


def test_load_state_dict_writes_into_the_views() -> None:
    net, other = make("vit"), make("vit")
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(1)
    storage = net.flatten_parameters()
    net.load_state_dict(other.state_dict())
    assert net.flatten_parameters() is storage
    assert torch.equal(storage.buffer, parameters_to_vector(other.parameters()))


def test_frozen_parameters_are_covered_and_get_no_grad() -> None:
    net = make("vit")
    frozen = [p for name, p in net.named_parameters() if not name.startswith("classifier")]
    for parameter in frozen:
        parameter.requires_grad_(False)
    net(inputs()).sum().backward()
    assert net.get_params().numel() == net.num_params() == sum(p.numel() for p in net.parameters())
    grads = net.flat_grads()
    assert all(p.grad is None for p in frozen)  # the optimizer keeps skipping them
    assert torch.equal(grads, concatenated_grads(net)) and grads[: frozen[0].numel()].abs().sum() == 0


@pytest.mark.parametrize("addition", ["head", "prompt", "grown-stage", "replaced-classifier", "deleted-head"])
def test_parameters_added_after_flattening_are_flattened_too(addition: str) -> None:
    net = make("mnistmlp")
    net.flatten_parameters()
    if addition == "head":
        net.extra_head = nn.Linear(5, 2)
    elif addition == "prompt":
        net.prompt = nn.Parameter(torch.randn(4, 5))
    elif addition == "grown-stage":
        net.adapters = nn.ModuleList()
        net.flatten_parameters()
        net.adapters.append(nn.Linear(5, 5))
    elif addition == "replaced-classifier":
        net.classifier = nn.Linear(5, 7)
    else:
        net.extra_head = nn.Linear(5, 2)
        net.flatten_parameters()
        del net.extra_head
    expected = parameters_to_vector(net.parameters())
    assert net.get_params().numel() == net.num_params() == expected.numel()
    assert torch.equal(net.get_params(), expected)
    storage = net.flatten_parameters()
    assert storage.flat and all(in_buffer(p, storage.buffer) for p in net.parameters())


def test_mixed_precision_autocast_and_grad_scaler_work_on_the_views() -> None:
    flat, plain = make("user"), make("user")
    plain.flat_storage = False
    storage = flat.flatten_parameters()
    results = []
    for net in (flat, plain):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = net(inputs()).float().square().mean()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        results.append(net.get_grads())
        scaler.step(optimizer)
        results.append(net.get_params())
    assert storage.buffer.dtype == torch.float32 and all(in_buffer(p.grad, storage.grad_buffer) for p in flat.parameters())
    assert torch.equal(results[0], results[2]) and torch.equal(results[1], results[3])


def test_switched_off_the_parameters_keep_their_own_storage() -> None:
    net = make("user")
    net.flat_storage = False
    storages = {p.untyped_storage().data_ptr() for p in net.parameters()}
    values = net.get_params() + 1
    net.set_params(values)
    storage = net.flatten_parameters()
    assert not storage.flat and "flat_storage" in storage.reason
    assert {p.untyped_storage().data_ptr() for p in net.parameters()} == storages
    assert torch.equal(net.get_params(), values)


def test_a_copy_has_its_own_storage() -> None:
    net = make("user")
    storage = net.flatten_parameters()
    twin = copy.deepcopy(net)
    twin.set_params(twin.get_params() + 1)
    assert torch.equal(storage.buffer + 1, twin.get_params())
    assert twin.flatten_parameters() is not storage and all(not in_buffer(p, storage.buffer) for p in twin.parameters())


def test_mixed_dtypes_get_one_buffer_each_and_gather() -> None:
    net = make("user")
    net.classifier.double()
    expected = torch.cat([p.reshape(-1) for p in net.parameters()])  # promoted to float64, as before
    storage = net.flatten_parameters()
    assert not storage.flat and set(storage.buffers) == {(torch.float32, torch.device("cpu")), (torch.float64, torch.device("cpu"))}
    assert all(in_buffer(p, storage.buffers[(p.dtype, p.device)]) for p in net.parameters())
    assert torch.equal(net.get_params(), expected)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_a_backward_with_create_graph_keeps_the_gradients_graph() -> None:
    net = make("mnistmlp")
    storage = net.flatten_parameters()
    net.flat_grads()
    net.zero_grad(set_to_none=True)
    net(inputs()).square().sum().backward(create_graph=True)
    weight = net.classifier.weight
    assert weight.grad.grad_fn is not None and not in_buffer(weight.grad, storage.grad_buffer)
    grads = net.get_grads()
    assert torch.equal(grads, concatenated_grads(net).detach()) and storage.manages_grads
    assert weight.grad.grad_fn is not None  # the graph is still on .grad: second order can flow
