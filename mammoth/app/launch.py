"""Joining the ranks of a multi-process launch (``torchrun``) on the command line: every rank
runs in rank 0's run directory."""

from __future__ import annotations

from dataclasses import replace

from mammoth.app.preflight import CommandLine, quote_override_value
from mammoth.engine import distributed
from mammoth.errors import ConfigError


def join_command_line(command_line: CommandLine) -> CommandLine:
    """Under a multi-process launch, start the process group and put every rank in rank 0's run
    directory (the pre-flight's ``command_line.directory``: Hydra's time-stamped directory may
    differ between ranks). Rank 0 keeps its command line (it locks the directory and writes
    ``.hydra/``); the others get rank 0's directory pinned by ``hydra.run.dir`` and
    ``hydra.output_subdir=null``, and no directory to lock. One process: ``command_line``
    unchanged. A multirun is refused in one line."""
    launch = distributed.detect_launch()
    if launch is None:
        return command_line
    if command_line.multirun:
        raise ConfigError(
            f"--multirun on {launch.world_size} processes started by {launch.launcher}; allowed: one run per "
            "torchrun (a sweep of distributed runs: hydra/launcher=submitit_slurm with tasks_per_node)"
        )
    distributed.start_process_group(launch)
    main = distributed.is_main_process()
    chosen = distributed.broadcast_text(str(command_line.directory or "") if main else None)
    if main or not chosen:  # no directory yet (a help screen, --cfg): the run agrees on one itself
        return command_line
    follower = [f"hydra.run.dir={quote_override_value(chosen)}", "hydra.output_subdir=null"]
    args, at = list(command_line.args), command_line.pin_at
    return replace(command_line, args=[*args[:at], *follower, *args[at:]], pin_at=at + len(follower), directory=None,
                   checked=command_line.checked.pinned({"run.dir": chosen, "output_subdir": None}))
