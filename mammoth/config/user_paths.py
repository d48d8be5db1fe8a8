"""Paths a user gives (``dataset.root``, ``backbone.weights``) keep the meaning they have where the
command was launched, also in a Hydra job that changed its working directory to the run directory
(``hydra.job.chdir=true``): there a relative one is taken from Hydra's launch directory
(``hydra.runtime.cwd``). Output paths are another matter: they are relative to the run directory."""

from __future__ import annotations

import os


def launch_directory() -> str | None:
    """The directory the command was launched in, when the running Hydra job moved away from it
    (``hydra.job.chdir=true``: the working directory is the job's run directory); else None."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    node = HydraConfig.get()
    launched, run_dir = node.runtime.get("cwd"), node.runtime.get("output_dir")
    if not node.job.get("chdir") or not launched or not run_dir:
        return None
    here = os.path.realpath(os.getcwd())
    if here != os.path.realpath(str(run_dir)) or here == os.path.realpath(str(launched)):
        return None
    return str(launched)


def launch_path(path: str) -> str:
    """``path`` as meant where the command was launched: a relative path joined to the launch
    directory inside a job that changed its working directory (:func:`launch_directory`);
    otherwise, and for an absolute or ``~`` path, ``path`` unchanged."""
    text = str(path)
    if os.path.isabs(os.path.expanduser(text)):
        return text
    launched = launch_directory()
    return text if launched is None else os.path.join(launched, text)
