"""A fork server ("zygote") for the training-job starts of tests/test_checkpoints.py.

A fresh ``python train.py`` spends about 5 s of CPU before its first step:
``import torch`` (~1.5 s), ``torch._dynamo`` (imported by the first torch.optim
optimizer, ~1.5 s) and ``pytorch_optimizer`` (up to ~2.7 s), and a kill test
starts its job a dozen times. This server pays that once:

    python tests/job_fork_server.py PARENT_PID

pins the numerics as train.py does, imports what a job imports and builds one
throwaway optimizer (no step, no thread), then forks one child per request.
The child becomes what ``python SCRIPT ARGS...`` would have been: the
request's working folder, environment, ``sys.argv`` and ``sys.path[0]``, its
stdout and stderr in files, stdin /dev/null, the global generators seeded as a
fresh interpreter seeds them, and the script run as ``__main__``; it exits as a
fresh process does (SystemExit's status, an uncaught exception's traceback and
status 1, the threads joined, atexit, stdio flushed), less the teardown of the
modules. Signals sent to the child's pid reach the job itself.

Protocol, one JSON object a line: requests on the server's stdin
``{"argv": [SCRIPT, ARG...], "cwd": ..., "env": {...}, "stdout": PATH,
"stderr": PATH}``; replies on its stdout: ``{"ready": ...}`` once warm, then per
request ``{"pid": N}`` once forked and ``{"pid": N, "returncode": R,
"cpu_seconds": S}`` once it ended (R as subprocess gives it: -9 for SIGKILL).
One job at a time. The server ends at end of input, and dies with its parent
(PR_SET_PDEATHSIG), as its children die with it.

``JobForkServer`` is the test side: ``run`` (as ``subprocess.run`` with
``capture_output=True, text=True``) and ``popen`` (a ``Popen``-like handle).

What a fork cannot make fresh: the str hash seed (PYTHONHASHSEED) is the
server's for every child, and modules the warm-up imported are not imported
again. Tests that use it keep a fresh process for their reference run, so
the bytes of fresh and forked jobs are compared too.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import json
import os
import random
import runpy
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
# c10's default_rng_seed_val: torch builds that seed the default generator with
# a constant use this one; others (torch 2.13 here) draw a seed per process.
TORCH_FIXED_SEED = 67280421310721
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent ends (Linux), so nothing outlives the tests."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent ended before prctl took effect
        os._exit(1)


# ---- the server -------------------------------------------------------------


def warm_up() -> dict:
    """Import what a training job imports, as train.py orders it; train nothing.

    Returns what a child needs to look fresh: the torch generator's state right
    after import and whether torch seeds it with a constant."""
    sys.path.insert(0, str(SCRIPTS))
    from optbench.engines import numerics

    # train.py pins before torch is imported; the test process pinned the
    # environment this server inherited, so this only checks it.
    numerics.pin(numerics.DEFAULT_MODE)
    import torch

    start = {
        "torch_state": torch.default_generator.get_state(),
        "torch_fixed_seed": torch.initial_seed() == TORCH_FIXED_SEED,
    }
    import pytorch_optimizer  # noqa: F401  (the optimizers of the "packages" jobs)

    from optbench.engines import checkpoints, job  # noqa: F401  (train.py's imports)

    # The first torch.optim optimizer imports torch._dynamo (about 1.5 s); no step.
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    return start


def threads_running() -> int:
    """The OS threads of this process: forking with more than one copies locks
    another thread may hold (torch's intra-op pool, OpenMP, a Python thread)."""
    return len(os.listdir("/proc/self/task"))


def fresh_start_state(start: dict) -> None:
    """Seed the global generators as a fresh interpreter does, so that identical
    forks cannot hide a resume that leans on its start-up state."""
    import torch

    random.seed()  # from os.urandom, as at import
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()  # from the OS's entropy, as at import
    if start["torch_fixed_seed"]:
        torch.default_generator.set_state(start["torch_state"])
    else:
        torch.default_generator.seed()  # a seed of its own, as each fresh process draws


def become_job(request: dict, start: dict, server_pid: int, server_path: list):
    """In the forked child: turn into ``python SCRIPT ARGS...``, run it and exit."""
    die_with_parent(server_pid)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    fresh_start_state(start)
    script = request["argv"][0]
    sys.argv = list(request["argv"])
    # A fresh interpreter puts the script's folder first; the rest as here.
    sys.path[:] = [str(Path(script).parent), *server_path[1:]]
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as stop:
        code = exit_status(stop.code)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    # What the interpreter does at exit (Py_FinalizeEx): wait for the threads,
    # run atexit, flush stdio; then exit without tearing down the modules,
    # which costs a forked child about 1 s of CPU (it writes to every page it
    # shares with the server). Only a file left open and unflushed by the job
    # would notice (its tail lost here, so its bytes differ from a fresh run's).
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def exit_status(code) -> int:
    """The exit status of ``SystemExit(code)``, as the interpreter makes it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def serve(parent_pid: int) -> int:
    die_with_parent(parent_pid)
    server_path = list(sys.path)
    # The protocol gets private copies of stdin/stdout; fds 0 and 1 become
    # /dev/null, so a child's stdin and a stray print cannot touch it.
    requests = os.fdopen(os.dup(0), "r")
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    start = warm_up()
    threads = threads_running()
    replies.write(json.dumps({"ready": os.getpid(), "threads": threads}) + "\n")
    if threads != 1 or threading.active_count() != 1:
        return 1  # the client refuses it (its reply names the count)
    # What the warm-up made stays out of the children's collections: their
    # garbage collector would otherwise write to all of the server's pages.
    gc.collect()
    gc.freeze()
    gc.disable()  # in the server, which only forks; each child enables it
    for line in requests:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        server_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            requests.close()
            replies.close()
            gc.enable()
            become_job(request, start, server_pid, server_path)  # never returns
        replies.write(json.dumps({"pid": pid}) + "\n")
        _, status, usage = os.wait4(pid, 0)
        ended = {"pid": pid, "returncode": os.waitstatus_to_exitcode(status)}
        ended["cpu_seconds"] = usage.ru_utime + usage.ru_stime
        replies.write(json.dumps(ended) + "\n")
    return 0


# ---- the test side ----------------------------------------------------------


class ForkServerError(RuntimeError):
    """The fork server could not start, refused a command, or died."""


class ForkedJob:
    """A job forked by the server, handled as a ``subprocess.Popen``."""

    def __init__(self, server: JobForkServer, args: list, pid: int):
        self.server, self.args, self.pid = server, args, pid
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            self._take(self.server._message(timeout=0))
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None:
            ended = self.server._message(timeout)
            if ended is None:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._take(ended)
        return self.returncode

    def send_signal(self, signum) -> None:
        # Until the server reaps it (and says so), the pid cannot be reused.
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _take(self, ended) -> None:
        if ended is not None:
            assert ended["pid"] == self.pid, (ended, self.pid)
            self.returncode = ended["returncode"]
            self.server.cpu_seconds += ended["cpu_seconds"]
            self.server.running = None


class JobForkServer:
    """The server, started in ``folder`` (its log and the jobs' output files)."""

    def __init__(self, folder: Path, start_timeout: float = 300):
        self.folder = Path(folder)
        self.cpu_seconds = 0.0  # of the forked jobs, as the server reaped them
        self.running = None
        self.started = 0
        self._pending = b""
        self._log = self.folder / "server.log"
        # The environment torch read at import: a job asking for another one
        # must start fresh.
        self.environment = dict(os.environ)
        with open(self._log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, __file__, str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        ready = self._message(start_timeout)
        if ready is None or ready.get("threads") != 1:
            self.close()
            raise ForkServerError(
                f"the fork server is not ready to fork ({ready}: one thread expected, the "
                f"warm-up must start none); its log:\n{self._log.read_text()[-3000:]}"
            )

    def popen(self, args: list, stdout: Path | None = None, stderr: Path | None = None):
        """Start ``args`` (``[sys.executable, SCRIPT, ARG...]``) forked; its output
        goes to the files given (else to files of the server's folder)."""
        self._check(args)
        if self.running is not None:
            raise ForkServerError(f"one job at a time: {self.running.args} still runs")
        self.started += 1
        request = {
            "argv": [str(args[1]), *map(str, args[2:])],
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "stdout": str(stdout or self.folder / f"{self.started}.stdout"),
            "stderr": str(stderr or self.folder / f"{self.started}.stderr"),
        }
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()
        forked = self._message(timeout=60)
        if forked is None:
            raise ForkServerError("the fork server did not fork within 60 s")
        self.running = ForkedJob(self, list(args), forked["pid"])
        return self.running

    def run(self, args: list, timeout: float) -> subprocess.CompletedProcess:
        """As ``subprocess.run(args, capture_output=True, text=True, timeout=...)``."""
        stdout = self.folder / f"{self.started + 1}.stdout"
        stderr = self.folder / f"{self.started + 1}.stderr"
        job = self.popen(args, stdout, stderr)
        try:
            job.wait(timeout)
        except subprocess.TimeoutExpired:
            job.kill()
            job.wait()
            raise
        finally:
            outputs = [path.read_text() if path.exists() else "" for path in (stdout, stderr)]
            for path in (stdout, stderr):
                path.unlink(missing_ok=True)
        return subprocess.CompletedProcess(list(args), job.returncode, *outputs)

    def close(self) -> None:
        """End the server (end of input) and wait for it; kill a job still running."""
        if self.running is not None and self.running.poll() is None:
            self.running.kill()
            self.running.wait()
        self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()

    def _check(self, args: list) -> None:
        if len(args) < 2 or args[0] != sys.executable or not str(args[1]).endswith(".py"):
            raise ForkServerError(
                f"the fork server runs [sys.executable, SCRIPT.py, ARG...] only, got {args[:3]}; "
                "start anything else with subprocess"
            )
        from optbench.engines import numerics

        changed = {
            name: os.environ.get(name)
            for name in numerics.STEERING_VARIABLES
            if os.environ.get(name) != self.environment.get(name)
        }
        mode = numerics.mode_from_argv([str(arg) for arg in args[2:]])
        if mode != numerics.DEFAULT_MODE or changed:
            raise ForkServerError(
                f"the fork server imported torch in numerics {numerics.DEFAULT_MODE} with the "
                f"environment of its start; this job asks for numerics {mode} "
                f"(environment changed since: {changed}): start it with subprocess"
            )

    def _message(self, timeout):
        """The server's next reply; None if none came within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        source = self.process.stdout.fileno()
        while b"\n" not in self._pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([source], [], [], left)[0]:
                return None
            chunk = os.read(source, 65536)
            if not chunk:
                raise ForkServerError(
                    f"the fork server died (exit {self.process.wait()}); its log:\n"
                    f"{self._log.read_text()[-3000:]}"
                )
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return json.loads(line)


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1])))
