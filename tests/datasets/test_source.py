"""DataSource: in-memory sources of uint8 images and float features, subsets, shards, concatenation."""

from __future__ import annotations

import pytest
import torch

from mammoth.datasets import build_dataset
from mammoth.datasets.source import InMemorySource, concat_sources, empty_source
from mammoth.errors import DatasetError


def _images(n: int = 10) -> InMemorySource:
    x = torch.arange(n * 4, dtype=torch.uint8).view(n, 1, 2, 2)
    return InMemorySource(x, torch.arange(n) % 3)


def test_uint8_source_reads_images_in_unit_range() -> None:
    source = _images()
    read = source.read(torch.tensor([3, 0]), "cpu")
    assert read.dtype == torch.float32 and read.shape == (2, 1, 2, 2)
    assert torch.equal(read[0], torch.arange(12, 16, dtype=torch.float32).view(1, 2, 2) / 255)
    assert torch.equal(source.labels, torch.arange(10) % 3)
    assert len(source) == 10


def test_float_source_reads_features_as_they_are() -> None:
    x = torch.randn(6, 5, dtype=torch.float64)
    source = InMemorySource(x, torch.zeros(6, dtype=torch.long))
    assert torch.equal(source.read(torch.tensor([5, 1]), "cpu"), x[[5, 1]])


def test_source_refuses_bad_examples_and_labels() -> None:
    with pytest.raises(DatasetError, match="examples of Tensor torch.int32 are not allowed; allowed: a uint8"):
        InMemorySource(torch.zeros(2, 3, dtype=torch.int32), torch.zeros(2, dtype=torch.long))
    with pytest.raises(DatasetError, match=r"labels of dtype torch.int32 and shape \(2,\) are not allowed; allowed: int64 \(2,\)"):
        InMemorySource(torch.zeros(2, 3), torch.zeros(2, dtype=torch.int32))


def test_subset_of_subset_reads_the_right_rows() -> None:
    source = _images()
    sub = source.subset(torch.tensor([9, 4, 2, 7])).subset(torch.tensor([3, 1]))
    assert len(sub) == 2
    assert torch.equal(sub.labels, torch.tensor([7 % 3, 4 % 3]))
    assert torch.equal(sub.read(torch.tensor([1, 0]), "cpu"), source.read(torch.tensor([4, 7]), "cpu"))
    with pytest.raises(DatasetError, match=r"indices 0\.\.4 are out of range; allowed: 0\.\.3"):
        source.subset(torch.tensor([9, 4, 2, 7])).subset(torch.tensor([0, 4]))


@pytest.mark.parametrize("world_size", [1, 3, 4])
def test_shards_cover_every_item_exactly_once(world_size: int) -> None:
    source = InMemorySource(torch.arange(10, dtype=torch.float32).view(10, 1), torch.arange(10))
    seen = torch.cat([source.shard(rank, world_size).labels for rank in range(world_size)])
    assert sorted(seen.tolist()) == list(range(10))
    shard = source.shard(1, world_size) if world_size > 1 else source.shard(0, 1)
    assert torch.equal(shard.read(torch.arange(len(shard)), "cpu").flatten(), shard.labels.float())
    with pytest.raises(DatasetError, match=f"rank={world_size} is not allowed; allowed: 0..{world_size - 1}"):
        source.shard(world_size, world_size)


def test_concat_reads_across_sources_in_the_order_asked() -> None:
    a = InMemorySource(torch.zeros(3, 2), torch.tensor([0, 0, 0]))
    b = InMemorySource(torch.ones(2, 2), torch.tensor([1, 1]))
    joined = concat_sources([a, b.subset(torch.tensor([1, 0]))])
    assert len(joined) == 5 and joined.labels.tolist() == [0, 0, 0, 1, 1]
    assert joined.read(torch.tensor([4, 0, 3, 1]), "cpu")[:, 0].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert concat_sources([a]) is a
    assert len(empty_source(a)) == 0
    with pytest.raises(DatasetError, match="concat_sources got no source"):
        concat_sources([])


def test_a_class_il_task_source_holds_the_examples_of_its_classes_in_order() -> None:
    digits = build_dataset({"name": "seq-digits"})
    train_x, train_y, test_x, test_y = digits.source()
    for task in (0, 3):
        train, test = digits.task_source(task), digits.test_source(task)
        ours, theirs = (train_y // 2 == task), (test_y // 2 == task)  # two classes a task
        assert torch.equal(train.labels, train_y[ours]) and torch.equal(test.labels, test_y[theirs])
        assert torch.equal(train.read(torch.arange(len(train)), "cpu"), train_x[ours].float() / 255)
        assert torch.equal(test.read(torch.tensor([0]), "cpu"), test_x[theirs][:1].float() / 255)


def test_domain_il_task_sources_are_the_tasks_transformed_data(fake_root) -> None:
    perm = build_dataset({"name": "perm-mnist", "root": str(fake_root), "n_tasks": 3})
    train_x, train_y, test_x, test_y = perm.source()
    for task in (0, 2):
        train, test = perm.task_source(task), perm.test_source(task)
        assert torch.equal(train.labels, train_y) and torch.equal(test.labels, test_y)
        assert torch.equal(train.read(torch.arange(len(train)), "cpu"), perm.apply_task_transform(task, train_x).float() / 255)
        assert torch.equal(test.read(torch.arange(len(test)), "cpu"), perm.apply_task_transform(task, test_x).float() / 255)
    assert not torch.equal(perm.task_source(0).read(torch.arange(4), "cpu"), perm.task_source(2).read(torch.arange(4), "cpu"))


def test_a_benchmark_of_integer_features_is_refused_naming_what_is_allowed() -> None:
    from mammoth.datasets.base import ContinualDataset

    class IntegerFeatures(ContinualDataset):
        name, setting, default_n_tasks, n_classes_per_task = "integers", "class-il", 1, 2
        input_shape, mean, std = (3,), None, None
        default_backbone, default_batch_size, default_n_epochs = "mnistmlp", 4, 1

        def load_source(self):
            x, y = torch.zeros(4, 3, dtype=torch.int32), torch.tensor([0, 1, 0, 1])
            return x, y, x, y

    with pytest.raises(DatasetError, match=r"^integers train images have dtype torch.int32 and shape \(4, 3\); "
                                           r"expected uint8 images or float features \(N, 3\)$"):
        IntegerFeatures().task_source(0)


def test_subsets_of_one_source_concatenate_into_one_subset() -> None:
    x = torch.arange(6, dtype=torch.float32).view(6, 1)
    base = InMemorySource(x, torch.arange(6))
    joined = concat_sources([base.subset(torch.tensor([4, 1])), base.subset(torch.tensor([0])), base.subset(torch.tensor([5, 2]))])
    assert joined.parent is base and joined.labels.tolist() == [4, 1, 0, 5, 2]
    assert joined.read(torch.tensor([4, 0, 2]), "cpu").flatten().tolist() == [2.0, 4.0, 0.0]
    mixed = concat_sources([base.subset(torch.tensor([3])), InMemorySource(x[:1] + 10, torch.tensor([0]))])
    assert mixed.labels.tolist() == [3, 0] and mixed.read(torch.tensor([1, 0]), "cpu").flatten().tolist() == [10.0, 3.0]
