"""Count how often ``python -m mammoth`` composes, builds config repositories, resolves and checks its config.

Runs ``python -m mammoth`` in this process (``mammoth.__main__.main``: the pre-flight, then
Hydra's own composition and :func:`mammoth.run`) on seq-digits, CPU, one epoch, with counters
wrapped around Hydra's and mammoth's functions, and prints one table::

    python scripts/count_resolution.py            # a single run in a temporary directory
    python scripts/count_resolution.py -m         # a 12-job sweep: model=er,der dataset.n_epochs=1,2 seed=0,1,2

The sweep stops each job after its first task (``stop_after_task=1``): what is counted happens
before training. Counted: compositions (``ConfigLoaderImpl.load_configuration``, what
``Hydra.compose_config`` and ``hydra.compose`` call; ``load_sweep_config`` of a sweep's job, which
calls it once more), config repositories built (``ConfigRepository.__init__``, and the
``CachingConfigRepository`` around one), ``Registry.resolve``, the unknown-key check
(``Registry.check_known_arguments``), the required check (``Registry.check_required``),
resolutions of the whole config (:func:`mammoth.app.run_spec.resolve_run`) and walks of the
safety gate (:func:`mammoth.app.safety.check_config_safety`). A function that does not exist in
the checked-out tree is counted as ``-``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

#: (row label, module, attribute path) of every counted function.
COUNTED = (
    ("compositions (load_configuration)", "hydra._internal.config_loader_impl", "ConfigLoaderImpl.load_configuration"),
    ("sweep job compositions (load_sweep_config)", "hydra._internal.config_loader_impl", "ConfigLoaderImpl.load_sweep_config"),
    ("config repositories built", "hydra._internal.config_repository", "ConfigRepository.__init__"),
    ("caching repositories built", "hydra._internal.config_repository", "CachingConfigRepository.__init__"),
    ("Registry.resolve", "mammoth.config.registry", "Registry.resolve"),
    ("unknown-key checks (check_known_arguments)", "mammoth.config.registry", "Registry.check_known_arguments"),
    ("required checks (check_required)", "mammoth.config.registry", "Registry.check_required"),
    ("resolutions (resolve_run)", "mammoth.app.run_spec", "resolve_run"),
    ("gate walks (check_config_safety)", "mammoth.app.safety", "check_config_safety"),
)

#: The arguments of each mode (the run or sweep directory is added).
SINGLE_RUN = ["device=cpu", "dataset.n_epochs=1"]
SWEEP = ["-m", "model=er,der", "model.buffer_size=50", "dataset.n_epochs=1,2", "seed=0,1,2", "device=cpu",
         "stop_after_task=1"]


def wrap(counts: Counter, label: str, module_name: str, path: str) -> bool:
    """Replace ``module.path`` (and every loaded mammoth module's name bound to it) by a function
    that counts its calls under ``label``; False when absent."""
    try:
        owner: Any = importlib.import_module(module_name)
    except ImportError:
        return False
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent, None)
    original = getattr(owner, name, None) if owner is not None else None
    if original is None:
        return False

    def counted(*args: Any, **kwargs: Any) -> Any:
        counts[label] += 1
        return original(*args, **kwargs)

    setattr(owner, name, counted)
    if not parents:  # a module-level function: also the names other modules imported it under
        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith("mammoth") and getattr(module, name, None) is original:
                setattr(module, name, counted)
    return True


def run_mammoth(arguments: list[str]) -> int:
    """``python -m mammoth ARGUMENTS`` in this process; its exit status."""
    import mammoth.__main__ as entry

    sys.argv = ["mammoth", *arguments]
    try:
        entry.main()
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def main(argv: list[str] | None = None) -> None:
    """Run one small run (or sweep) with the counters in place and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--multirun", action="store_true", help="a 12-job sweep instead of a single run")
    options = parser.parse_args(argv)
    import mammoth.__main__  # noqa: F401  what it imports is loaded before the counters go in

    counts: Counter = Counter()
    present = {label: wrap(counts, label, module, path) for label, module, path in COUNTED}
    directory = Path(tempfile.mkdtemp(prefix="count-resolution-"))
    if options.multirun:
        arguments = [*SWEEP, f"hydra.sweep.dir={directory}"]
    else:
        arguments = [*SINGLE_RUN, f"hydra.run.dir={directory}"]
    status = run_mammoth(arguments)
    import mammoth

    print(f"mammoth from {Path(mammoth.__file__).parent}")
    print(f"python -m mammoth {' '.join(arguments)}  (exit status {status})")
    width = max(len(label) for label, _, _ in COUNTED)
    for label, _, _ in COUNTED:
        print(f"{label:<{width}}  {counts[label] if present[label] else '-':>3}")


if __name__ == "__main__":
    main()
