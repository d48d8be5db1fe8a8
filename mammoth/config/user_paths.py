"""Paths a user gives (``dataset.root``, ``backbone.weights``) keep the meaning they have where the
command was launched, also in a Hydra job that changed its working directory to the run directory
(``hydra.job.chdir=true``): there a relative one is taken from Hydra's launch directory
(``hydra.runtime.cwd``). Output paths are another matter: they are relative to the run directory."""

from __future__ import annotations

import os

from mammoth.config.hydra_job import read_job_facts


def launch_directory() -> str | None:
    """The directory the command was launched in, when the running Hydra job moved away from it
    (``hydra.job.chdir=true``: the working directory is the job's run directory); else None
    (:meth:`~mammoth.config.hydra_job.JobFacts.launch_directory`)."""
    return read_job_facts().launch_directory()


def launch_path(path: str) -> str:
    """``path`` as meant where the command was launched: a relative path joined to the launch
    directory inside a job that changed its working directory (:func:`launch_directory`);
    otherwise, and for an absolute or ``~`` path, ``path`` unchanged."""
    text = str(path)
    if os.path.isabs(os.path.expanduser(text)):
        return text
    launched = launch_directory()
    return text if launched is None else os.path.join(launched, text)
