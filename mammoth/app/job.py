"""What a run knows of the Hydra job it runs in: its config, whether it is a sweep's job, its
overrides, its run directory and its title."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig


def hydra_node() -> Any:
    """The running job's Hydra config (None outside a Hydra job)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def is_multirun(config: DictConfig | None = None) -> bool:
    """Whether the job is part of a Hydra multirun (a sweep): from ``config``'s ``hydra`` node (what
    Hydra's callbacks get), else from the running job's (False outside a Hydra job)."""
    from hydra.types import RunMode

    node = config.hydra if config is not None else hydra_node()
    return node is not None and node.get("mode") == RunMode.MULTIRUN


def job_overrides() -> list[str]:
    """The command-line overrides of this job, without ``resume`` and ``stop_after_task`` (empty outside Hydra)."""
    from mammoth.config.run_settings import override_key

    node = hydra_node()
    if node is None:
        return []
    return [text for text in node.overrides.task if override_key(text) not in ("resume", "stop_after_task")]


def output_directory(output_dir: str | None) -> Path:
    """``output_dir`` if set (a relative one inside Hydra's run directory), else Hydra's run
    directory, else the working directory; created if needed. One that is a file or cannot be
    written raises a one-line ConfigError naming it."""
    from mammoth.files import path_inside, prepare_directory

    node = hydra_node()
    hydra_directory = Path(node.runtime.output_dir) if node is not None else None
    if output_dir:
        if hydra_directory is not None and not Path(output_dir).is_absolute():
            return prepare_directory(path_inside(hydra_directory, output_dir, "output_dir"), "output_dir")
        return prepare_directory(Path(output_dir), "output_dir")
    if hydra_directory is not None:
        return prepare_directory(hydra_directory, "hydra.run.dir")
    return prepare_directory(Path.cwd(), "the working directory")


def run_title(dataset: str, model: str, backbone: str) -> str:
    """``seq-digits · er · mnistmlp``; a sweep's job adds its overrides, so jobs are told apart."""
    title = f"{dataset} · {model} · {backbone}"
    overrides = job_overrides() if is_multirun() else []
    return f"{title} [{' '.join(overrides)}]" if overrides else title
