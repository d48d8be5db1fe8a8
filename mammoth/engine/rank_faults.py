"""What a run on several processes finds out when one of its ranks dies or hangs.

A rank that is killed breaks the others' next collective at once (gloo: "Connection reset by
peer"); a rank that is stopped (SIGSTOP) or stuck makes it wait until the collective timeout
(``MAMMOTH_DIST_TIMEOUT``). Neither error names the rank: gloo names a peer's address. So each
rank says, once at the start, who it is (its pid and host, gathered by every rank: no pickling,
the text travels as bytes in a tensor), and then, on a daemon thread, beats once a second: it adds
1 to its counter in the process group's store (torchrun's agent holds that store, so it outlives
any rank) and says where its main thread is (in a collective or in its own code): two store
requests a second, nothing per step. A rank that leaves in order (its run ended, it raised an
error of its own, it was interrupted) says so in the store first.

When a collective fails, a survivor looks at every other rank (:meth:`RankWatch.failed_ranks`):
what it said when it left, its process when it runs on this host (``/proc``: gone or stopped),
and otherwise whether its heartbeat still advances over a few beats; after a collective timed
out, a live rank that was not in a collective did not come to it. :func:`judge_rank` turns
those facts into what happened to a rank; :func:`failure_description` into the words of the
one line the run ends with.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import torch.distributed as dist

from mammoth.engine import distributed
from mammoth.files import open_nofollow

log = logging.getLogger("mammoth")

#: Seconds between two heartbeats of a rank.
HEARTBEAT_SECONDS = 1.0
#: How long a survivor watches the heartbeats of the ranks whose process it cannot see (another
#: host) before it calls one whose counter did not move unresponsive: three beats.
WATCH_SECONDS = 3.0
#: How long one request to the store may take before the store counts as gone.
STORE_SECONDS = 5.0
#: What a rank that left in order said (:meth:`RankWatch.leave`); a failure adds its error's line.
ENDED, INTERRUPTED, FAILED = "ended", "interrupted", "failed"
#: Where a rank's main thread was at its last heartbeat (:func:`main_thread_place`).
IN_COLLECTIVE, IN_OWN_CODE = "collective", "own code"


@dataclass(frozen=True)
class Peer:
    """A rank of the run as it said at the start: its ``rank``, ``pid`` and ``host``."""

    rank: int
    pid: int
    host: str

    def describe(self, world_size: int) -> str:
        """``rank 1 of 2 (pid 4242 on node7)``."""
        return f"rank {self.rank} of {world_size} (pid {self.pid} on {self.host})"


@dataclass(frozen=True)
class PeerFacts:
    """What a survivor found out about another rank: what it said when it ``left`` (None: it did
    not leave in order), its ``process`` where it runs on this host (``running``, ``stopped``,
    ``gone``; None on another host), whether its heartbeat advanced while watched (``beating``;
    None when not watched or the store did not answer) and, after a collective timed out, where
    it was (``place``: :data:`IN_COLLECTIVE` or :data:`IN_OWN_CODE`)."""

    peer: Peer
    left: Optional[str] = None
    process: Optional[str] = None
    beating: Optional[bool] = None
    #: After a collective timed out: where its main thread was at its last beat (:func:`main_thread_place`).
    place: Optional[str] = None


def judge_rank(facts: PeerFacts) -> Optional[str]:
    """What happened to a rank, from what a survivor found out (``died``, ``was stopped
    (SIGSTOP)``, ``stopped responding ...``, ``failed: <its error>``), or None when it is alive or
    left in order (its run ended, it was interrupted as this rank was)."""
    if facts.left is not None:
        kind, _, detail = facts.left.partition(": ")
        return f"failed: {detail}" if kind == FAILED else None
    if facts.process == "gone":
        return "died"
    if facts.process == "stopped":
        return "was stopped (SIGSTOP)"
    if facts.beating is False:
        return f"stopped responding (no heartbeat for {WATCH_SECONDS:g} s: dead or hung)"
    if facts.place == IN_OWN_CODE:
        return "did not come to the collective (alive, busy in its own code past the timeout)"
    return None


@dataclass(frozen=True)
class RankFailure:
    """The ranks that failed (``ranks``) and what happened to them, in words (``description``)."""

    ranks: tuple[int, ...]
    description: str
    #: The ranks among ``ranks`` that failed with an error of their own and said so (they report it themselves).
    announced: tuple[int, ...] = ()

    def lowest_survivor(self, world_size: int) -> int:
        """The lowest rank that did not fail: the one that writes the run's files when rank 0 failed."""
        return min(rank for rank in range(world_size) if rank not in self.ranks)


def judge_ranks(facts: Sequence[PeerFacts], world_size: int) -> Optional[RankFailure]:
    """The ranks that failed among ``facts`` (:func:`judge_rank`), or None when none did."""
    failed = [(item.peer, what) for item in facts if (what := judge_rank(item)) is not None]
    if not failed:
        return None
    announced = tuple(item.peer.rank for item in facts if item.left is not None and judge_rank(item) is not None)
    return RankFailure(tuple(peer.rank for peer, _ in failed), failure_description(failed, world_size), announced)


def failure_description(judged: Sequence[tuple[Peer, str]], world_size: int) -> str:
    """``rank 1 of 2 (pid 4242 on node7) died``; several ranks joined by ``; ``."""
    return "; ".join(f"{peer.describe(world_size)} {what}" for peer, what in judged)


def from_collective(error: BaseException) -> bool:
    """Whether ``error`` came out of a collective (which another rank may have broken), not out of
    this rank's own code: torch's distributed errors, gloo's and NCCL's (plain RuntimeErrors that
    name them), or an error raised inside ``torch.distributed``."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    if any(marker in str(error) for marker in ("gloo", "NCCL", "ProcessGroup")):
        return True
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and f"torch{os.sep}distributed{os.sep}" in frames[-1].filename


def main_thread_place(frames: Optional[Mapping[int, Any]] = None) -> str:
    """Where the main thread is: :data:`IN_COLLECTIVE` when a frame of its stack is in
    ``torch.distributed`` (waiting for the other ranks) or in torch's autograd engine (where
    DistributedDataParallel's reducer waits for its all-reduce), else :data:`IN_OWN_CODE`
    (``frames``: ``sys._current_frames()``, Python's documented view of every thread's stack)."""
    frames = sys._current_frames() if frames is None else frames
    frame = frames.get(threading.main_thread().ident)
    markers = (f"torch{os.sep}distributed{os.sep}", f"torch{os.sep}autograd{os.sep}")
    while frame is not None:
        if any(marker in frame.f_code.co_filename for marker in markers):
            return IN_COLLECTIVE
        frame = frame.f_back
    return IN_OWN_CODE


def process_state(pid: int, proc: Path = Path("/proc")) -> str:
    """``gone``, ``stopped`` or ``running``: a process of this host, by ``/proc/PID/stat`` (Linux:
    a zombie, not yet reaped by torchrun, is gone), else by a signal 0 where there is no ``/proc``."""
    if proc.is_dir():
        try:
            stat = (proc / str(pid) / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return "gone"
        state = stat.rsplit(")", 1)[-1].split()[0]  # after "(comm)", which may hold spaces
        return {"Z": "gone", "X": "gone", "T": "stopped", "t": "stopped"}.get(state, "running")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:  # another user's process: it exists
        pass
    return "running"


def store_address(environ: Optional[Mapping[str, str]] = None) -> tuple[str, int]:
    """Where the process group's store listens: ``MASTER_ADDR``, ``MASTER_PORT`` (``env://``)."""
    environ = os.environ if environ is None else environ
    return environ["MASTER_ADDR"], int(environ["MASTER_PORT"])


def store_outlives_ranks(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether the store is torchrun's agent's (it outlives every rank), not rank 0's own."""
    environ = os.environ if environ is None else environ
    return environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"


class RankWatch:
    """This rank's heartbeat and its view of the others, from the start of the run's process group
    (:meth:`start`, on every rank at once) to its end (:meth:`stop`)."""

    def __init__(self, peers: Sequence[Peer], own_rank: int, prefix: str) -> None:
        self.peers = list(peers)
        self.rank = own_rank
        self.prefix = prefix
        self._stopped = threading.Event()
        self._thread: Optional[threading.Thread] = None
        try:
            self._store: Optional[dist.Store] = self._client()  # the main thread's: what this rank says and asks
            self._beat_store = self._client()  # the heartbeat thread's
        except Exception as error:  # noqa: BLE001  no store to reach (a process group started without env://)
            self._store = None
            log.warning("rank %d cannot reach the process group's store (%s): a rank that fails on another host "
                        "will not be named", own_rank, str(error).strip().splitlines()[0] if str(error).strip() else error)
            return
        self._thread = threading.Thread(target=self._beat, name="mammoth-heartbeat", daemon=True)
        self._thread.start()

    @classmethod
    def start(cls) -> "RankWatch":
        """Every rank's pid and host, gathered on every rank, and this rank's heartbeat started
        (a collective: every rank calls it, in the process group)."""
        peers = []
        for index, facts in enumerate(distributed.gather_texts(f"{os.getpid()} {socket.gethostname()}")):
            pid, _, host = facts.partition(" ")
            peers.append(Peer(index, int(pid), host))
        token = distributed.broadcast_text(secrets.token_hex(8) if dist.get_rank() == 0 else None)
        return cls(peers, dist.get_rank(), f"mammoth/{token}/")

    def _client(self) -> dist.Store:
        """A connection of this rank's own to the process group's store, its keys under the run's prefix."""
        host, port = store_address()
        store = dist.TCPStore(host, port, is_master=False, timeout=timedelta(seconds=STORE_SECONDS),
                              wait_for_workers=False)
        return dist.PrefixStore(self.prefix, store)

    def _beat(self) -> None:
        while not self._stopped.is_set():
            try:
                self._beat_store.set(f"place/{self.rank}", main_thread_place())
                self._beat_store.add(f"beat/{self.rank}", 1)
            except Exception:  # noqa: BLE001  the store is gone: nothing to beat into
                return
            self._stopped.wait(HEARTBEAT_SECONDS)

    def leave(self, what: str) -> None:
        """Say in the store why this rank leaves (:data:`ENDED`, :data:`INTERRUPTED`, or
        ``failed: <its error's line>``), so that the others do not count it as dead; never raises."""
        if self._store is None:
            return
        try:
            self._store.set(f"left/{self.rank}", what)
        except Exception:  # noqa: BLE001  a store that is gone: the others find out without it
            pass

    def stop(self, what: Optional[str] = ENDED) -> None:
        """End the heartbeat, saying ``what`` (:meth:`leave`; None: said already)."""
        if what is not None:
            self.leave(what)
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=STORE_SECONDS)  # done with the store before the process group ends

    def failed_ranks(self, timed_out: bool = False) -> Optional[RankFailure]:
        """The ranks that failed and what happened to them, or None when every other rank is alive
        or left in order; after a collective ``timed_out``, also a live rank that was not in a
        collective at its last beat (it did not come). Waits at most :data:`WATCH_SECONDS` (more
        only when the store does not answer: then :data:`STORE_SECONDS`)."""
        others = [peer for peer in self.peers if peer.rank != self.rank]
        here = socket.gethostname()
        facts = {peer.rank: PeerFacts(peer, process=process_state(peer.pid) if peer.host == here else None)
                 for peer in others}
        store = self._store
        if store is None:  # this host's processes only
            return judge_ranks(list(facts.values()), len(self.peers))
        try:
            left = {peer.rank: _left(store, peer.rank) for peer in others}
            watched = [peer.rank for peer in others if left[peer.rank] is None and facts[peer.rank].process in (None, "running")]
            local = {peer.rank: peer.pid for peer in others if peer.host == here}
            beating = _watch_heartbeats(store, watched, lambda rank: rank in local and process_state(local[rank]) != "running")
            for peer in others:
                said = left[peer.rank] if left[peer.rank] is not None else _left(store, peer.rank)  # it may leave meanwhile
                process = process_state(peer.pid) if peer.host == here else None  # a killed process may take a moment to go
                place = _place(store, peer.rank) if timed_out else None
                facts[peer.rank] = PeerFacts(peer, said, process, beating.get(peer.rank), place)
        except Exception:  # noqa: BLE001  the store does not answer (any more)
            return self._without_store()
        return judge_ranks(list(facts.values()), len(self.peers))

    def _without_store(self) -> RankFailure:
        """The store does not answer: its holder is gone (torchrun's agent, or rank 0 where it holds the store)."""
        if store_outlives_ranks() or self.rank == 0:
            host, port = store_address()
            return RankFailure((), f"the process group's store at {host}:{port} does not answer (its launcher ended)")
        return RankFailure((0,), failure_description(
            [(self.peers[0], "stopped answering (it holds the process group's store)")], len(self.peers)))


def _left(store: dist.Store, rank: int) -> Optional[str]:
    """What ``rank`` said when it left (:meth:`RankWatch.leave`), or None."""
    key = f"left/{rank}"
    return store.get(key).decode("utf-8", "replace") if store.check([key]) else None


def _place(store: dist.Store, rank: int) -> Optional[str]:
    """Where ``rank`` was at its last heartbeat (:func:`main_thread_place`), or None."""
    key = f"place/{rank}"
    return store.get(key).decode("utf-8", "replace") if store.check([key]) else None


def timed_out(error: BaseException) -> bool:
    """Whether ``error`` is a collective that waited past the timeout (gloo's "Timed out waiting
    ...", NCCL's watchdog "timeout")."""
    text = str(error).lower()
    return "timed out" in text or "timeout" in text


def _watch_heartbeats(store: dist.Store, ranks: Sequence[int], settled: Callable[[int], bool]) -> dict[int, bool]:
    """Whether the heartbeat counter of each of ``ranks`` moved within :data:`WATCH_SECONDS`;
    returns as soon as every one moved or is ``settled`` (a process of this host found gone or
    stopped meanwhile: a killed process takes a moment to go)."""
    first = {rank: store.add(f"beat/{rank}", 0) for rank in ranks}
    beating = {rank: False for rank in ranks}
    deadline = time.monotonic() + WATCH_SECONDS
    while time.monotonic() < deadline:
        waiting = [rank for rank in ranks if not beating[rank] and not settled(rank)]
        if not waiting:
            break
        time.sleep(HEARTBEAT_SECONDS / 20)
        for rank in waiting:
            beating[rank] = store.add(f"beat/{rank}", 0) != first[rank]
    return beating


def tell_launcher(line: str, environ: Optional[Mapping[str, str]] = None) -> None:
    """Under torchrun, put ``line`` in this worker's error file (``TORCHELASTIC_ERROR_FILE``, in
    the format of torch's ``ErrorHandler``), so that torchrun's failure summary shows it for this
    rank (a survivor ends first: torchrun's "root cause" is the survivor, whose line names the rank
    that failed). Nothing without torchrun; never raises."""
    environ = os.environ if environ is None else environ
    path = environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    document = {"message": {"message": line, "extraInfo": {"py_callstack": line, "timestamp": str(int(time.time()))}}}
    try:
        with open_nofollow(Path(path), "w") as file:
            json.dump(document, file)
    except Exception as error:  # noqa: BLE001  torchrun's summary is a courtesy: the line is on stderr already
        log.warning("could not write torchrun's error file %s: %s", path, error)
