"""Whether the import name ``mammoth`` is mammoth-cl's package.

The PyPI distribution ``mammoth`` (a .docx converter) installs the same import name and a
``mammoth`` console script. Installed into one environment with mammoth-cl, the one installed last
writes its ``mammoth/__init__.py`` over the other's; uninstalling it then removes that file, which
leaves mammoth-cl's modules a namespace package without ``__init__.py`` (``pip list`` still shows
mammoth-cl). ``python -m mammoth`` checks at start-up and says, in one line, which distribution owns
the name and what to do, instead of failing later with an AttributeError.
"""

from __future__ import annotations

import base64
import hashlib
import sys
from importlib.metadata import distributions
from pathlib import Path

import mammoth

#: The distribution whose package this is; its ``mammoth/__init__.py`` sets ``__distribution__`` to it.
DISTRIBUTION = "mammoth-cl"

def import_name_problem() -> str | None:
    """One line saying why the imported ``mammoth`` is not mammoth-cl's package (another
    distribution's ``__init__.py``, or none: a namespace package) and what to do; None when it is."""
    package = sys.modules.get("mammoth", mammoth)
    if getattr(package, "__distribution__", None) == DISTRIBUTION:
        return None
    init = getattr(package, "__file__", None)
    if init is None:
        where = ", ".join(str(path) for path in getattr(package, "__path__", [])) or "?"
        return (f"the import name 'mammoth' ({where}) has no __init__.py: uninstalling another distribution that installs "
                f"'mammoth' (such as the PyPI package 'mammoth', a .docx converter) removed {DISTRIBUTION}'s; allowed: "
                f"pip install --force-reinstall {DISTRIBUTION}, and that other distribution in an environment of its own")
    owners = owning_distributions(Path(init))
    name, owner = (owners[0][0], f"the distribution '{owners[0][0]}' {owners[0][1]}") if owners else ("it", "another distribution")
    return (f"the import name 'mammoth' ({init}) is {owner}'s, not {DISTRIBUTION}'s: installing both into one environment "
            f"wrote its mammoth/__init__.py over {DISTRIBUTION}'s (the PyPI package 'mammoth' is a .docx converter); "
            f"allowed: pip uninstall {name}, then pip install --force-reinstall {DISTRIBUTION}, or the two in separate environments")


def owning_distributions(init: Path) -> list[tuple[str, str]]:
    """(name, version) of the installed distributions other than mammoth-cl whose RECORD lists
    ``init`` as ``mammoth/__init__.py``; the one whose recorded hash matches the file first."""
    target = init.resolve()
    digest = base64.urlsafe_b64encode(hashlib.sha256(target.read_bytes()).digest()).rstrip(b"=").decode()
    found: list[tuple[bool, str, str]] = []
    for distribution in distributions():
        name = distribution.metadata["Name"] or ""
        if name.lower() == DISTRIBUTION:
            continue
        for file in distribution.files or ():
            if file.parts == ("mammoth", "__init__.py") and Path(distribution.locate_file(file)).resolve() == target:
                matches = file.hash is not None and file.hash.mode == "sha256" and file.hash.value == digest
                found.append((not matches, name, distribution.version))
    return [(name, version) for _, name, version in sorted(found)]
