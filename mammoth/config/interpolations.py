"""What an interpolation in a config depends on, read from the config's raw text (nothing resolved).

``${model.lr}`` depends on the key ``model.lr`` and, through it, on whatever that key's own value
uses; ``${oc.env:SECRET}`` on the resolver ``oc.env`` (the process's environment);
``${hydra:job.num}`` on the resolver ``hydra`` and the key ``hydra.job.num`` (so for the other
resolvers that read a key: ``oc.select``, ``oc.dict.keys``, ``oc.dict.values``). :func:`resolvers_used`
follows the keys a value references, transitively, and answers the resolvers it reaches. The scan
is on the text, so it over-approximates (an escaped ``\\${`` counts too) and never misses a
resolver: every resolver call is written ``${NAME:``. A key or resolver name that is itself made by
an interpolation (``${${name}:x}``, ``${a.${b}}``), or that cannot be read statically, is reported
as :data:`UNKNOWN`.
"""

from __future__ import annotations

import re
from typing import Any, Callable

#: A resolver whose name or key is made at resolution time: what it reads cannot be told.
UNKNOWN = "?"
#: Returned by a lookup for a key that the config does not have.
ABSENT = object()

#: ``${`` then a name: a resolver's (ends with ``:``) or a key (ends with ``}``); any other end
#: (another ``${``, a quote) makes it unknown.
_OPENING = re.compile(r"\$\{\s*([^\s:{}$'\"]*)\s*([:}]?)")
#: The first argument of a resolver that reads a key (``${hydra:KEY}``, ``${oc.select:KEY,default}``)
#: when it is a plain key.
_KEY_ARGUMENT = re.compile(r"\s*([\w.\-\[\]]+)\s*[,}]")
#: Resolvers whose first argument is a key they read: the key's prefix (the ``hydra`` node for
#: ``hydra``), or None for a key of the config itself.
KEY_RESOLVERS = {"hydra": ("hydra",), "oc.select": None, "oc.dict.keys": None, "oc.dict.values": None}


def resolvers_used(value: Any, where: tuple[str, ...], lookup: Callable[[tuple[str, ...]], Any]) -> set[str]:
    """The resolvers ``value`` (the raw value at key ``where``) uses, directly or through the keys
    it references; ``lookup(key)`` gives the raw value at an absolute key (a tuple of parts), or
    :data:`ABSENT`. Includes :data:`UNKNOWN` for what cannot be read statically."""
    found: set[str] = set()
    _collect(value, where, lookup, found, set())
    return found


def _collect(value: Any, where: tuple[str, ...], lookup: Callable[[tuple[str, ...]], Any], found: set[str],
             seen: set[tuple[str, ...]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _collect(item, (*where, str(key)), lookup, found, seen)
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _collect(item, (*where, str(index)), lookup, found, seen)
        return
    if not isinstance(value, str) or "${" not in value:
        return
    for match in _OPENING.finditer(value):
        name, end = match.group(1), match.group(2)
        if end == ":":
            found.add(name)
            if name in KEY_RESOLVERS:
                argument = _KEY_ARGUMENT.match(value, match.end())
                prefix = KEY_RESOLVERS[name]
                if argument is None:
                    found.add(UNKNOWN)
                elif prefix is not None:
                    _follow((*prefix, *_key_parts(argument.group(1))), lookup, found, seen)
                else:
                    _follow(_absolute(argument.group(1), where), lookup, found, seen)
        elif end == "}" and name:
            _follow(_absolute(name, where), lookup, found, seen)
        else:
            found.add(UNKNOWN)


def _follow(key: tuple[str, ...], lookup: Callable[[tuple[str, ...]], Any], found: set[str],
            seen: set[tuple[str, ...]]) -> None:
    """Collect what the value at ``key`` uses (each key once)."""
    if key in seen:
        return
    seen.add(key)
    raw = lookup(key)
    if raw is not ABSENT:
        _collect(raw, key, lookup, found, seen)


def _key_parts(text: str) -> tuple[str, ...]:
    """``a.b[0]`` -> ``('a', 'b', '0')``."""
    return tuple(part for part in re.split(r"[.\[\]]+", text) if part)


def _absolute(name: str, where: tuple[str, ...]) -> tuple[str, ...]:
    """The key ``name`` references from the value at ``where``: absolute, or relative with leading
    dots (``.x`` is a sibling, each further dot one level up), as OmegaConf reads it."""
    dots = len(name) - len(name.lstrip("."))
    if dots == 0:
        return _key_parts(name)
    parent = where[:-1]
    base = parent[:len(parent) - (dots - 1)] if dots - 1 <= len(parent) else ()
    return (*base, *_key_parts(name[dots:]))


def raw_lookup(tree: Any) -> Callable[[tuple[str, ...]], Any]:
    """A lookup over a plain (unresolved) container tree."""
    def lookup(key: tuple[str, ...]) -> Any:
        node = tree
        for part in key:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return ABSENT
        return node

    return lookup
