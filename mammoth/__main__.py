"""``python -m mammoth``: Hydra wiring only; the work is in :func:`mammoth.run`."""

from __future__ import annotations

import gc
import sys

import hydra
from omegaconf import DictConfig

import mammoth
from mammoth.cli import exit_with, normalise_overrides
from mammoth.errors import MammothError
from mammoth.plugins import load_plugins


@hydra.main(config_path="pkg://mammoth.conf", config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    """Run one experiment from the composed config; returns the final Class-IL average."""
    try:
        return mammoth.run(cfg)
    except MammothError as error:
        exit_with(error, status=1)


def main() -> None:
    """Entry point: check the command-line overrides, then hand over to Hydra."""
    try:
        load_plugins()
        is_override = [not arg.startswith("-") and "=" in arg for arg in sys.argv[1:]]
        normalised = iter(normalise_overrides([arg for arg, o in zip(sys.argv[1:], is_override) if o]))
        sys.argv[1:] = [next(normalised) if o else arg for arg, o in zip(sys.argv[1:], is_override)]
    except MammothError as error:
        exit_with(error)
    hydra_main()
    # Everything left is torch's and Hydra's modules: exclude them from the collection at exit,
    # which otherwise walks every object once more (about a second).
    gc.freeze()


if __name__ == "__main__":
    main()
