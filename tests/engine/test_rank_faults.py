"""What a surviving rank decides about the others from the facts it gathered (a rank's own words
when it left, its process on this host, its heartbeat), and the one line a failed rank's run ends
with. The runs on two processes that a rank's death, or its stop, ends are in
tests/engine/test_distributed_faults.py (the second suite)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mammoth.app.resume import program, rank_failure_line, resume_command, torchrun_options
from mammoth.config.hydra_job import JobFacts
from mammoth.engine.rank_faults import Peer, PeerFacts, RankFailure, judge_rank, judge_ranks, process_state

PEER = Peer(1, 4242, "node7")


@pytest.mark.parametrize("facts, judged", [
    (PeerFacts(PEER, process="gone"), "died"),
    (PeerFacts(PEER, process="stopped"), "was stopped (SIGSTOP)"),
    (PeerFacts(PEER, beating=False), "stopped responding (no heartbeat for 3 s: dead or hung)"),
    (PeerFacts(PEER, process="running", beating=False), "stopped responding (no heartbeat for 3 s: dead or hung)"),
    (PeerFacts(PEER, beating=True), None),
    (PeerFacts(PEER, process="running", beating=True), None),
    (PeerFacts(PEER), None),  # nothing known against it
    # after a collective timed out: a live rank that was not in a collective did not come to it
    (PeerFacts(PEER, process="running", beating=True, place="own code"),
     "did not come to the collective (alive, busy in its own code past the timeout)"),
    (PeerFacts(PEER, process="running", beating=True, place="collective"), None),  # waiting in another one
    # what a rank said when it left wins: its own error, or an orderly end (interrupted too, e.g. by torchrun)
    (PeerFacts(PEER, left="failed: TrainingError: the loss became nan", process="gone"),
     "failed: TrainingError: the loss became nan"),
    (PeerFacts(PEER, left="interrupted", process="gone"), None),
    (PeerFacts(PEER, left="ended", beating=False), None),
])
def test_what_happened_to_a_rank_follows_from_the_facts(facts, judged) -> None:
    assert judge_rank(facts) == judged


def test_the_ranks_that_failed_are_named_in_rank_order_with_the_lowest_survivor() -> None:
    facts = [PeerFacts(Peer(0, 10, "a"), process="gone"), PeerFacts(Peer(1, 11, "a"), beating=True),
             PeerFacts(Peer(2, 12, "b"), beating=False)]
    failure = judge_ranks(facts, 4)
    assert failure == RankFailure((0, 2), "rank 0 of 4 (pid 10 on a) died; rank 2 of 4 (pid 12 on b) stopped responding "
                                          "(no heartbeat for 3 s: dead or hung)")
    assert failure.lowest_survivor(4) == 1
    assert judge_ranks(facts[1:2], 4) is None


@pytest.mark.parametrize("stat, state", [
    ("4242 (python) R 1 2 3", "running"), ("4242 (python) S 1 2 3", "running"),
    ("4242 (a (b) c) T 1 2 3", "stopped"), ("4242 (python) t 1", "stopped"), ("4242 (python) Z 1", "gone"),
])
def test_a_process_of_this_host_is_judged_by_its_proc_state(tmp_path: Path, stat: str, state: str) -> None:
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "stat").write_text(stat)
    assert process_state(4242, tmp_path) == state
    assert process_state(4243, tmp_path) == "gone"  # no such process


def test_this_process_is_running() -> None:
    assert process_state(os.getpid()) == "running"


TORCHRUN = {"TORCHELASTIC_RUN_ID": "none", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": "1"}


@pytest.mark.parametrize("environ, options", [
    (TORCHRUN, "torchrun --nproc_per_node=2"),
    ({**TORCHRUN, "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}, "torchrun --nnodes=2 --nproc_per_node=4"),
    ({**TORCHRUN, "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}, None),
    ({"WORLD_SIZE": "2", "RANK": "1"}, None),  # not torchrun (a submitit job's tasks export WORLD_SIZE too)
    ({}, None),
])
def test_under_torchrun_the_resume_command_starts_as_many_processes(environ, options) -> None:
    assert torchrun_options(environ) == options


def test_a_failed_rank_line_names_the_task_the_rank_and_the_exact_resume_command(tmp_path: Path, monkeypatch) -> None:
    for name, value in TORCHRUN.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("sys.argv", ["/x/mammoth/__main__.py"])
    job = JobFacts(OmegaConf.create({"mode": "RUN", "overrides": {"task": ["model=er", "seed=3", "resume=false"]},
                                     "runtime": {"output_dir": str(tmp_path)}}))
    assert program() == "torchrun --nproc_per_node=2 -m mammoth"
    failure = "rank 1 of 2 (pid 4242 on node7) died"
    line = rank_failure_line(failure, "1/5", tmp_path, job)
    assert line == "task 1/5 interrupted: rank 1 of 2 (pid 4242 on node7) died; nothing to resume: start the run again"
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    line = rank_failure_line(failure, "2/5", tmp_path, job)
    command = resume_command(tmp_path, job)
    assert line == (f"task 2/5 interrupted: rank 1 of 2 (pid 4242 on node7) died; the checkpoint of the last finished "
                    f"task is intact. Resume with: {command}")
    assert shlex.split(command) == ["torchrun", "--nproc_per_node=2", "-m", "mammoth", "model=er", "seed=3", "resume=true",
                                    f"hydra.run.dir={tmp_path}"]
    assert rank_failure_line(failure, None, tmp_path, job).startswith(
        "the run stopped before its first task: rank 1 of 2 (pid 4242 on node7) died; the checkpoint")


@pytest.fixture
def store(monkeypatch):
    """A process group's store of our own (a TCPStore in this process), where the watch connects."""
    import torch.distributed as dist

    master = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(master.port))
    monkeypatch.setattr("mammoth.engine.rank_faults.WATCH_SECONDS", 0.4)
    monkeypatch.setattr("mammoth.engine.rank_faults.HEARTBEAT_SECONDS", 0.1)
    return master


def test_a_rank_on_another_host_is_judged_by_its_heartbeat_and_its_words(store) -> None:
    import torch.distributed as dist

    from mammoth.engine.rank_faults import RankWatch

    peers = [Peer(0, os.getpid(), "here-and-now"), Peer(1, 11, "elsewhere"), Peer(2, 12, "elsewhere")]
    watch = RankWatch(peers, 0, "mammoth/test/")
    other = dist.PrefixStore("mammoth/test/", store)
    try:
        other.add("beat/1", 1)  # rank 1 beat once at the start, then nothing: its counter stands still
        other.set("left/2", "interrupted")  # rank 2 left in order
        failure = watch.failed_ranks()
        assert failure == RankFailure((1,), "rank 1 of 3 (pid 11 on elsewhere) stopped responding "
                                            "(no heartbeat for 0.4 s: dead or hung)")
        other.set("left/1", "failed: TrainingError: the loss became nan")
        failure = watch.failed_ranks()
        assert failure.description == "rank 1 of 3 (pid 11 on elsewhere) failed: TrainingError: the loss became nan"
        assert failure.ranks == failure.announced == (1,)  # it reports its own error itself
        assert int(other.add("beat/0", 0)) >= 1  # this rank's own heartbeat
    finally:
        watch.stop()
    assert other.get("left/0") == b"ended"


def test_a_store_that_stops_answering_names_its_holder(monkeypatch) -> None:
    import torch.distributed as dist

    from mammoth.engine.rank_faults import RankWatch

    master = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(master.port))
    monkeypatch.setattr("mammoth.engine.rank_faults.STORE_SECONDS", 0.3)
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    watch = RankWatch([Peer(0, 10, "elsewhere"), Peer(1, os.getpid(), "here")], 1, "mammoth/test/")
    del master  # rank 0's store (a launch without torchrun's agent) is gone with it
    try:
        assert watch.failed_ranks() == RankFailure((0,), "rank 0 of 2 (pid 10 on elsewhere) stopped answering "
                                                          "(it holds the process group's store)")
        monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
        assert watch.failed_ranks().description == (f"the process group's store at 127.0.0.1:{os.environ['MASTER_PORT']} "
                                                    "does not answer (its launcher ended)")
    finally:
        watch.stop(None)  # nothing to say to a store that is gone


def test_only_an_error_out_of_a_collective_makes_a_rank_look_at_the_others() -> None:
    import torch.distributed as dist

    from mammoth.engine.rank_faults import from_collective

    gloo = RuntimeError("[third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:43446")
    assert from_collective(gloo) and from_collective(RuntimeError("NCCL error: remote process exited"))
    assert from_collective(dist.DistNetworkError("Failed to recv, got 0 bytes"))
    assert not from_collective(ValueError("a bug of this rank's own")) and not from_collective(RuntimeError("out of memory"))


def test_torchrun_s_summary_gets_the_line_through_the_worker_s_error_file(tmp_path: Path) -> None:
    import json

    from mammoth.engine.rank_faults import tell_launcher

    line = "task 2/5 interrupted: rank 1 of 2 (pid 4242 on node7) was stopped (SIGSTOP); nothing to resume: start the run again"
    tell_launcher(line, {"TORCHELASTIC_ERROR_FILE": str(tmp_path / "error.json")})
    written = json.loads((tmp_path / "error.json").read_text())["message"]
    assert written["message"] == written["extraInfo"]["py_callstack"] == line
    assert int(written["extraInfo"]["timestamp"]) > 0
    tell_launcher(line, {})  # no torchrun: nothing
    assert [path.name for path in tmp_path.iterdir()] == ["error.json"]


def test_where_a_rank_is_comes_from_its_main_thread_s_stack() -> None:
    import threading
    import types

    from mammoth.engine.rank_faults import main_thread_place, timed_out

    def frame(filename, back=None):
        return types.SimpleNamespace(f_code=types.SimpleNamespace(co_filename=filename), f_back=back)

    main = threading.main_thread().ident
    waiting = frame(os.path.join("site-packages", "torch", "distributed", "distributed_c10d.py"), frame("/x/mammoth/models/er.py"))
    assert main_thread_place({main: waiting}) == "collective"
    reducer = frame(os.path.join("site-packages", "torch", "autograd", "graph.py"), frame("/x/mammoth/models/base.py"))
    assert main_thread_place({main: reducer}) == "collective"  # DDP's reducer waits inside the backward pass
    assert main_thread_place({main: frame("/x/mammoth/models/er.py", frame("/x/run.py"))}) == "own code"
    assert main_thread_place() == "own code"  # this test, right here
    assert timed_out(RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 5000ms for recv operation"))
    assert not timed_out(RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer"))
