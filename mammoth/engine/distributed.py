"""One run on several processes, on torch.distributed: where the processes come from (torchrun,
or a job of Hydra's submitit launcher with several tasks), how the process group starts (``gloo``
on CPU, ``nccl`` on CUDA, one device per local rank), and the collectives the harness needs.

Nothing here pickles: strings travel as bytes in tensors, so what a rank receives cannot run code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor

from mammoth.errors import ConfigError

#: The variables torchrun sets for each process (``env://`` initialisation reads them).
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: How long a collective waits for the other ranks before it fails (a rank that died stops the others).
DEFAULT_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class Launch:
    """This process's place in a multi-process run: its ``rank`` of ``world_size``, its
    ``local_rank`` on its machine, and what started it (``torchrun`` or ``submitit``)."""

    rank: int
    world_size: int
    local_rank: int
    launcher: str

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the only one that writes results, checkpoints and summaries."""
        return self.rank == 0


def _integer(environ: Mapping[str, str], name: str) -> int:
    text = environ.get(name, "")
    if not text.strip().isdigit():
        raise ConfigError(f"environment variable {name}={text!r} is not a non-negative integer; torchrun sets it")
    return int(text)


def detect_launch(environ: Optional[Mapping[str, str]] = None) -> Optional[Launch]:
    """The launch of this process: torchrun's variables (:data:`TORCHRUN_VARIABLES`), else a
    submitit job of several tasks (its ``SUBMITIT_*``/SLURM environment, read by submitit's
    ``TorchDistributedEnvironment``, which exports the same variables); None for one process."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" in environ and "RANK" in environ:
        missing = [name for name in TORCHRUN_VARIABLES if name not in environ]
        if missing:
            raise ConfigError(
                f"RANK and WORLD_SIZE are set but {', '.join(missing)} not; allowed: start every process with torchrun"
            )
        launch = Launch(_integer(environ, "RANK"), _integer(environ, "WORLD_SIZE"), _integer(environ, "LOCAL_RANK"),
                        "torchrun")
    elif environ.get("SUBMITIT_EXECUTOR") and int(environ.get("SLURM_NTASKS", "1") or 1) > 1:
        launch = _submitit_launch()
    else:
        return None
    if not 0 <= launch.rank < launch.world_size:
        raise ConfigError(f"rank {launch.rank} of world size {launch.world_size}; allowed: 0..{launch.world_size - 1}")
    return None if launch.world_size == 1 else launch


def _submitit_launch() -> Launch:
    """A submitit task's launch; ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``... exported for ``env://``."""
    from submitit.helpers import TorchDistributedEnvironment

    environment = TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return Launch(environment.rank, environment.world_size, environment.local_rank, "submitit")


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise (CPU)."""
    return "nccl" if device.type == "cuda" else "gloo"


def process_device(launch: Launch, requested: torch.device) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` when CUDA is requested (one device per local
    rank; a rank without a device of its own is a one-line error), else the CPU."""
    if requested.type != "cuda":
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if launch.local_rank >= count:
        raise ConfigError(
            f"local rank {launch.local_rank} has no CUDA device of its own ({count} here); allowed: at most {count} "
            "processes per machine (torchrun --nproc_per_node)"
        )
    return torch.device("cuda", launch.local_rank)


def start_process_group(launch: Launch, device: torch.device, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
    """Join the run's process group (``env://``) with the backend of ``device``; a collective that
    waits longer than ``timeout_seconds`` for another rank fails instead of hanging."""
    if dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), rank=launch.rank, world_size=launch.world_size,
                            timeout=timedelta(seconds=timeout_seconds))


def stop_process_group() -> None:
    """Leave the process group (nothing when none was started)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_text(text: Optional[str], source: int = 0) -> str:
    """``text`` of rank ``source``, on every rank (as UTF-8 bytes in a tensor: nothing unpickled)."""
    device = _collective_device()
    payload = torch.frombuffer(bytearray((text or "").encode("utf-8")), dtype=torch.uint8) if dist.get_rank() == source else None
    length = torch.tensor([0 if payload is None else len(payload)], dtype=torch.int64, device=device)
    dist.broadcast(length, source)
    buffer = torch.empty(int(length), dtype=torch.uint8, device=device) if payload is None else payload.to(device)
    if int(length):
        dist.broadcast(buffer, source)
    return buffer.cpu().numpy().tobytes().decode("utf-8")


def gather_rows(tensor: Tensor) -> Tensor:
    """The rows of ``tensor`` from every rank, concatenated in rank order, on every rank (ranks may
    hold different numbers of rows; the other dimensions and the dtype must agree)."""
    device = tensor.device
    count = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    sizes = [int(value) for value in counts]
    longest = max(sizes)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return torch.cat([part[:size] for part, size in zip(gathered, sizes)])


def sum_over_ranks(tensor: Tensor) -> Tensor:
    """The element-wise sum of ``tensor`` over every rank (a new tensor; ``tensor`` is kept)."""
    total = tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def _collective_device() -> torch.device:
    """Where this rank's collectives run: its CUDA device under nccl, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
