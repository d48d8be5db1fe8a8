"""The flat storage under DistributedDataParallel (2 gloo processes, float64): get_grads and
flat_grads read the averaged gradients, with and without ``gradient_as_bucket_view`` (whose bucket
views replace the ``.grad`` views: the storage then steps back and gathers), whether the flat
storage was built before DDP wrapped the network or at the first flat call after it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mammoth.backbones import MammothBackbone, build_backbone

pytestmark = pytest.mark.distributed

WORLD = 2
STEPS = 3
LR = 0.1


def make() -> MammothBackbone:
    torch.manual_seed(0)
    return build_backbone("mnistmlp", num_classes=3, input_shape=(1, 4, 4), hidden_sizes=[6, 5]).double()


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(2)
    return [(torch.randn(8, 1, 4, 4, generator=generator, dtype=torch.float64), torch.randint(0, 3, (8,), generator=generator))
            for _ in range(STEPS)]


def train(net: MammothBackbone, model: nn.Module, rank: int, world: int) -> dict:
    """STEPS SGD steps with zero_grad(set_to_none=True); the flat gradients of each step."""
    optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=0.9)
    record: dict = {"get_grads": [], "flat_grads": [], "managed": []}
    for inputs, labels in batches():
        share = len(inputs) // world
        rows = slice(rank * share, (rank + 1) * share)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs[rows]), labels[rows]).backward()
        record["get_grads"].append(net.get_grads())
        record["flat_grads"].append(net.flat_grads().clone())
        record["managed"].append(net.flatten_parameters().manages_grads)
        optimizer.step()
    record["params"] = net.get_params()
    return record


#: (gradient_as_bucket_view, flat storage built before DDP wraps the network)
CASES = [(False, True), (False, False), (True, True), (True, False)]


def worker(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        records = []
        for bucket_view, flatten_first in CASES:
            net = make()
            if flatten_first:
                net.flatten_parameters()
            model = DistributedDataParallel(net, gradient_as_bucket_view=bucket_view)
            record = train(net, model, rank, WORLD)
            record["flat"] = net.flatten_parameters().flat
            records.append(record)
        torch.save(records, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_flat_gradients_under_ddp_are_the_averaged_ones(tmp_path: Path) -> None:
    net = make()
    reference = train(net, net, rank=0, world=1)  # one process, the whole batch
    out = tmp_path / "record"
    mp.spawn(worker, args=(str(tmp_path / "store"), str(out)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        for (bucket_view, flatten_first), record in zip(CASES, torch.load(f"{out}.{rank}")):
            case = f"rank {rank}, gradient_as_bucket_view={bucket_view}, flattened before DDP: {flatten_first}"
            assert record["flat"], case
            for step in range(STEPS):
                for kind in ("get_grads", "flat_grads"):
                    torch.testing.assert_close(record[kind][step], reference[kind][step], rtol=0, atol=1e-12, msg=case)
            torch.testing.assert_close(record["params"], reference["params"], rtol=0, atol=1e-12, msg=case)
            # DDP's bucket views own the gradients: the storage steps back (at the first flat
            # call after a backward when built before DDP; from the start when built after it).
            assert record["managed"] == [not bucket_view] * STEPS, case
