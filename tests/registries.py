"""Registering for one test: :func:`restored` gives registries back the entries they had
before the block, so what a test registers is forgotten when it ends (mammoth's registries
have no way to remove an entry: a name, once registered, stays for the process)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from mammoth.config.registry import Registry


@contextlib.contextmanager
def restored(*registries: Registry) -> Iterator[None]:
    """Run the block, then give each of ``registries`` back the entries it had before it began
    (the installed plugins' loaded first, so that a lookup inside the block does not add them)."""
    saved = []
    for registry in registries:
        registry.names()  # loads the plugins once, so they are part of what is restored
        saved.append((registry, dict(registry._entries)))
    try:
        yield
    finally:
        for registry, entries in saved:
            registry._entries.clear()
            registry._entries.update(entries)
