"""Run one function in several threads at once, for tests of writers that must not collide."""

from __future__ import annotations

import threading
from typing import Callable


def run_concurrently(function: Callable[[], object], count: int = 2, timeout: float = 60) -> list[BaseException]:
    """Call ``function`` in ``count`` threads started together; return what they raised."""
    errors: list[BaseException] = []

    def call() -> None:
        try:
            function()
        except BaseException as error:  # noqa: BLE001 - returned to the test, which asserts on it
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return errors
