"""One experiment on several processes, in one process: the shards of a batch, the replay buffer's
gathering, the sharded replay minibatch, the refusals and the writes left to rank 0. The runs on
two real processes are in test_distributed_runs.py (the second suite, ``-m distributed``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mammoth.engine.distributed as distributed
from mammoth.backbones import build_backbone
from mammoth.datasets import build_dataset
from mammoth.engine.checkpoint import TrainingState, save_checkpoint
from mammoth.engine.context import build_context
from mammoth.app.launch import join_command_line
from mammoth.engine.distributed import Shard, shard_of
from mammoth.errors import ConfigError
from mammoth.models import MODELS, build_model
from mammoth.models.buffer import ReplayBuffer

#: The methods that train on several processes as on one (docs/distributed.md).
DISTRIBUTED_METHODS = {"agem", "bic", "der", "derpp", "er", "ewc-on", "gdumb", "gem", "icarl", "joint",
                       "joint-cumulative", "lwf", "sgd", "si"}


def begun(name: str, **values) -> torch.nn.Module:
    """Method ``name`` on seq-digits (a seeded mnistmlp, a seeded run generator) after ``begin_task(0)``."""
    dataset = build_dataset("seq-digits")
    torch.manual_seed(0)
    net = build_backbone("mnistmlp", num_classes=dataset.n_classes, input_shape=dataset.input_shape)
    model = build_model(name, net=net, dataset=dataset, **values)
    model.attach(build_context(dataset, "cpu", torch.Generator().manual_seed(0)))
    model.begin_task(0)
    return model


@pytest.mark.parametrize("processes", [1, 2, 3])
def test_shards_cover_each_batch_in_order_with_weights_summing_to_one(processes: int) -> None:
    for size in range(0, 12):
        shards = [shard_of(size, rank, processes) for rank in range(processes)]
        if size < processes:  # too small to split: every rank trains on all of it, weighing 1/W
            assert all((shard.start, shard.stop, shard.weight) == (0, size, 1.0 / processes) for shard in shards)
            continue
        rows = torch.arange(size)
        assert torch.equal(torch.cat([shard.rows(rows) for shard in shards]), rows)
        assert max(s.local_size for s in shards) - min(s.local_size for s in shards) <= 1
        assert sum(shard.weight for shard in shards) == pytest.approx(1.0)
    assert shard_of(5, 0, 2) == Shard(0, 3, 5, 0.6, 0, 2) and shard_of(5, 1, 2) == Shard(3, 5, 5, 0.4, 1, 2)
    assert shard_of(5, 1, 2).split and not shard_of(1, 1, 2).split


def two_ranks(other_rows: dict[str, torch.Tensor]):
    """A stand-in for gathering on rank 0 of 2: this rank's rows, then rank 1's (``other_rows`` by dtype and width)."""
    def gather(tensor: torch.Tensor) -> torch.Tensor:
        return torch.cat([tensor, other_rows[str(tensor.dtype), tensor.shape[1:]]])
    return gather


def test_a_gathering_buffer_stores_what_one_process_stores() -> None:
    torch.manual_seed(0)
    batches = [(torch.rand(6, 3), torch.randint(0, 4, (6,))) for _ in range(5)]
    alone, gathering = ReplayBuffer(8, seed=1), ReplayBuffer(8, seed=1)
    for examples, labels in batches:
        alone.add(examples, labels=labels)
        mine = shard_of(6, 0, 2)
        other = {(str(examples.dtype), examples.shape[1:]): examples[mine.stop:],
                 (str(labels.dtype), labels.shape[1:]): labels[mine.stop:]}
        gathering.gather = two_ranks(other)
        gathering.add(mine.rows(examples), labels=mine.rows(labels))
    assert gathering.num_seen == alone.num_seen == 30
    assert torch.equal(gathering.examples, alone.examples) and torch.equal(gathering.labels, alone.labels)


def test_a_sharded_step_replays_its_part_of_the_minibatch_one_process_draws(monkeypatch) -> None:
    models = [begun("er", buffer_size=20) for _ in range(2)]
    examples, labels = torch.rand(20, 1, 8, 8), torch.arange(20) % 10
    for model in models:
        model.buffer.add(examples, labels=labels)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    whole = models[0].replay_batch(10)
    shard = shard_of(10)  # rank 1 of 2: rows 5..9 of the batch
    models[1].context.shard = shard  # what the engine's step sets (observe_on_shard)
    part = models[1].replay_batch(shard.local_size)  # observe passes its shard's size; the context says the whole
    assert torch.equal(part.indices, whole.indices[5:]) and torch.equal(part.labels, whole.labels[5:])
    assert torch.equal(part.examples, whole.examples[5:])  # augmented from the same draws


def test_the_engine_step_says_the_shard_in_the_context_and_gathers_what_observe_stores(monkeypatch) -> None:
    from mammoth.datasets.source import Batch
    from mammoth.engine.distributed import observe_on_shard

    model = begun("er", buffer_size=20)
    context = model.context
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "sum_over_ranks", lambda tensor: tensor * 2)  # rank 0's loss: the same
    rank0_rows = torch.full((3, 1, 8, 8), 7.0)  # what rank 0 stores of the batch (its rows 0..2)
    monkeypatch.setattr(distributed, "gather_rows", lambda tensor: torch.cat([
        rank0_rows if tensor.dim() == 4 else torch.arange(3, dtype=tensor.dtype), tensor]))
    seen = {}

    def observe(inputs, labels, not_aug_inputs):
        seen.update(shard=context.shard, rows=len(labels))
        model.buffer.add(not_aug_inputs, labels=labels)
        return 0.25

    model.observe = observe
    monkeypatch.setattr(distributed.GradientHooks, "add", lambda hooks, module: seen.update(hooked=module))
    batch = Batch(torch.rand(6, 1, 8, 8), torch.arange(6) % 10, torch.rand(6, 1, 8, 8), torch.arange(6))
    assert observe_on_shard(model, context)(batch) == pytest.approx(0.25)  # 2 x (0.25 x 3/6)
    assert seen == {"shard": Shard(3, 6, 6, 0.5, 1, 2), "rows": 3, "hooked": model}
    assert context.shard is None  # outside the step
    assert model.buffer.num_seen == 6  # rank 0's 3 rows, then this rank's 3
    assert torch.equal(model.buffer.examples[:3], rank0_rows)
    assert torch.equal(model.buffer.examples[3:6], batch.not_aug_inputs[3:])
    assert not {"shard", "sharded", "_distributed_hooks"} & set(vars(model))  # the engine's state is not the model's


def test_methods_say_whether_they_train_on_several_processes(monkeypatch) -> None:
    from mammoth.app.runner import check_distributed_support

    supported = {name for name in MODELS.names() if MODELS.get(name).target.supports_distributed}
    assert supported == DISTRIBUTED_METHODS
    check_distributed_support("mer", MODELS.get("mer").target)  # one process: anything goes
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    check_distributed_support("er", MODELS.get("er").target)
    with pytest.raises(ConfigError, match=r"^model=mer does not support training on 2 processes .*; allowed: one "
                                          r"process, or one of agem, bic, der, derpp, er, ewc-on, gdumb, gem, icarl"):
        check_distributed_support("mer", MODELS.get("mer").target)


def test_only_rank_zero_writes_the_checkpoint(monkeypatch, tmp_path: Path) -> None:
    model = begun("er", buffer_size=20)
    state = TrainingState.empty("class-il")
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    save_checkpoint(tmp_path / "checkpoint.pt", model, torch.Generator(), state, {})
    assert not (tmp_path / "checkpoint.pt").exists()
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    save_checkpoint(tmp_path / "checkpoint.pt", model, torch.Generator(), state, {})
    assert (tmp_path / "checkpoint.pt").stat().st_size > 0


def test_one_process_keeps_its_command_line_and_a_multirun_under_torchrun_is_refused(monkeypatch) -> None:
    from mammoth.app.preflight import CommandLine

    command_line = CommandLine(["model=er"], multirun=False, directory=Path("/tmp/run"), pin_at=1)
    assert join_command_line(command_line) is command_line
    monkeypatch.setattr(distributed, "detect_launch", lambda: distributed.Launch(0, 2, 0, "torchrun"))
    with pytest.raises(ConfigError, match=r"^--multirun on 2 processes started by torchrun; allowed: one run per torchrun"):
        join_command_line(CommandLine(["model=er"], multirun=True))


def test_one_process_observes_the_whole_batch_with_no_hooks() -> None:
    from mammoth.datasets.source import Batch
    from mammoth.engine.distributed import average_batchnorm_statistics, observe_on_shard

    model = begun("sgd")
    seen = []
    model.observe = lambda inputs, labels, not_aug: seen.append((len(labels), model.context.shard)) or 0.5
    batch = Batch(torch.rand(6, 1, 8, 8), torch.arange(6) % 10, torch.rand(6, 1, 8, 8), torch.arange(6))
    assert observe_on_shard(model, model.context)(batch) == 0.5 and seen == [(6, None)]
    assert model.context.gradient_hooks.handles == {}
    tensor = torch.rand(4, 2)
    assert model.context.gather_shards(tensor) is tensor  # nothing to gather in one process
    before = {name: value.clone() for name, value in model.state_dict().items()}
    average_batchnorm_statistics(model)
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())


def test_the_methods_page_says_which_methods_train_on_several_processes() -> None:
    from docs_pages import methods_table

    rows = methods_table()
    assert set(rows) == set(MODELS.names())
    assert {row["several processes"] for row in rows.values()} == {"yes", "refused"}
    assert {name for name, row in rows.items() if row["several processes"] == "yes"} == DISTRIBUTED_METHODS


def test_a_rank_logs_to_its_own_file_and_refuses_a_planted_link(tmp_path, monkeypatch):
    import logging

    from mammoth.engine import distributed
    from mammoth.errors import ConfigError

    monkeypatch.setattr(distributed, "rank", lambda: 1)
    monkeypatch.setattr(distributed, "is_main_process", lambda: False)
    root = logging.getLogger()
    saved = list(root.handlers)
    target = tmp_path / "elsewhere.txt"
    target.write_text("untouched")
    (tmp_path / "rank1.log").symlink_to(target)
    try:
        with pytest.raises(ConfigError, match="rank1.log"):
            distributed.log_to_rank_file(tmp_path)
        assert target.read_text() == "untouched" and root.handlers == saved  # nothing written, logging as it was
        (tmp_path / "rank1.log").unlink()
        distributed.log_to_rank_file(tmp_path)
        logging.getLogger("mammoth.test").warning("from rank one")
        assert "[rank 1 pid" in (tmp_path / "rank1.log").read_text()
        assert "from rank one" in (tmp_path / "rank1.log").read_text()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved:
            root.addHandler(handler)


def test_the_gradient_hooks_weigh_each_rank_by_its_shard_and_hook_a_parameter_once(monkeypatch) -> None:
    """The engine's hooks (kept on the context, not the model): a backward pass scales each gradient
    by the step's shard weight (1 / world_size outside a step) and sums it over the ranks (here a
    stand-in for 2 ranks holding the same gradient: x2)."""
    from mammoth.engine.distributed import GradientHooks

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed.dist, "all_reduce", lambda tensor: tensor.mul_(2))
    current = {"shard": Shard(0, 3, 4, 0.75, 0, 2)}
    hooks = GradientHooks(lambda: current["shard"])
    layer = torch.nn.Linear(3, 1)
    hooks.add(layer)
    hooks.add(layer)  # a parameter is hooked once
    assert len(hooks.handles) == 2
    x = torch.ones(2, 3)
    layer(x).sum().backward()
    assert torch.equal(layer.weight.grad, torch.full((1, 3), 2.0 * 0.75 * 2))  # d/dw of the sum: 2 rows of ones
    layer.zero_grad(set_to_none=True)
    current["shard"] = None  # outside a sharded step (a method's inner loop): every rank holds the whole batch
    layer(x).sum().backward()
    assert torch.equal(layer.weight.grad, torch.full((1, 3), 2.0 * 0.5 * 2))
