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
DISTRIBUTED_METHODS = {"agem", "bic", "der", "derpp", "er", "ewc", "ewc-on", "gdumb", "gem", "icarl", "joint",
                       "joint-cumulative", "lwf", "lwf-mc", "mas", "sgd", "si", "wa"}


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
def test_a_batch_splits_in_equal_shards_or_runs_whole_on_every_rank(processes: int) -> None:
    for size in range(1, 12):
        shards = [shard_of(size, rank, processes) for rank in range(processes)]
        if size % processes:  # cannot split evenly (an epoch's last batch, one smaller than the world): whole everywhere
            assert all((shard.start, shard.stop, shard.split) == (0, size, False) for shard in shards)
            continue
        rows = torch.arange(size)
        assert torch.equal(torch.cat([shard.rows(rows) for shard in shards]), rows)
        assert {shard.local_size for shard in shards} == {size // processes}
        assert all(shard.split for shard in shards) == (processes > 1)
    assert shard_of(6, 1, 2) == Shard(3, 6, 6, 1, 2) and shard_of(5, 1, 2) == Shard(0, 5, 5, 1, 2)
    assert shard_of(6, 1, 2, whole=True) == Shard(0, 6, 6, 1, 2)


def test_a_step_splits_only_when_its_batch_and_its_replay_minibatch_divide(monkeypatch) -> None:
    from mammoth.engine.distributed import step_shard
    from mammoth.errors import TrainingError

    model = begun("er", buffer_size=20, minibatch_size=4)
    assert model.replay_rows(6) == 0 and step_shard(model, 6, 1, 2) == Shard(3, 6, 6, 1, 2)  # empty buffer: no replay
    model.buffer.add(torch.rand(3, 1, 8, 8), labels=torch.arange(3))
    assert model.replay_rows(6) == 3 and not step_shard(model, 6, 1, 2).split  # 3 replayed rows: whole
    model.buffer.add(torch.rand(3, 1, 8, 8), labels=torch.arange(3))
    assert model.replay_rows(6) == 4 and step_shard(model, 6, 1, 2).split and not step_shard(model, 6, 1, 3).split
    assert step_shard(model, 6, 1, 2).of(4) == Shard(2, 4, 4, 1, 2)
    with pytest.raises(TrainingError, match=r"^a replay minibatch of 5 rows in a step split over 2 processes; allowed"):
        step_shard(model, 6, 1, 2).of(5)
    assert step_shard(model, 5, 1, 2).of(5) == Shard(0, 5, 5, 1, 2)  # a whole step replays its minibatch whole
    assert begun("sgd").replay_rows(6) == 0


def test_a_batch_or_minibatch_that_does_not_divide_by_the_processes_is_refused_in_one_line(monkeypatch) -> None:
    from mammoth.engine.distributed import check_even_batches, observe_on_shard

    check_even_batches(10, 5, 1)
    check_even_batches(12, None, 3)
    with pytest.raises(ConfigError, match=r"^dataset.batch_size=10 does not divide by the 3 processes; allowed: a "
                                          r"multiple of 3 \(each rank"):
        check_even_batches(10, None, 3)
    with pytest.raises(ConfigError, match=r"^model.minibatch_size=5 does not divide by the 2 processes; allowed: a "
                                          r"multiple of 2, or null"):
        check_even_batches(10, 5, 2)
    model = begun("er", buffer_size=20, minibatch_size=5)  # seq-digits: batch_size 32
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(ConfigError, match=r"^model.minibatch_size=5 does not divide by the 2 processes"):
        observe_on_shard(model, model.context)


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
        seen.update(shard=context.shard, rows=len(labels), active=context.gradient_reducer.active)
        model.buffer.add(not_aug_inputs, labels=labels)
        return 0.25

    model.observe = observe
    monkeypatch.setattr(distributed.GradientReducer, "wrap", lambda reducer, module: seen.update(wrapped=module))
    batch = Batch(torch.rand(6, 1, 8, 8), torch.arange(6) % 10, torch.rand(6, 1, 8, 8), torch.arange(6))
    assert observe_on_shard(model, context)(batch) == pytest.approx(0.25)  # the mean of the ranks' 0.25
    assert seen == {"shard": Shard(3, 6, 6, 1, 2), "rows": 3, "active": True, "wrapped": model}
    assert context.shard is None and not context.gradient_reducer.active  # outside the step
    assert model.buffer.num_seen == 6  # rank 0's 3 rows, then this rank's 3
    assert torch.equal(model.buffer.examples[:3], rank0_rows)
    assert torch.equal(model.buffer.examples[3:6], batch.not_aug_inputs[3:])
    assert not {"shard", "sharded", "ddp", "gradient_reducer"} & set(vars(model))  # the engine's state is not the model's
    seen.clear()
    odd = Batch(torch.rand(5, 1, 8, 8), torch.arange(5) % 10, torch.rand(5, 1, 8, 8), torch.arange(5))
    assert observe_on_shard(model, context)(odd) == 0.25  # a batch of 5 on 2 ranks: whole here, no collective
    assert seen["shard"] == Shard(0, 5, 5, 1, 2) and seen["rows"] == 5 and seen["active"] is False


def test_methods_say_whether_they_train_on_several_processes(monkeypatch) -> None:
    from mammoth.app.runner import check_distributed_support

    supported = {name for name in MODELS.names() if MODELS.get(name).target.supports_distributed}
    assert supported == DISTRIBUTED_METHODS
    check_distributed_support("mer", MODELS.get("mer").target)  # one process: anything goes
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    check_distributed_support("er", MODELS.get("er").target)
    with pytest.raises(ConfigError, match=r"^model=mer does not support training on 2 processes .*; allowed: one "
                                          r"process, or one of agem, bic, der, derpp, er, ewc, ewc-on, gdumb, gem, icarl"):
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
    assert model.context.gradient_reducer.ddp is None  # one process wraps nothing
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


@pytest.fixture
def one_rank_group():
    """A process group of one gloo rank in this process (what DDP needs to wrap a model), left afterwards."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_the_reducer_averages_the_armed_backward_passes_of_a_split_step_and_refuses_others(one_rank_group) -> None:
    """The engine's GradientReducer (kept on the context): DDP wraps the model's trainable parameters
    (again when they change); in a split step ``context.backward`` arms it, a method's bare
    ``loss.backward()`` is a one-line error after the step, and ``same_on_every_rank`` work, inner
    loops and whole steps arm nothing. RankSyncBatchNorm shares statistics only in a split step."""
    from mammoth.engine.distributed import RankSyncBatchNorm
    from mammoth.errors import TrainingError

    model = begun("sgd")
    context, reducer = model.context, model.context.gradient_reducer
    model.net.extra_norm = RankSyncBatchNorm(3, affine=False)  # a layer the engine turns on and off
    reducer.wrap(model)
    first = reducer.ddp
    assert isinstance(first, torch.nn.parallel.DistributedDataParallel) and first.module is model
    reducer.refresh(model)
    assert reducer.ddp is first  # the same parameters: the same wrapper
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)

    def loss():
        return model.loss(model.net(x), y)

    with reducer.step(True, "Sgd"):
        assert model.net.extra_norm.synchronise
        model.backward(loss())
        model.step(loss())
        with context.same_on_every_rank():
            assert not model.net.extra_norm.synchronise
            loss().backward()  # identical work: not averaged, not an error
    assert reducer.prepared == 2 and not model.net.extra_norm.synchronise
    with pytest.raises(TrainingError, match=r"^Sgd.observe ran 1 backward pass\(es\) that the ranks did not average; "
                                            r"allowed: self.step\(loss\) or self.backward\(loss\)"):
        with reducer.step(True, "Sgd"):
            loss().backward()
    with reducer.step(False, "Sgd"):  # a step every rank runs whole
        model.backward(loss())
    loss().backward()  # an inner loop, outside any step
    assert reducer.prepared == 2
    model.net.head = torch.nn.Linear(2, 2)  # a method adds parameters: wrapped again
    reducer.refresh(model)
    assert reducer.ddp is not first and reducer.ddp.module is model
    with pytest.raises(TrainingError, match=r"^the ranks cannot average this step's gradients: a trainable parameter "
                                            r"got no gradient in the step's previous backward pass; allowed"):
        with reducer.step(True, "Sgd"):
            model.backward(loss())  # the new head is not in the graph: DDP's reduction never finishes
            model.backward(loss())
