"""One run on several processes, on torch.distributed: where the processes come from (torchrun,
or a job of Hydra's submitit launcher with several tasks), how the process group starts (``gloo``
on CPU, ``nccl`` on CUDA, one device per local rank), and what keeps the ranks one experiment.

The ranks run the same program on the same data in the same order (every random draw comes
from generators seeded alike), so everything they hold is identical; only the work of each
training batch is split. :func:`observe_on_shard` gives each rank an equal, contiguous shard of
the batch when the batch and the step's replay minibatch divide by the number of processes (any
other step runs whole on every rank) and says which in ``TrainingContext.shard`` (a replay
minibatch is drawn whole and split the same way, :meth:`ReplayModel.replay_batch`); torch's
``DistributedDataParallel`` reducer, kept by the engine on the run's context
(:class:`GradientReducer`, never in the model), averages the gradients of a split step's backward
passes (``TrainingContext.backward``); the average of equal shards is one process's gradient. The
examples a method stores in ``observe`` are gathered from every rank
(``TrainingContext.gather_shards``) before the reservoir sees them; BatchNorm layers normalise a
split step with the whole batch's statistics (:func:`synchronised_batchnorm`); evaluation is
sharded and its correct counts summed.
Rank 0 alone writes files.

Nothing here pickles: strings travel as bytes in tensors, so what a rank receives cannot run code.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor

from mammoth.errors import ConfigError, TrainingError
from mammoth.files import open_nofollow

#: The variables torchrun sets for each process (``env://`` initialisation reads them).
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: How long joining the process group, and then each collective, waits for the other ranks before
#: it fails (a rank that died, or was never started, stops the others); ``MAMMOTH_DIST_TIMEOUT`` sets it.
DEFAULT_TIMEOUT_SECONDS = 300
TIMEOUT_VARIABLE = "MAMMOTH_DIST_TIMEOUT"
#: After this many seconds (or half the timeout, when shorter) still joining, a rank says on stderr
#: what it waits for; a group that forms sooner prints nothing.
WAITING_NOTICE_SECONDS = 5.0


@dataclass(frozen=True)
class Launch:
    """This process's place in a multi-process run: its ``rank`` of ``world_size``, its
    ``local_rank`` on its machine, and what started it (``torchrun`` or ``submitit``)."""

    rank: int
    world_size: int
    local_rank: int
    launcher: str


def _integer(environ: Mapping[str, str], name: str, setter: str = "torchrun") -> int:
    text = environ.get(name, "")
    if not text.strip().isdigit():
        raise ConfigError(f"environment variable {name}={text!r} is not a non-negative integer; {setter} sets it")
    return int(text)


def _launcher(environ: Mapping[str, str]) -> Optional[str]:
    """What started this process as one of several, by its environment: ``torchrun`` (RANK and
    WORLD_SIZE set), ``submitit`` (a submitit job of several tasks), else None."""
    if "WORLD_SIZE" in environ and "RANK" in environ:
        return "torchrun"
    if environ.get("SUBMITIT_EXECUTOR") and int(environ.get("SLURM_NTASKS") or environ.get("SUBMITIT_LOCAL_NTASKS") or 1) > 1:
        return "submitit"
    return None


def launch_rank(environ: Optional[Mapping[str, str]] = None) -> int:
    """The rank this process's launcher gave it, read from the environment as :func:`detect_launch`
    reads it but without starting anything: torchrun's ``RANK``; in a submitit job of several
    tasks, the task's global rank (``SLURM_PROCID``, or ``SUBMITIT_LOCAL_GLOBALID`` on submitit's
    local executor: what submitit's ``JobEnvironment`` reads); 0 for one process."""
    environ = os.environ if environ is None else environ
    launcher = _launcher(environ)
    if launcher == "torchrun":
        return _integer(environ, "RANK")
    if launcher == "submitit":
        name = "SLURM_PROCID" if environ.get("SUBMITIT_EXECUTOR") == "slurm" else "SUBMITIT_LOCAL_GLOBALID"
        return _integer(environ, name, "submitit")
    return 0


def detect_launch(environ: Optional[Mapping[str, str]] = None) -> Optional[Launch]:
    """The launch of this process: torchrun's variables (:data:`TORCHRUN_VARIABLES`), else a
    submitit job of several tasks (its ``SUBMITIT_*``/SLURM environment, read by submitit's
    ``TorchDistributedEnvironment``, which exports the same variables); None for one process."""
    environ = os.environ if environ is None else environ
    launcher = _launcher(environ)
    if launcher == "torchrun":
        missing = [name for name in TORCHRUN_VARIABLES if name not in environ]
        if missing:
            raise ConfigError(
                f"RANK and WORLD_SIZE are set but {', '.join(missing)} not; allowed: start every process with torchrun"
            )
        launch = Launch(_integer(environ, "RANK"), _integer(environ, "WORLD_SIZE"), _integer(environ, "LOCAL_RANK"),
                        "torchrun")
    elif launcher == "submitit":
        launch = _submitit_launch()
    else:
        return None
    if not 0 <= launch.rank < launch.world_size:
        raise ConfigError(f"rank {launch.rank} of world size {launch.world_size}; allowed: 0..{launch.world_size - 1}")
    return None if launch.world_size == 1 else launch


def _submitit_launch() -> Launch:
    """A submitit task's launch; ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``... exported for ``env://``."""
    from submitit.helpers import TorchDistributedEnvironment  # optional: submitit (a submitit job of several tasks)

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


def process_group_timeout(environ: Optional[Mapping[str, str]] = None) -> float:
    """The seconds a rank waits for the others (:data:`TIMEOUT_VARIABLE` when set, else
    :data:`DEFAULT_TIMEOUT_SECONDS`); a value that is not a finite number > 0 is a one-line error."""
    environ = os.environ if environ is None else environ
    text = environ.get(TIMEOUT_VARIABLE)
    if text is None:
        return float(DEFAULT_TIMEOUT_SECONDS)
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ConfigError(f"environment variable {TIMEOUT_VARIABLE}={text!r} is not a number of seconds > 0; "
                          f"allowed: a timeout such as 60 (default {DEFAULT_TIMEOUT_SECONDS})")
    return seconds


def rendezvous_address(environ: Optional[Mapping[str, str]] = None) -> str:
    """``MASTER_ADDR:MASTER_PORT`` as set (where rank 0 gathers the ranks; ``?`` for one not set)."""
    environ = os.environ if environ is None else environ
    return f"{environ.get('MASTER_ADDR', '?')}:{environ.get('MASTER_PORT', '?')}"


def waiting_line(launch: Launch, address: str, timeout_seconds: float) -> str:
    """What a rank that has not joined its process group yet says on stderr."""
    return (f"rank {launch.rank} of {launch.world_size} waiting for the other ranks at {address} "
            f"(MASTER_ADDR:MASTER_PORT; timeout {timeout_seconds:g} s, {TIMEOUT_VARIABLE} sets it)")


def join_failure(launch: Launch, address: str, timeout_seconds: float, error: Exception) -> ConfigError:
    """The one-line error of a rank that could not join its process group: the ranks that did not
    come within the timeout, or torch's first line for another failure (a port in use, a bad address)."""
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if isinstance(error, getattr(dist, "DistError", ())) and "timed out" in reason.lower():
        what = f"the other ranks did not join at {address} within {timeout_seconds:g} s ({reason})"
    else:
        what = f"cannot join the process group at {address}: {reason}"
    return ConfigError(
        f"rank {launch.rank} of {launch.world_size}: {what}; allowed: start all {launch.world_size} processes with the "
        f"same MASTER_ADDR and MASTER_PORT (torchrun --nproc_per_node={launch.world_size} -m mammoth ...), or one "
        "process without RANK and WORLD_SIZE"
    )


def start_process_group(launch: Launch, device: Optional[torch.device] = None,
                        timeout_seconds: Optional[float] = None) -> None:
    """Join the run's process group (``env://``) with the backend of ``device`` (None, before the
    config is read: ``gloo`` for CPU tensors plus ``nccl`` for CUDA ones where CUDA is present); a
    collective that waits longer than ``timeout_seconds`` (None: :func:`process_group_timeout`) for
    another rank fails instead of hanging. A rank still waiting for the others after
    :data:`WAITING_NOTICE_SECONDS` says so on stderr (:func:`waiting_line`); one that cannot join
    within the timeout raises a one-line ConfigError (:func:`join_failure`)."""
    if dist.is_initialized():
        return
    timeout_seconds = process_group_timeout() if timeout_seconds is None else timeout_seconds
    if device is None:
        cuda = torch.cuda.is_available() and dist.is_nccl_available() and launch.local_rank < torch.cuda.device_count()
        backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
        if cuda:
            torch.cuda.set_device(launch.local_rank)
    else:
        backend = backend_for(device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
    address = rendezvous_address()
    notice = threading.Timer(min(WAITING_NOTICE_SECONDS, timeout_seconds / 2), _say,
                             args=(waiting_line(launch, address, timeout_seconds),))
    notice.daemon = True
    notice.start()
    try:
        dist.init_process_group(backend, rank=launch.rank, world_size=launch.world_size,
                                timeout=timedelta(seconds=timeout_seconds))
    except (RuntimeError, ValueError) as error:  # torch's DistError is a RuntimeError; a bad MASTER_PORT a ValueError
        raise join_failure(launch, address, timeout_seconds, error) from None
    finally:
        notice.cancel()


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def stop_process_group(synchronise: bool = True) -> None:
    """Leave the process group (nothing when none was started); with ``synchronise``, once every
    rank has come here (a rank that left first could reset a connection another still reads)."""
    if dist.is_initialized():
        if synchronise:
            dist.barrier()
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


def gather_texts(text: str) -> list[str]:
    """Every rank's ``text``, in rank order, on every rank (UTF-8 bytes in a tensor: nothing unpickled)."""
    payload = torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8) if text else torch.empty(0, dtype=torch.uint8)
    device = _collective_device()
    count = torch.tensor([payload.numel()], dtype=torch.int64, device=device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    sizes = [int(value) for value in counts]
    padded = torch.zeros(max(max(sizes), 1), dtype=torch.uint8, device=device)  # gloo refuses empty tensors
    padded[: payload.numel()] = payload.to(device)
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return [part[:size].cpu().numpy().tobytes().decode("utf-8") for part, size in zip(gathered, sizes)]


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
    """Where this rank's collectives run: its CUDA device under nccl alone, else the CPU (gloo)."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")



# ---- this process's place (torch's process group is the state; one process without one) ----


def rank() -> int:
    """This process's rank: in the run's process group while one runs; before it starts and after
    it ends (Hydra's job callbacks), the rank its launcher gave it (:func:`launch_rank`); 0 for
    one process."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else launch_rank()


def world_size() -> int:
    """How many processes run the experiment (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """THE answer to "is this the main process" in mammoth: whether this process writes the run's
    and its job's files (results, checkpoints, ``.hydra/``, ``job.json``, summaries, progress
    bars): rank 0 (:func:`rank`, also before the process group starts and after it ends), or the
    only process."""
    return rank() == 0


# ---- one run directory, one writer ----


def shared_run_directory(run_dir: Path) -> Path:
    """Rank 0's run directory, on every rank (``run_dir`` itself in one process)."""
    if world_size() == 1:
        return run_dir
    return Path(broadcast_text(str(run_dir) if is_main_process() else None))


def rank_log_name(process_rank: int) -> str:
    """``rank1.log``: where rank ``process_rank`` (> 0) logs, in the run directory."""
    return f"rank{process_rank}.log"


def log_to_rank_file(run_dir: Path) -> None:
    """On a rank other than 0: the root logger writes only to ``run_dir/rankN.log`` (no console,
    not the run's ``mammoth.log``). Nothing on rank 0 or in one process."""
    if is_main_process():
        return

    # opened first, through open_nofollow as every file mammoth writes in a run directory: a planted link is refused
    handler = logging.StreamHandler(open_nofollow(run_dir / rank_log_name(rank()), "a"))
    handler.setFormatter(logging.Formatter(f"[%(asctime)s][rank {rank()} pid %(process)d][%(name)s][%(levelname)s] %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
        if isinstance(existing, logging.FileHandler):
            existing.close()
    root.addHandler(handler)


# ---- training: an equal shard of every batch, gradients averaged by DDP's reducer ----


@dataclass(frozen=True)
class Shard:
    """Rows ``start:stop`` of a batch of ``size`` rows (the whole batch, over every rank: what one
    process observes): this rank's part. A step's batch is split in equal shards, one per rank
    (:attr:`split`), when it and the step's replay minibatch divide by the number of processes;
    any other step runs whole on every rank (:func:`shard_of`)."""

    start: int
    stop: int
    size: int
    rank: int = 0
    processes: int = 1

    def rows(self, tensor: Tensor) -> Tensor:
        """This rank's rows of ``tensor`` (its first dimension is the batch)."""
        return tensor[self.start : self.stop]

    def of(self, size: int) -> "Shard":
        """This rank's shard of another batch of the step, of ``size`` rows (a replay minibatch
        drawn whole on every rank): split as the step is. In a split step a size that does not
        divide by the number of processes is a TrainingError (the step was split because the
        method's ``replay_rows`` said its minibatch would divide)."""
        if not self.split:
            return Shard(0, size, size, self.rank, self.processes)
        if size % self.processes:
            raise TrainingError(
                f"a replay minibatch of {size} rows in a step split over {self.processes} processes; allowed: "
                f"the rows the method's replay_rows(batch_size) says the step draws ({self.processes} must divide "
                "them, else the step runs whole on every rank)"
            )
        return shard_of(size, self.rank, self.processes)

    @property
    def local_size(self) -> int:
        """How many rows this rank trains on."""
        return self.stop - self.start

    @property
    def split(self) -> bool:
        """Whether the batch is split over the ranks (else every rank holds it whole)."""
        return self.local_size < self.size


def shard_of(size: int, process_rank: Optional[int] = None, processes: Optional[int] = None,
             whole: bool = False) -> Shard:
    """This rank's shard of a batch of ``size`` rows: the ``size / processes`` rows of rank
    ``process_rank``, ranks in order covering the batch in order (so rows gathered in rank order
    are the batch), when ``processes`` divides ``size``; else (or with ``whole``) the whole batch,
    which every rank then trains on. Equal shards make the average of the ranks' gradients (DDP's)
    one process's gradient exactly, replay terms and synchronised BatchNorm included; a batch that
    every rank holds whole gives every rank one process's gradient."""
    process_rank = rank() if process_rank is None else process_rank
    processes = world_size() if processes is None else processes
    if whole or size % processes or size < processes:
        return Shard(0, size, size, process_rank, processes)
    local = size // processes
    return Shard(process_rank * local, (process_rank + 1) * local, size, process_rank, processes)


def check_even_batches(batch_size: int, minibatch_size: Optional[int], processes: int) -> None:
    """On ``processes`` > 1: ``dataset.batch_size`` and a replay ``model.minibatch_size`` must divide
    by the number of processes (every rank trains on an equal shard of each), else a one-line
    ConfigError. (An epoch's last, smaller batch that does not divide runs whole on every rank.)"""
    if processes == 1:
        return
    if batch_size % processes:
        raise ConfigError(
            f"dataset.batch_size={batch_size} does not divide by the {processes} processes; allowed: a multiple of "
            f"{processes} (each rank trains on an equal shard of every batch: docs/distributed.md)"
        )
    if minibatch_size is not None and minibatch_size % processes:
        raise ConfigError(
            f"model.minibatch_size={minibatch_size} does not divide by the {processes} processes; allowed: a multiple "
            f"of {processes}, or null (the batch's size; each rank replays an equal shard: docs/distributed.md)"
        )


def step_shard(model: Any, size: int, process_rank: int, processes: int) -> Shard:
    """This rank's shard of a step on a batch of ``size`` rows: split when ``size`` and the rows of
    the replay minibatch the step draws (``model.replay_rows(size)``; 0: none) divide by the
    number of processes, else the whole batch on every rank."""
    replay = int(getattr(model, "replay_rows", lambda rows: 0)(size))
    return shard_of(size, process_rank, processes, whole=bool(replay % processes))


def observe_on_shard(model: Any, context: Any) -> Callable[[Any], float]:
    """The main loop's step: ``model.observe`` on this rank's shard of each batch (the whole batch
    in one process, and on several processes in a step that cannot split evenly:
    :func:`step_shard`), with ``context.shard`` saying which shard while it runs (what a method
    reads: the whole batch's size, its rows here); returns the batch's loss, one process's (the
    mean of the ranks' equal shards' losses), the same value on every rank, so a non-finite loss
    stops every rank at the same step.

    On several processes, first checks that the batch and the replay minibatch divide by the
    number of processes (:func:`check_even_batches`) and wraps the model's trainable parameters
    in the context's :class:`GradientReducer` (DDP's reducer; again within the task if they
    change), which averages the gradients of a split step's backward passes. One process creates
    no wrapper."""
    if world_size() == 1:
        return lambda batch: model.observe(batch.inputs, batch.labels, batch.not_aug_inputs)
    processes, process_rank = world_size(), rank()
    check_even_batches(context.batch_size, getattr(model, "minibatch_size", None), processes)
    reducer = context.gradient_reducer
    reducer.wrap(model)

    def step(batch: Any) -> float:
        shard = step_shard(model, int(batch.labels.shape[0]), process_rank, processes)
        reducer.refresh(model)
        context.shard = shard
        try:
            with reducer.step(shard.split, type(model).__name__):
                loss = model.observe(shard.rows(batch.inputs), shard.rows(batch.labels), shard.rows(batch.not_aug_inputs))
        finally:
            context.shard = None
        if not shard.split:
            return float(loss)  # every rank computed the same step
        return float(sum_over_ranks(torch.tensor([float(loss)], dtype=torch.float64))) / processes

    return step


class GradientReducer:
    """What averages the gradients of a split step over the ranks: torch's
    ``DistributedDataParallel`` reducer (bucketed all-reduces, launched while the backward pass
    runs) over the model's trainable parameters, kept by the engine (one per run,
    ``TrainingContext.gradient_reducer``; the model never holds it).

    DDP wraps the model as it is (``model.net`` stays the network the methods see) and its
    forward is never called: a method's step calls backward itself, so before each backward pass
    of a split step :meth:`TrainingContext.backward` arms the reducer (:meth:`prepare`, what DDP's
    forward does at its end). Every other backward pass (a step every rank runs whole, a method's
    inner loops, work under ``context.same_on_every_rank()``) runs with no collective; there every
    rank computes one process's gradient. Synchronised CPU BatchNorm layers
    (:class:`RankSyncBatchNorm`) share statistics only inside a split step, too."""

    def __init__(self) -> None:
        #: The DDP wrapper of the model's trainable parameters (None before :meth:`wrap`, or without any).
        self.ddp: Optional[torch.nn.parallel.DistributedDataParallel] = None
        self._key: tuple[int, ...] = ()
        self._batchnorms: list[RankSyncBatchNorm] = []
        self._watch: Any = None
        #: Whether the backward passes now belong to a split step (and are averaged).
        self.active = False
        self._armed = False
        self._unsynchronised = 0
        #: Backward passes armed (averaged) so far: what a benchmark counts.
        self.prepared = 0

    def wrap(self, model: torch.nn.Module) -> None:
        """Wrap ``model``'s trainable parameters in a new DDP wrapper (the engine does at each task's
        start, so a resumed run buckets its gradients as an uninterrupted one); note its
        synchronised BatchNorm layers."""
        self.release()
        self._batchnorms = [module for module in model.modules() if isinstance(module, RankSyncBatchNorm)]
        parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
        self._key = tuple(id(parameter) for parameter in parameters)
        if not parameters:
            return
        self.ddp = torch.nn.parallel.DistributedDataParallel(model, gradient_as_bucket_view=False, **_ddp_options())
        self._watch = parameters[0].register_post_accumulate_grad_hook(self._accumulated)

    def refresh(self, model: torch.nn.Module) -> None:
        """Wrap ``model`` again when its trainable parameters changed (a method added or froze some)."""
        if tuple(id(parameter) for parameter in model.parameters() if parameter.requires_grad) != self._key:
            self.wrap(model)

    def release(self) -> None:
        """Drop the wrapper (its reducer's hooks go with it)."""
        if self._watch is not None:
            self._watch.remove()
        self.ddp, self._watch, self._key, self._batchnorms = None, None, (), []

    def prepare(self) -> None:
        """Arm the reducer for the next backward pass when it belongs to a split step (nothing
        otherwise): DDP's forward does this; a method's step calls backward itself."""
        if not self.active or self.ddp is None:
            return
        reducer = self.ddp.reducer
        try:
            reducer._rebuild_buckets()  # as Lightning: DDP's forward does it first (buckets in gradient order, once)
            reducer.prepare_for_backward([])
        except RuntimeError as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            if "finished reduction" in reason:  # DDP's words for a parameter the last armed pass did not reach
                reason = "a trainable parameter got no gradient in the step's previous backward pass"
            raise TrainingError(
                f"the ranks cannot average this step's gradients: {reason}; allowed: backward passes of the step "
                "(self.step, self.backward) that reach every trainable parameter of the model"
            ) from None
        self._armed = True
        self.prepared += 1

    def _accumulated(self, parameter: Tensor) -> None:
        """A backward pass reached the watched parameter: in a split step it must have been armed."""
        if self.active:
            if self._armed:
                self._armed = False
            else:
                self._unsynchronised += 1

    def _share_batchnorm(self, on: bool) -> None:
        for module in self._batchnorms:
            module.synchronise = on

    @contextmanager
    def step(self, split: bool, method: str) -> Iterator[None]:
        """The block of one step: a split one averages its armed backward passes and shares the
        BatchNorm statistics; afterwards a backward pass of the step that was not armed (a
        method's ``loss.backward()`` in ``observe``) is a TrainingError naming ``method``."""
        self.active, self._armed, self._unsynchronised = split, False, 0
        self._share_batchnorm(split)
        try:
            yield
        finally:
            self.active = self._armed = False
            self._share_batchnorm(False)
        if self._unsynchronised:
            raise TrainingError(
                f"{method}.observe ran {self._unsynchronised} backward pass(es) that the ranks did not average; "
                "allowed: self.step(loss) or self.backward(loss) for the step's losses, and work every rank "
                "repeats identically under `with self.context.same_on_every_rank():`"
            )

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Work inside a step that every rank computes identically: no averaging, BatchNorm on this rank's batch."""
        active = self.active
        self.active = False
        self._share_batchnorm(False)
        try:
            yield
        finally:
            self.active = active
            self._share_batchnorm(active)


def _ddp_options() -> dict[str, bool]:
    """DDP's options that the torch at hand has: no buffer broadcasts (the BatchNorm statistics are
    the synchronised layers'; ``forward_sync_buffers`` in newer torch, ``broadcast_buffers`` before)
    and no synchronisation when wrapping (``init_sync``, torch >= 2.4; the ranks hold the same
    weights by construction, so nothing needs broadcasting)."""
    names = inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters
    options = {"forward_sync_buffers" if "forward_sync_buffers" in names else "broadcast_buffers": False}
    if "init_sync" in names:
        options["init_sync"] = False
    return options


def average_batchnorm_statistics(model: Any) -> None:
    """Average the running mean and variance of every BatchNorm layer over the ranks: nothing
    changes for the synchronised layers (:func:`synchronised_batchnorm`), whose statistics agree;
    a layer a method adds during the run normalised each rank's shard, and its running averages,
    linear in the batches' statistics, become those of averaging after every step. Nothing in one
    process."""
    if world_size() == 1:
        return
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            for statistic in (module.running_mean, module.running_var):
                if statistic is not None:
                    statistic.copy_(sum_over_ranks(statistic) / world_size())


def synchronised_batchnorm(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``net`` with BatchNorm layers whose training statistics are those of the whole batch, over
    every rank, with several processes: torch's SyncBatchNorm on CUDA, :class:`RankSyncBatchNorm`
    elsewhere (SyncBatchNorm runs on GPUs only). Parameter and buffer names stay, so checkpoints
    move between any numbers of processes."""
    if world_size() == 1:
        return net
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return _with_rank_sync_batchnorm(net)


class RankSyncBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """A BatchNorm layer that, in training with :attr:`synchronise` on (the engine turns it on for
    the steps split over the ranks), normalises with the mean and variance of the whole batch over
    every rank, on any backend (gloo): one all-gather of each rank's row count, mean and variance
    in the forward pass, merged with Chan's parallel formula (as accurate as one process's), and
    one all-reduce in the backward pass (the gathered statistics' gradients); differentiable. As
    BatchNorm otherwise (the batch every rank holds whole, inner loops, evaluation)."""

    #: Whether training forward passes share the batch statistics over the ranks (set by the engine's step).
    synchronise: bool = False

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and self.synchronise) or world_size() == 1:
            return super().forward(input)
        channels, dims = input.shape[1], [0, *range(2, input.dim())]
        shape = [1, channels] + [1] * (input.dim() - 2)
        variance, mean = torch.var_mean(input, dims, correction=0)
        count = input.new_full((1,), input.numel() / channels)
        gathered = _AllGather.apply(torch.cat([count, mean, variance]))  # one row per rank
        counts, means, variances = gathered[:, :1], gathered[:, 1 : 1 + channels], gathered[:, 1 + channels :]
        total = float(counts.detach().sum())
        mean = (counts * means).sum(0) / total
        variance = (counts * (variances + (means - mean) ** 2)).sum(0) / total
        if self.track_running_stats:
            self._track(mean.detach(), variance.detach(), total)
        output = (input - mean.view(shape)) * torch.rsqrt(variance.view(shape) + self.eps)
        return output * self.weight.view(shape) + self.bias.view(shape) if self.affine else output

    @torch.no_grad()
    def _track(self, mean: Tensor, variance: Tensor, count: float) -> None:
        """Update the running statistics as BatchNorm does (the variance unbiased)."""
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1 - factor).add_(variance * (count / max(count - 1, 1.0)), alpha=factor)


class _AllGather(torch.autograd.Function):
    """Every rank's ``tensor``, stacked in rank order (one all-gather), differentiable: the
    gradient of this rank's row is the sum over the ranks of theirs (one all-reduce)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        rows = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(rows, tensor.contiguous())
        return torch.stack(rows)

    @staticmethod
    def backward(ctx: Any, gradient: Tensor) -> Tensor:
        total = gradient.contiguous().clone()
        dist.all_reduce(total)
        return total[rank()]


def _with_rank_sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with each BatchNorm layer replaced by a :class:`RankSyncBatchNorm` holding the
    same parameters and buffers (as torch's ``SyncBatchNorm.convert_sync_batchnorm``)."""
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(
            module, (RankSyncBatchNorm, torch.nn.SyncBatchNorm)):
        synced = RankSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats)
        if module.affine:
            synced.weight, synced.bias = module.weight, module.bias
        synced.running_mean, synced.running_var = module.running_mean, module.running_var
        synced.num_batches_tracked = module.num_batches_tracked
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        module.add_module(name, _with_rank_sync_batchnorm(child))
    return module


# ---- evaluation: sharded, correct counts summed ----


def evaluate_on_ranks(evaluate: Callable[..., dict[str, list[float]]], model: Any, context: Any,
                      test_sources: Sequence[Any], **options: Any) -> dict[str, list[float]]:
    """``evaluate(model, context, test_sources, **options)``, each rank on its
    ``source.shard(rank, world_size)`` with ``sum_counts`` summing the correct counts and sizes
    over the ranks, so the accuracies are those of one process."""
    if world_size() == 1:
        return evaluate(model, context, test_sources, **options)
    shards = [source.shard(rank(), world_size()) for source in test_sources]
    return evaluate(model, context, shards, sum_counts=sum_over_ranks, **options)


# ---- the replay buffer: what one rank stores, every rank stores ----


def gather_in_rank_order(tensor: Tensor) -> Tensor:
    """``tensor``'s rows from every rank, in rank order (:func:`gather_rows`); itself in one process."""
    return tensor if world_size() == 1 else gather_rows(tensor.contiguous())
