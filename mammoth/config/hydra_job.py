"""The one module that reads Hydra's job facts (``HydraConfig``, the singleton Hydra fills while a
job runs): :func:`read_job_facts` returns them as a :class:`JobFacts`, which ``mammoth.run``
reads once at its entry and hands down (its run directory, title, resume command, safety walk and
recorded config take them from there); a dataset's ``root`` and a backbone's ``weights`` built on
their own read the launch directory through it (:mod:`mammoth.config.user_paths`). Outside a
Hydra job every fact is empty. It sits in the configuration core because user_paths needs it.

The safety gate's walk also needs Hydra's ``${hydra:...}`` resolver to read a given config
(:func:`hydra_resolver_reads`): the only write to the singleton, undone after.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional


@dataclass(frozen=True)
class JobFacts:
    """What the Hydra job a run runs in says of it: its ``hydra`` node (None outside a Hydra job,
    where every fact below is empty)."""

    hydra: Any = None

    @property
    def multirun(self) -> bool:
        """Whether the job is part of a Hydra multirun (a sweep)."""
        from hydra.types import RunMode  # lazy: Hydra, not imported by the Python API (datasets resolve user paths through here)

        return self.hydra is not None and self.hydra.get("mode") == RunMode.MULTIRUN

    @property
    def overrides(self) -> list[str]:
        """The job's command-line overrides (``hydra.overrides.task``; empty outside a job)."""
        return [] if self.hydra is None else [str(text) for text in self.hydra.overrides.task]

    @property
    def output_dir(self) -> Optional[Path]:
        """Hydra's run directory of the job (``hydra.runtime.output_dir``; None outside a job)."""
        return None if self.hydra is None else Path(str(self.hydra.runtime.output_dir))

    def launch_directory(self) -> Optional[str]:
        """The directory the command was launched in, when the job moved away from it
        (``hydra.job.chdir=true``: the working directory is the job's run directory); else None."""
        if self.hydra is None:
            return None
        launched, run_dir = self.hydra.runtime.get("cwd"), self.hydra.runtime.get("output_dir")
        if not self.hydra.job.get("chdir") or not launched or not run_dir:
            return None
        here = os.path.realpath(os.getcwd())
        if here != os.path.realpath(str(run_dir)) or here == os.path.realpath(str(launched)):
            return None
        return str(launched)


def read_job_facts() -> JobFacts:
    """The running Hydra job's facts (empty outside a Hydra job)."""
    from hydra.core.hydra_config import HydraConfig  # lazy: Hydra, not imported by the Python API (datasets resolve user paths through here)

    return JobFacts(HydraConfig.get() if HydraConfig.initialized() else None)


@contextmanager
def hydra_resolver_reads(view: Any) -> Iterator[None]:
    """Hydra's ``${hydra:...}`` resolver reads ``view``'s ``hydra`` node while the block runs, as it
    reads the job's config while Hydra's ``run_job`` resolves the job's paths; restored after."""
    from hydra.core.hydra_config import HydraConfig  # lazy: Hydra, not imported by the Python API (datasets resolve user paths through here)

    instance = HydraConfig.instance()
    previous = instance.cfg
    instance.cfg = view
    try:
        yield
    finally:
        instance.cfg = previous
