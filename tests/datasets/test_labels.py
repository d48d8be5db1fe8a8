"""The dataset settings on labels (class order, validation split, label noise, n_tasks), against
the original Mammoth's own code for each draw (copied below from aimagelab/mammoth e75a491c:
datasets/utils/validation.py, datasets/utils/label_noise.py, datasets/utils/continual_dataset.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammoth.datasets import build_dataset
from mammoth.datasets.labels import class_order, noisy_labels, validation_split
from mammoth.errors import DatasetError


# ---- the original's code, verbatim but for its argument plumbing ----

def original_validation_indexes(validation_size: float, targets: np.ndarray, seed: int):
    if validation_size < 1:
        validation_size = round(validation_size * 100, 2)
    cls_ids, samples_per_class = np.unique(targets, return_counts=True)
    n_samples_val_per_class = np.ceil(samples_per_class * (validation_size / 100)).astype(int)
    all_idxs = np.arange(len(targets))
    val_idxs, train_idxs = [], []
    for cls_id, n_samples, n_samples_val in zip(cls_ids, samples_per_class, n_samples_val_per_class):
        cls_idxs = all_idxs[targets == cls_id]
        idxs = torch.randperm(n_samples, generator=torch.Generator().manual_seed(seed)).numpy()
        val_idxs.append(cls_idxs[idxs[:n_samples_val]])
        train_idxs.append(cls_idxs[idxs[n_samples_val:]])
    return np.concatenate(train_idxs), np.concatenate(val_idxs)


def original_symmetric_noise(targets: np.ndarray, noise_rate: float, seed: int) -> np.ndarray:
    rng = np.random.RandomState(seed)
    unique_targets = np.unique(targets)
    all_idxs = np.arange(len(targets))
    noisy_targets = targets.copy()
    for tgt in unique_targets:
        remaining_targets = unique_targets[unique_targets != tgt]
        target_index = all_idxs[targets == tgt]
        n_items_to_flip = round(len(target_index) * noise_rate)
        rng.shuffle(target_index)
        chosen_idxs = target_index[:n_items_to_flip]
        noisy_targets[chosen_idxs] = rng.choice(remaining_targets, n_items_to_flip)
    return noisy_targets


def original_cifar10_asymmetric(targets: np.ndarray, noise_rate: float, seed: int) -> np.ndarray:
    transitions = {0: 0, 2: 0, 4: 7, 7: 7, 1: 1, 9: 1, 3: 5, 5: 3, 6: 6, 8: 8}
    noisy_targets = targets.copy()
    rng = np.random.RandomState(seed)
    all_idxs = np.arange(len(targets))
    for source_tgt, dest_tgt in transitions.items():
        target_index = all_idxs[targets == source_tgt]
        n_items_to_flip = round(len(target_index) * noise_rate)
        rng.shuffle(target_index)
        noisy_targets[target_index[:n_items_to_flip]] = dest_tgt
    return noisy_targets


def original_permuted_targets(targets: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    np.random.seed(seed)
    order = np.random.permutation(n_classes)
    return order[targets]


def labels(n_classes: int, per_class: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.arange(n_classes).repeat_interleave(per_class)[torch.randperm(n_classes * per_class, generator=generator)]


# ---- the draws match the original's ----

@pytest.mark.parametrize(("fraction", "seed"), [(0.1, 0), (0.25, 3), (0.333, 7)])
def test_validation_split_is_the_originals(fraction: float, seed: int) -> None:
    y = labels(7, 13)
    train, held_out = validation_split(y, fraction, seed)
    expected_train, expected_held_out = original_validation_indexes(fraction, y.numpy(), seed)
    assert train.tolist() == expected_train.tolist() and held_out.tolist() == expected_held_out.tolist()
    assert sorted(train.tolist() + held_out.tolist()) == list(range(len(y)))


@pytest.mark.parametrize(("rate", "seed"), [(0.2, 0), (0.5, 4)])
def test_symmetric_noise_is_the_originals(rate: float, seed: int) -> None:
    y = labels(10, 20)
    noisy = noisy_labels(y, "symmetric", rate, seed)
    assert noisy.tolist() == original_symmetric_noise(y.numpy(), rate, seed).tolist()
    assert abs(float((noisy != y).float().mean()) - rate) < 0.01


def test_cifar10_asymmetric_noise_is_the_originals() -> None:
    y = labels(10, 20)
    noisy = noisy_labels(y, "asymmetric", 0.4, 2, asymmetric="cifar10")
    assert noisy.tolist() == original_cifar10_asymmetric(y.numpy(), 0.4, 2).tolist()
    assert set(zip(y[noisy != y].tolist(), noisy[noisy != y].tolist())) == {(2, 0), (4, 7), (9, 1), (3, 5), (5, 3)}


def test_cifar100_asymmetric_noise_flips_within_blocks_of_five() -> None:
    y = labels(100, 10)
    noisy = noisy_labels(y, "asymmetric", 0.3, 0, asymmetric="cifar100")
    flipped = noisy != y
    assert 0.2 < float(flipped.float().mean()) < 0.4
    assert torch.equal(noisy[flipped], y[flipped] // 5 * 5 + (y[flipped] % 5 + 1) % 5)


@pytest.mark.parametrize("seed", [0, 5])
def test_permute_is_the_originals_draw(seed: int) -> None:
    y = labels(10, 3)
    order = class_order("permute", 10, seed)
    mapping = torch.empty(10, dtype=torch.long)
    mapping[torch.tensor(order)] = torch.arange(10)
    assert mapping[y].tolist() == original_permuted_targets(y.numpy(), 10, seed).tolist()


# ---- the settings on a benchmark (seq-digits: in memory, no files) ----

def test_class_order_puts_the_listed_classes_in_the_first_task() -> None:
    plain = build_dataset({"name": "seq-digits"})
    ordered = build_dataset({"name": "seq-digits", "class_order": [7, 3, 0, 1, 2, 4, 5, 6, 8, 9]})
    task = ordered.task_source(0)
    original = plain.sources()[0].labels
    assert torch.equal(task.labels.sort().values, torch.tensor([0] * int((original == 7).sum()) + [1] * int((original == 3).sum())))
    first_train = plain.sources()[0].read(task.indices, "cpu")
    expected = plain.sources()[0].read(((original == 7) | (original == 3)).nonzero().flatten(), "cpu")
    assert torch.equal(first_train.sum(0), expected.sum(0))  # the same examples
    assert ordered.describe()["class_order"] == [7, 3, 0, 1, 2, 4, 5, 6, 8, 9]
    test_labels = ordered.test_source(2).labels
    assert set(test_labels.tolist()) == {4, 5}


def test_permute_draws_from_the_seed() -> None:
    first = build_dataset({"name": "seq-digits", "class_order": "permute"}, seed=1).describe()["class_order"]
    again = build_dataset({"name": "seq-digits", "class_order": "permute"}, seed=1).describe()["class_order"]
    other = build_dataset({"name": "seq-digits", "class_order": "permute"}, seed=2).describe()["class_order"]
    assert first == again == class_order("permute", 10, 1) and first != other and sorted(first) == list(range(10))


@pytest.mark.parametrize("value", [[0, 1, 2], [0] * 10, "shuffle", [str(c) for c in range(10)]])
def test_a_bad_class_order_is_one_line(value: object) -> None:
    with pytest.raises(DatasetError) as error:
        build_dataset({"name": "seq-digits", "class_order": value})
    assert str(error.value).startswith("dataset.class_order=") and "allowed: permute, or a list" in str(error.value)
    assert "\n" not in str(error.value)


def test_validation_holds_out_training_data_and_evaluates_on_it() -> None:
    dataset = build_dataset({"name": "seq-digits", "validation": 0.2}, seed=3)
    train_all = dataset.sources()[0].labels
    expected_train, expected_held_out = original_validation_indexes(0.2, train_all.numpy(), 3)
    for task in range(dataset.n_tasks):
        train, held_out = dataset.task_source(task), dataset.test_source(task)
        assert set(train.indices.tolist()) == {i for i in expected_train.tolist() if train_all[i] // 2 == task}
        assert set(held_out.indices.tolist()) == {i for i in expected_held_out.tolist() if train_all[i] // 2 == task}
        assert torch.equal(held_out.read(torch.arange(2), "cpu"), dataset.sources()[0].read(held_out.indices[:2], "cpu"))
    assert dataset.describe()["validation"] == 0.2


@pytest.mark.parametrize("value", [0, 1, 10, -0.1])
def test_a_bad_validation_is_one_line(value: object) -> None:
    with pytest.raises(DatasetError, match=r"^dataset\.validation=.* is not allowed; allowed: a fraction in \(0, 1\)"):
        build_dataset({"name": "seq-digits", "validation": value})


def test_noise_changes_training_labels_only_and_is_seeded() -> None:
    dataset = build_dataset({"name": "seq-digits", "noise_rate": 0.3}, seed=4)
    clean = build_dataset({"name": "seq-digits"}, seed=4)
    noisy_all = dataset.prepared().train_labels
    true_all = clean.sources()[0].labels
    assert noisy_all.tolist() == original_symmetric_noise(true_all.numpy(), 0.3, 4).tolist()
    assert torch.equal(dataset.test_source(0).labels, clean.test_source(0).labels)
    # a task trains on the examples whose noisy label is in its classes
    assert set(dataset.task_source(0).labels.tolist()) <= {0, 1}
    assert dataset.describe()["noise_type"] == "symmetric" and dataset.describe()["noise_rate"] == 0.3


def test_asymmetric_noise_only_where_the_original_defines_it() -> None:
    with pytest.raises(DatasetError, match="^dataset.noise_type=asymmetric is not defined for seq-digits; allowed: symmetric"):
        build_dataset({"name": "seq-digits", "noise_type": "asymmetric", "noise_rate": 0.2})
    assert build_dataset({"name": "seq-cifar10", "noise_type": "asymmetric", "noise_rate": 0.2}).config.noise_rate == 0.2
    with pytest.raises(DatasetError, match=r"^dataset.noise_rate=1.5 is not allowed; allowed: a number in \[0, 1\]"):
        build_dataset({"name": "seq-digits", "noise_rate": 1.5})
    with pytest.raises(DatasetError, match="^dataset.noise_type='sym' is not allowed; allowed: symmetric, asymmetric"):
        build_dataset({"name": "seq-digits", "noise_type": "sym"})


@pytest.mark.parametrize(("n_tasks", "per_task"), [(5, 20), (10, 10), (20, 5), (4, 25)])
def test_class_il_n_tasks_that_divide_the_classes(n_tasks: int, per_task: int) -> None:
    dataset = build_dataset({"name": "seq-cifar100", "n_tasks": n_tasks})
    assert (dataset.n_tasks, dataset.n_classes_per_task, dataset.n_classes) == (n_tasks, per_task, 100)
    assert dataset.task_classes(n_tasks - 1) == range(100 - per_task, 100)


def test_n_tasks_that_do_not_divide_list_the_divisors() -> None:
    with pytest.raises(DatasetError) as error:
        build_dataset({"name": "seq-cifar100", "n_tasks": 3})
    assert str(error.value) == ("dataset.n_tasks=3 is not allowed for seq-cifar100; allowed: a number of tasks that divides "
                                "its 100 classes evenly: 1, 2, 4, 5, 10, 20, 25, 50, 100 (default 10), or dataset.base_classes "
                                "and dataset.increment for tasks of unequal size")


def test_n_tasks_on_data_splits_the_classes(fake_root) -> None:
    dataset = build_dataset({"name": "seq-cifar100", "root": str(fake_root), "n_tasks": 5})
    train = dataset.sources()[0].labels
    assert torch.equal(dataset.task_source(1).labels, train[(train >= 20) & (train < 40)])


def test_num_workers_is_checked() -> None:
    with pytest.raises(DatasetError, match=r"^dataset.num_workers=-1 is not allowed; allowed: an integer >= 0"):
        build_dataset({"name": "seq-digits", "num_workers": -1})
    assert build_dataset({"name": "seq-digits", "num_workers": 2}).describe()["num_workers"] == 2


def test_domain_il_settings_act_on_the_labels_of_every_task(fake_root) -> None:
    values = {"name": "perm-mnist", "root": str(fake_root), "n_tasks": 2}
    plain = build_dataset(values, seed=0)
    dataset = build_dataset({**values, "validation": 0.25, "class_order": "permute"}, seed=0)
    mapping = torch.empty(10, dtype=torch.long)
    mapping[torch.tensor(dataset.describe()["class_order"])] = torch.arange(10)
    for task in range(2):
        whole, train, held_out = plain.task_source(task), dataset.task_source(task), dataset.test_source(task)
        assert len(train) + len(held_out) == len(whole) and len(held_out) > 0
        assert torch.equal(held_out.read(torch.arange(len(held_out)), "cpu"), whole.read(held_out.indices, "cpu"))
        assert torch.equal(held_out.labels, mapping[whole.labels[held_out.indices]])
        assert torch.equal(train.labels, mapping[whole.labels[train.indices]])


def test_tasks_of_a_relabelled_benchmark_share_one_parent() -> None:
    from mammoth.datasets.source import IndexedSource, concat_sources

    dataset = build_dataset({"name": "seq-digits", "class_order": "permute"})
    joined = concat_sources([dataset.task_source(task) for task in range(3)])
    assert isinstance(joined, IndexedSource) and sorted(set(joined.labels.tolist())) == list(range(6))


# ---- tasks of unequal size: dataset.base_classes / dataset.increment ----

def pycil_increments(n_classes: int, init_cls: int, increment: int) -> list[int]:
    """PyCIL's DataManager.__init__ (utils/data_manager.py, LAMDA-CL/PyCIL), verbatim but for its arguments."""
    _increments = [init_cls]
    while sum(_increments) + increment < n_classes:
        _increments.append(increment)
    offset = n_classes - sum(_increments)
    if offset > 0:
        _increments.append(offset)
    return _increments


@pytest.mark.parametrize(("values", "sizes"), [
    ({"base_classes": 50, "increment": 10}, [50, 10, 10, 10, 10, 10]),  # B50 Inc10
    ({"base_classes": 50, "increment": 5}, [50] + [5] * 10),
    ({"base_classes": 50, "increment": 30}, [50, 30, 20]),  # the remainder: a smaller last task, as PyCIL's
    ({"base_classes": 5, "increment": 30}, [5, 30, 30, 30, 5]),
    ({"base_classes": 100, "increment": 10}, [100]),
    ({"increment": 20}, [20] * 5),  # B0 Inc20: base_classes = increment
    ({"increment": 30}, [30, 30, 30, 10]),
    ({"base_classes": 40, "n_tasks": 4}, [40, 20, 20, 20]),  # the rest split evenly
    ({"base_classes": 50, "increment": 10, "n_tasks": 6}, [50, 10, 10, 10, 10, 10]),  # a consistent n_tasks
])
def test_base_classes_and_increment_split_the_classes_as_pycil(values: dict, sizes: list[int]) -> None:
    dataset = build_dataset({"name": "seq-cifar100", **values})
    assert list(dataset.task_sizes) == sizes and (dataset.n_tasks, dataset.n_classes) == (len(sizes), 100)
    if "n_tasks" not in values:
        assert sizes == pycil_increments(100, values.get("base_classes", values["increment"]), values["increment"])
    bounds = [0, *torch.tensor(sizes).cumsum(0).tolist()]
    assert [dataset.task_classes(t) for t in range(len(sizes))] == [range(a, b) for a, b in zip(bounds, bounds[1:])]
    assert dataset.n_classes_per_task == (sizes[0] if len(set(sizes)) == 1 else None)


def test_uneven_tasks_hold_their_classes_examples(fake_root) -> None:
    dataset = build_dataset({"name": "seq-cifar100", "root": str(fake_root), "base_classes": 50, "increment": 30})
    train, test = (source.labels for source in dataset.sources())
    for task, (low, high) in enumerate([(0, 50), (50, 80), (80, 100)]):
        assert torch.equal(dataset.task_source(task).labels, train[(train >= low) & (train < high)])
        assert torch.equal(dataset.test_source(task).labels, test[(test >= low) & (test < high)])
    assert dataset.describe()["classes_per_task"] == [50, 30, 20]
    assert (dataset.describe()["base_classes"], dataset.describe()["increment"]) == (50, 30)


def test_a_class_order_is_split_unevenly(fake_root) -> None:
    dataset = build_dataset({"name": "seq-cifar100", "root": str(fake_root), "base_classes": 60, "increment": 20,
                             "class_order": "permute"}, seed=3)
    order = dataset.describe()["class_order"]
    train = dataset.sources()[0].labels
    first = dataset.task_source(0)
    # task 1 trains the first 60 classes of the order, relabelled 0..59
    assert sorted(set(first.labels.tolist())) == list(range(60))
    assert len(first) == int(sum((train == c).sum() for c in order[:60]))


def test_even_base_classes_and_increment_equal_n_tasks(fake_root) -> None:
    even = build_dataset({"name": "seq-cifar100", "root": str(fake_root), "n_tasks": 5})
    same = build_dataset({"name": "seq-cifar100", "root": str(fake_root), "base_classes": 20, "increment": 20})
    assert same.task_sizes == even.task_sizes and not same.uneven_tasks
    assert all(torch.equal(even.task_source(t).indices, same.task_source(t).indices) for t in range(5))


@pytest.mark.parametrize(("values", "message"), [
    ({"base_classes": 50, "increment": 10, "n_tasks": 5},
     "dataset.n_tasks=5 contradicts dataset.base_classes=50 dataset.increment=10, which split seq-cifar100's 100 "
     "classes into 6 tasks (50, 10, 10, 10, 10, 10); allowed: dataset.n_tasks=6 or null"),
    ({"base_classes": 120, "increment": 10}, "dataset.base_classes=120 is not allowed for seq-cifar100; allowed: 1..100"),
    ({"increment": 101}, "dataset.increment=101 is not allowed for seq-cifar100; allowed: 1..100"),
    ({"increment": 0}, "dataset.increment=0 is not a positive integer; allowed: increment >= 1"),
    ({"base_classes": 0, "increment": 10}, "dataset.base_classes=0 is not allowed; allowed: an integer >= 1, or null with "
     "dataset.increment=K for PyCIL's B0 IncK (a first task of K classes)"),
    ({"base_classes": -5, "increment": 10}, "dataset.base_classes=-5 is not a positive integer"),
    ({"base_classes": 50}, "dataset.base_classes=50 is not allowed alone for seq-cifar100; allowed: with dataset.increment"),
    ({"base_classes": 50, "n_tasks": 4}, "dataset.base_classes=50 dataset.n_tasks=4 is not allowed for seq-cifar100: the "
     "other 50 of its 100 classes do not split evenly into 3 task(s); allowed: dataset.n_tasks=T with T - 1 dividing 50: "
     "2, 3, 6, 11, 26, 51, or dataset.increment"),
    ({"base_classes": 50, "n_tasks": 1}, "the other 50 of its 100 classes do not split evenly into 0 task(s)"),
])
def test_impossible_splits_are_refused_naming_the_numbers(values: dict, message: str) -> None:
    with pytest.raises(DatasetError) as error:
        build_dataset({"name": "seq-cifar100", **values})
    assert len(str(error.value).splitlines()) == 1 and message in str(error.value)


@pytest.mark.parametrize("key", ["base_classes", "increment"])
def test_domain_il_refuses_base_classes_and_increment(key: str) -> None:
    with pytest.raises(DatasetError, match=f"^dataset.{key}=5 is not allowed for rot-mnist: a domain-il benchmark has all "
                                           "its classes in every task; allowed: null"):
        build_dataset({"name": "rot-mnist", key: 5})


def test_uneven_tasks_without_examples_are_refused(fake_root) -> None:
    # fake seq-mnist has examples of every digit: the tasks 0-3, 4-6, 7-9 all have some
    dataset = build_dataset({"name": "seq-mnist", "root": str(fake_root), "base_classes": 4, "increment": 3})
    assert dataset.task_sizes == (4, 3, 3) and len(dataset.task_source(2)) == int((dataset.train_labels() >= 7).sum())
    from mammoth.datasets.source import InMemorySource

    class Sparse(type(dataset)):
        def load_sources(self):
            train, test = super().load_sources()
            keep = train.labels < 7  # the last task's classes have no training examples
            return InMemorySource(train.x[keep], train.labels[keep]), test

    sparse = Sparse({"name": "seq-mnist", "root": str(fake_root), "base_classes": 4, "increment": 3})
    with pytest.raises(DatasetError, match=r"^seq-mnist has no train examples for task 3 of 3: its train data has 7 "
                                           r"class\(es\), and 3 tasks of 4, 3, 3 classes need 10"):
        sparse.task_source(0)
