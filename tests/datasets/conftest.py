"""Shared fixtures: one directory of fake benchmark files (real formats), written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

import fake_datasets


@pytest.fixture(scope="session")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with fake MNIST, FashionMNIST, CIFAR-10, CIFAR-100 and Tiny ImageNet files."""
    root = tmp_path_factory.mktemp("fake_data")
    fake_datasets.write_mnist(root, "MNIST", n_train=40, n_test=20)
    fake_datasets.write_mnist(root, "FashionMNIST", n_train=30, n_test=10)
    fake_datasets.write_cifar10(root, n_per_batch=10, n_test=20)
    fake_datasets.write_cifar100(root, n_train=200, n_test=100)
    fake_datasets.write_tinyimagenet(root, n_train_per_class=2, n_val_per_class=1)
    return root

