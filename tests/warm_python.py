"""``python ARGS`` as a new process forked from a warm interpreter: what a command-line test needs
at a fraction of the start-up.

A ``python -m mammoth`` run of the tests spends about 3 s of CPU before its first step (importing
torch, torch's compiler stack, which ``torch.optim`` loads with the first optimizer, Hydra and
matplotlib) and under 0.2 s training on the tiny benchmarks. :func:`run_warm` forks each command
from a server process of this interpreter that has imported those libraries once (one server per
test process, started on first use): the command gets a process of its own (its pid, working
directory, environment, ``sys.path`` from its ``PYTHONPATH``, ``sys.argv``, standard streams and
exit status, run as ``python -m`` or ``python script.py`` runs it: ``runpy``, then what the
interpreter does at exit, in its order: wait for the threads, including those of
``concurrent.futures`` executors, then the ``atexit`` functions), and :func:`run_warm` returns a ``subprocess.CompletedProcess`` as
``subprocess.run`` does.

What differs from a cold start is only what is already imported: a test of what a command
imports (or of a package shadowing one in the working directory) starts a cold process
(``tests/cli/conftest.py``'s ``run_python``). The server imports no module of the working
directory and calls nothing of mammoth (it checks that no plugin is loaded and no option served),
sets no logging, and runs no torch operation, so no thread pool exists when it forks.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: The server: imports the heavy libraries, then forks a child per request line (JSON) on stdin and
#: answers on the protocol descriptor: first ``{"pid": N}``, then ``{"returncode": N}``.
SERVER = r'''
import atexit, importlib, json, os, runpy, sys, threading, traceback

import hydra, hydra.main, omegaconf, torch, torch._dynamo, torch.optim  # the heavy imports, once
import matplotlib.figure, matplotlib.font_manager
import mammoth.app.preflight, mammoth.app.runner, mammoth.plugins

# nothing a command could change is loaded: no plugin (read from its PYTHONPATH), no option served
# (mammoth.app.conf serves the options of the plugins), no thread to lose in the fork
assert mammoth.plugins.load_plugins_once.cache_info().currsize == 0, "plugins loaded before fork"
assert "mammoth.app.conf" not in sys.modules, "options served before fork"
assert threading.active_count() == 1, "a thread before fork"
BASE_PATH = [entry for entry in sys.path[1:] if entry not in os.environ.get("PYTHONPATH", "").split(os.pathsep)]
requests = os.fdopen(0, "r")
answers = os.dup(1)
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 1)


def answer(message):
    os.write(answers, (json.dumps(message) + "\n").encode())


def exit_status(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def child(request):
    os.close(answers)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.dup2(null, 0)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        os.dup2(os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
    args = request["args"]
    first = os.getcwd() if args[0] == "-m" else os.path.dirname(os.path.abspath(args[0]))
    extra = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    sys.path[:] = [first, *extra, *BASE_PATH]
    importlib.invalidate_caches()  # files written since the server started
    code = 0
    try:
        if args[0] == "-m":
            sys.argv = [args[1], *args[2:]]
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(args)
            runpy.run_path(args[0], run_name="__main__")
    except SystemExit as stop:
        code = exit_status(stop.code)
    except BaseException:
        traceback.print_exc()
        code = 1
    try:  # what the interpreter does at exit, in its order: join the threads, then the atexit functions
        threading._shutdown()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


for line in requests:
    request = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        child(request)
    answer({"pid": pid})
    _, status = os.waitpid(pid, 0)
    answer({"returncode": os.waitstatus_to_exitcode(status)})
'''

_server: subprocess.Popen | None = None


def _start() -> subprocess.Popen:
    """The server of this test process, started on first use and stopped at its exit."""
    global _server
    if _server is None or _server.poll() is not None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("HYDRA_")}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
        _server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, env=env, cwd=tempfile.gettempdir(), text=True)
        atexit.register(_server.kill)
    return _server


def _answer(server: subprocess.Popen, key: str) -> int:
    """The server's next answer, ``key``'s value (its reader buffers lines: no select on the pipe)."""
    line = server.stdout.readline()
    if not line:
        raise RuntimeError(f"the warm server (pid {server.pid}) ended before answering {key!r}")
    return json.loads(line)[key]


def run_warm(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    """``python ARGS`` (``-m MODULE ...`` or ``SCRIPT ...``) in ``cwd`` with exactly the environment
    ``env``, forked from the warm server; the completed process with its text output, as
    ``subprocess.run(..., capture_output=True, text=True, timeout=timeout)`` returns it."""
    server = _start()
    with tempfile.TemporaryDirectory() as streams:
        out, err = Path(streams, "stdout"), Path(streams, "stderr")
        request = {"args": list(args), "cwd": str(cwd), "env": dict(env), "stdout": str(out), "stderr": str(err)}
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        pid = _answer(server, "pid")
        timed_out = threading.Event()

        def stop() -> None:
            timed_out.set()
            os.kill(pid, signal.SIGKILL)

        timer = threading.Timer(timeout, stop)
        timer.start()
        try:
            returncode = _answer(server, "returncode")
        finally:
            timer.cancel()
        if timed_out.is_set():
            raise subprocess.TimeoutExpired([sys.executable, *args], timeout)
        return subprocess.CompletedProcess([sys.executable, *args], returncode, out.read_text(), err.read_text())
