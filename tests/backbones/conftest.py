"""Backbone tests run torch on one thread: on a small shared CPU, OpenMP threads that wait
on each other make a forward pass many times slower than a single thread does."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
