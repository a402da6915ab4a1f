"""Fork servers ("zygotes") for the suite's starts of training jobs and of Snakemake.

A fresh ``python train.py`` spends about 3-5 s of CPU before its first step:
``import torch`` (~1.5 s), ``torch._dynamo`` (imported by the first torch.optim
optimizer, ~1.5 s) and ``pytorch_optimizer`` (up to ~2.7 s), and a kill test
starts its job a dozen times. A fresh ``python -m snakemake`` spends about
1.5 s importing Snakemake and collecting its plugins before it reads the
Snakefile, and the suite starts it a few hundred times. A server pays that
once:

    python tests/fork_server.py PARENT_PID KIND

``job``: pins the numerics as train.py does, imports what a job imports and
builds one throwaway optimizer (no step, no thread). ``snakemake``: imports
Snakemake, builds its command-line parser (which collects the plugins) and
imports the modules the workflow's common.smk imports. Then it forks one child
per request. The child becomes what ``python SCRIPT ARGS...`` (job) or
``python -m snakemake ARGS...`` (snakemake) would have been: the request's
working folder, environment and umask, ``sys.argv`` and ``sys.path`` as the
interpreter sets them, its stdout and stderr in files, stdin /dev/null, the
global generators seeded as a fresh interpreter seeds them, and the script or
Snakemake's main run as ``__main__`` would; it exits as a fresh process does
(SystemExit's status, an uncaught exception's traceback and status 1, the
threads joined, atexit, stdio flushed), less the teardown of the modules.
Signals sent to the child's pid reach it itself.

Protocol, one JSON object a line: requests on the server's stdin
``{"argv": [SCRIPT or "-m", ARG...], "cwd": ..., "env": {...}, "umask": N or
null, "stdout": PATH, "stderr": PATH}``; replies on its stdout: ``{"ready":
...}`` once warm, then per request ``{"pid": N}`` once forked and ``{"pid": N,
"returncode": R, "cpu_seconds": S}`` once it ended (R as subprocess gives it:
-9 for SIGKILL). One child at a time. The server ends at end of input, and
dies with its parent (PR_SET_PDEATHSIG), as its children die with it.

``ForkServer`` is the test side: ``run`` (as ``subprocess.run`` with
``capture_output=True, text=True``) and ``popen`` (a ``Popen``-like handle).
It refuses a command whose start the warm-up would change (``usable``): a
training job in another numerics mode or environment than the one torch was
imported in; a Snakemake start with another Snakefile than the repository's
(the warm-up imported its library from the repository), or with another value
of a variable Snakemake's plugins read when imported (``FROZEN_AT_IMPORT``).
Those start fresh.

``serve_jobs`` (``JobServer``) serves the launcher of tests/job_launcher/,
several jobs at once: kind "train" the training jobs (``job_refusal``), kind
"scripts" the `script:` jobs of the workflow's analysis rules, whose warm-up
imports Snakemake's script preamble and the reporting library with pandas,
scipy and matplotlib (``script_refusal``: only the scripts Snakemake writes
for the repository's own workflow/scripts, with the thread, matplotlib and
path variables of the warm-up).

What a fork cannot make fresh: the str hash seed (PYTHONHASHSEED) is the
server's for every child, and modules the warm-up imported are not imported
again. tests/test_fork_server.py compares forked and fresh starts of both
kinds, and the kill tests keep a fresh process for their reference run, so
the bytes of fresh and forked jobs are compared too.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import json
import os
import random
import re
import runpy
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow" / "scripts"
SNAKEFILE = REPO / "Snakefile"
KINDS = ("job", "snakemake")
SNAKEFILE_OPTIONS = ("-s", "--snakefile")
# c10's default_rng_seed_val: torch builds that seed the default generator with
# a constant use this one; others (torch 2.13 here) draw a seed per process.
TORCH_FIXED_SEED = 67280421310721
PR_SET_PDEATHSIG = 1
# What the workflow's common.smk imports (the config check, the grid, the outputs).
PLANNING_MODULES = (
    "optbench.grid",
    "optbench.planning.settings",
    "optbench.planning.commands",
    "optbench.planning.cost",
    "optbench.planning.gpus",
    "optbench.planning.jobs",
    "optbench.planning.recovery",
    "optbench.planning.studies",
    "optbench.reporting.outputs",
    "optbench.reporting.analysis_context",
)
# Variables that the Snakemake warm-up's imports read and keep: the Slurm
# plugin runs `scontrol show config` (SLURM_CONF) and looks for sacct and
# squeue on PATH when imported; the paths and the hash seed shape any import.
FROZEN_AT_IMPORT = ("SLURM_CONF", "PATH", "PYTHONPATH", "PYTHONHASHSEED", "HOME")


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent ends (Linux), so nothing outlives the tests."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent ended before prctl took effect
        os._exit(1)


# ---- the server -------------------------------------------------------------


def warm_up_job() -> dict:
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


# What the analysis jobs of the workflow's `script:` rules import (plot,
# summarize, explore, write_columnar, record_study) besides what Snakemake's
# preamble unpickles: pandas, scipy and matplotlib (Agg) come with them.
ANALYSIS_MODULES = (
    "optbench.joblog",
    "optbench.runfiles",
    "optbench.planning.studies",
    "optbench.reporting.analysis",
    "optbench.reporting.answer",
    "optbench.reporting.columnar",
    "optbench.reporting.explorer",
    "optbench.reporting.figures",
    "optbench.reporting.job_columnar",
    "optbench.reporting.outputs",
    "optbench.reporting.scaling",
    "optbench.reporting.summary",
    "optbench.reporting.tablepages",
)


def warm_up_scripts() -> dict:
    """Import what Snakemake's preamble of a `script:` job and the workflow's
    analysis scripts import; draw nothing."""
    import importlib

    import snakemake.io
    import snakemake.iocontainers
    import snakemake.logging
    import snakemake.script  # noqa: F401

    sys.path.insert(0, str(SCRIPTS))
    for name in ANALYSIS_MODULES:
        importlib.import_module(name)
    return {}


def warm_up_snakemake() -> dict:
    """Do once what every `snakemake` start repeats before it reads a Snakefile:
    import Snakemake, build its command-line parser (which collects every
    installed plugin and imports the report modules), import smart_open (its
    path handling) and the modules common.smk imports, and read torch's
    catalogue of classes from its source (cached). A module missing here only
    makes a slower child."""
    import importlib

    import snakemake.cli

    snakemake.cli.get_argument_parser()
    added = str(SCRIPTS) not in sys.path
    if added:
        sys.path.insert(0, str(SCRIPTS))
    try:
        for name in ("smart_open", *PLANNING_MODULES):
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
        with contextlib.suppress(ImportError):
            from optbench.planning import torch_catalog

            torch_catalog.load()
    finally:
        # A fresh `python -m snakemake` has no such entry: common.smk adds it.
        if added:
            sys.path.remove(str(SCRIPTS))
    return {}


WARM_UPS = {"job": warm_up_job, "snakemake": warm_up_snakemake}


# Threads that may run while the server forks: jemalloc's background purger
# (pyarrow's allocator, which pandas imports for Snakemake's Slurm plugin)
# takes jemalloc's own locks, which jemalloc's fork handlers hold across fork.
FORK_SAFE_THREADS = ("jemalloc_bg_thd",)


def unsafe_threads() -> list[str]:
    """The names of this process's OS threads besides this one that make a fork
    unsafe: a fork copies the locks another thread may hold (torch's intra-op
    pool, OpenMP, a Python thread), but not that thread."""
    names = []
    for task in os.listdir("/proc/self/task"):
        if int(task) != threading.get_native_id():
            with contextlib.suppress(OSError):
                names.append(Path(f"/proc/self/task/{task}/comm").read_text().strip())
    return [name for name in names if name not in FORK_SAFE_THREADS]


def fresh_start_state(kind: str, start: dict) -> None:
    """Seed the global generators as a fresh interpreter does, so that identical
    forks cannot hide a resume that leans on its start-up state."""
    random.seed()  # from os.urandom, as at import
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()  # from the OS's entropy, as at import
    if kind == "job":
        import torch

        if start["torch_fixed_seed"]:
            torch.default_generator.set_state(start["torch_state"])
        else:
            torch.default_generator.seed()  # a seed of its own, as each fresh process draws


def become_child(kind: str, request: dict, start: dict, server_pid: int, server_path: list):
    """In the forked child: turn into the command the request names, run it and exit."""
    die_with_parent(server_pid)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if request.get("umask") is not None:
        os.umask(request["umask"])
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    fresh_start_state(kind, start)
    if kind == "job":
        exit_as_the_interpreter_does(lambda: run_script(request["argv"], server_path))
    exit_as_the_interpreter_does(lambda: run_snakemake(request["argv"][2:], server_path))


def run_script(argv: list[str], server_path: list[str]) -> None:
    """``python SCRIPT ARGS...``: a fresh interpreter puts the script's folder
    first on the path; the rest as here."""
    sys.argv = list(argv)
    sys.path[:] = [str(Path(argv[0]).parent), *server_path[1:]]
    runpy.run_path(argv[0], run_name="__main__")


def run_snakemake(args: list[str], server_path: list[str]) -> None:
    """``python -m snakemake ARGS...``: argv[0] the module's file, the working
    folder first on the path."""
    import snakemake.cli

    sys.argv = [str(Path(snakemake.__file__).parent / "__main__.py"), *args]
    sys.path[:] = [os.getcwd(), *server_path[1:]]
    snakemake.cli.main()


def exit_as_the_interpreter_does(run) -> None:
    """``run()`` as a program's main, then exit as the interpreter would:
    SystemExit's status, an uncaught exception's traceback and status 1."""
    try:
        run()
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


def serve(parent_pid: int, kind: str) -> int:
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
    start = WARM_UPS[kind]()
    if kind == "snakemake":
        # Importing Snakemake appends to sys.path, as it does in a fresh start.
        server_path = list(sys.path)
    unsafe = unsafe_threads()
    python_threads = threading.active_count()
    ready = {"ready": os.getpid(), "unsafe_threads": unsafe, "python_threads": python_threads}
    replies.write(json.dumps(ready) + "\n")
    if unsafe or python_threads != 1:
        return 1  # the client refuses it (its reply names the threads)
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
            become_child(kind, request, start, server_pid, server_path)  # never returns
        replies.write(json.dumps({"pid": pid}) + "\n")
        _, status, usage = os.wait4(pid, 0)
        ended = {"pid": pid, "returncode": os.waitstatus_to_exitcode(status)}
        ended["cpu_seconds"] = usage.ru_utime + usage.ru_stime
        replies.write(json.dumps(ended) + "\n")
    return 0


# ---- the training-job server that Snakemake's jobs reach ---------------------
#
# The suite's Snakemake starts (conftest's ``snakemake``) run training jobs as
# the workflow's rules say: `python .../workflow/scripts/train.py ...`. With
# OPTBENCH_TEST_JOB_SERVER set to this server's socket, that interpreter's
# sitecustomize (tests/job_launcher/) hands its command, folder, environment,
# umask and its stdin/stdout/stderr to this server, which forks the job from a
# warm copy of torch; the launcher relays signals to the job and ends as the
# job ends (its exit status, or the same signal). A job the warm-up would
# start differently (``job_refusal``) runs in the launcher itself, as usual.

# The variables torch and its libraries read when imported: a job whose
# environment differs in any of them starts fresh.
TORCH_VARIABLE_PREFIXES = (
    "ATEN_",
    "CUBLAS",
    "CUDA",
    "DNNL",
    "KMP_",
    "MKL",
    "NVIDIA",
    "OMP_",
    "ONEDNN",
    "OPENBLAS",
    "PYTORCH",
    "TORCH",
)
TRAIN_SCRIPT = SCRIPTS / "train.py"


def torch_variables(env: dict, set_by_import: dict | None = None) -> dict:
    """The variables of ``env`` that steer torch, less those equal to what
    torch's own import sets (``set_by_import``): a job whose environment holds
    one of those starts as one without it."""
    set_by_import = set_by_import or {}
    return {
        key: value
        for key, value in env.items()
        if key.startswith(TORCH_VARIABLE_PREFIXES) and set_by_import.get(key) != value
    }


def job_refusal(
    argv: list[str],
    env: dict,
    server_env: dict,
    script: Path = TRAIN_SCRIPT,
    set_by_import: dict | None = None,
) -> str:
    """Why the job ``argv`` (SCRIPT, ARG...) cannot be forked from the warm-up
    ("" if it can): only ``script`` is (the warm-up imported its library).
    ``server_env``: the server's environment before its warm-up;
    ``set_by_import``: what the warm-up's imports added to it (torch._dynamo
    sets TORCHINDUCTOR_CACHE_DIR, so every process that has built a torch
    optimizer has it, the suite's workers included)."""
    from optbench.engines import numerics

    if Path(argv[0]).resolve() != Path(script).resolve():
        return f"not {script}: {argv[0]}"
    if "SLURM_JOB_ID" in env:
        return "a job that Slurm runs stays in its allocation"
    if numerics.mode_from_argv(argv[1:]) != numerics.DEFAULT_MODE:
        return "another numerics mode than the warm-up's"
    if torch_variables(env, set_by_import) != torch_variables(server_env, set_by_import):
        return "another environment for torch than the warm-up's"
    for name in FROZEN_AT_IMPORT:
        if env.get(name) != server_env.get(name):
            return f"another {name} than the warm-up's"
    return ""


# The thread counts Snakemake's shell sets for a job (ONE_THREAD_JOB): the
# analysis warm-up's numpy sizes its BLAS thread pool from them when loaded,
# as torch's import does its own; matplotlib reads its MPL* variables.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
SCRIPT_PREAMBLE_FILE = re.compile(r"__real_file__ = __file__; __file__ = '([^']+)';")


def script_refusal(
    argv: list[str], cwd: str, env: dict, server_env: dict, scripts: Path = SCRIPTS
) -> str:
    """Why ``argv`` (SCRIPT, ARG...) started in ``cwd`` cannot be forked from
    the analysis warm-up ("" if it can): only the temporary script Snakemake
    writes for a `script:` job (``.snakemake/scripts/tmp*.py``) of one of
    ``scripts``, whose library the warm-up imported."""
    script = Path(cwd) / argv[0]
    if script.parent.parts[-2:] != (".snakemake", "scripts") or not script.name.startswith("tmp"):
        return f"not a script Snakemake wrote for a script: job: {argv[0]}"
    try:
        source = script.read_text()
    except OSError as error:
        return f"unreadable: {error}"
    named = SCRIPT_PREAMBLE_FILE.search(source)
    if named is None or Path(named.group(1)).resolve().parent != Path(scripts).resolve():
        return f"not a script of {scripts}"
    if "SLURM_JOB_ID" in env:
        return "a job that Slurm runs stays in its allocation"
    steering = [*THREAD_VARIABLES, *FROZEN_AT_IMPORT]
    changed = [name for name in steering if env.get(name) != server_env.get(name)]
    changed += [
        name
        for name in {*env, *server_env}
        if name.startswith("MPL") and env.get(name) != server_env.get(name)
    ]
    if changed:
        return f"the warm-up's imports read {sorted(changed)}, which this job changes"
    return ""


def become_job(
    kind: str, request: dict, fds: list[int], start: dict, server_pid: int, server_path: list
):
    """In the forked child: the job of a launcher, on its stdin/stdout/stderr."""
    die_with_parent(server_pid)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.umask(request["umask"])
    for fd, received in enumerate(fds):
        os.dup2(received, fd)
        os.close(received)
    fresh_start_state("job" if kind == "train" else "script", start)
    exit_as_the_interpreter_does(lambda: run_script(request["argv"], server_path))


def serve_jobs(parent_pid: int, socket_path: str, kind: str, target: str) -> int:
    """Fork a job per launcher connection, several at once, until stdin ends.
    ``kind`` "train": training jobs of the script ``target``; "scripts": the
    `script:` jobs of the workflow's scripts in the folder ``target``."""
    import socket

    die_with_parent(parent_pid)
    server_path = list(sys.path)
    requests = os.fdopen(os.dup(0), "rb", buffering=0)
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    # The environment the server was started with: torch's import adds to it.
    server_env = dict(os.environ)
    if kind == "train":
        start = warm_up_job()
        set_by_import = {k: v for k, v in os.environ.items() if server_env.get(k) != v}

        def refusal_of(request: dict) -> str:
            argv, env = request["argv"], request["env"]
            return job_refusal(argv, env, server_env, Path(target), set_by_import)

    else:
        start = warm_up_scripts()

        def refusal_of(request: dict) -> str:
            argv, cwd, env = request["argv"], request["cwd"], request["env"]
            return script_refusal(argv, cwd, env, server_env, Path(target))

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(socket_path)
    os.chmod(socket_path, 0o600)
    listener.listen(64)
    unsafe = unsafe_threads()
    python_threads = threading.active_count()
    ready = {"ready": os.getpid(), "unsafe_threads": unsafe, "python_threads": python_threads}
    replies.write(json.dumps(ready) + "\n")
    if unsafe or python_threads != 1:
        return 1
    gc.collect()
    gc.freeze()
    gc.disable()
    running: dict[int, socket.socket] = {}  # job pid -> its launcher's connection
    while True:
        watched = [listener, requests, *running.values()]
        readable = select.select(watched, [], [], 0.05)[0]
        if requests in readable and not requests.read(4096):
            break  # the suite is done
        if listener in readable:
            connection, _ = listener.accept()
            message, fds, _, _ = socket.recv_fds(connection, 1 << 22, 3)
            request = json.loads(message)
            refusal = refusal_of(request)
            if request.get("executable") != sys.executable:
                refusal = f"another interpreter than the server's: {request.get('executable')}"
            if refusal or len(fds) != 3:
                for fd in fds:
                    os.close(fd)
                connection.send(json.dumps({"refused": refusal or "no stdio"}).encode())
                connection.close()
            else:
                server_pid = os.getpid()
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    requests.close()
                    replies.close()
                    for other in running.values():
                        other.close()
                    connection.close()
                    gc.enable()
                    become_job(kind, request, fds, start, server_pid, server_path)  # never returns
                for fd in fds:
                    os.close(fd)
                connection.send(json.dumps({"pid": pid}).encode())
                running[pid] = connection
        for pid, connection in list(running.items()):
            # The launcher went away (killed): its job goes too, as a killed
            # process group would take it.
            if connection in readable and not connection.recv(4096):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        while running:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            connection = running.pop(pid, None)
            if connection is not None:
                with contextlib.suppress(OSError):
                    connection.send(
                        json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode()
                    )
                connection.close()
    for pid in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return 0


class JobServer:
    """The test side of ``serve_jobs``: started in ``folder`` (its socket and log);
    ``environment`` makes a Snakemake start's jobs reach it. ``kind`` "train":
    the training jobs of ``target`` (a train.py); "scripts": the `script:` jobs
    of the scripts in ``target`` (a folder)."""

    def __init__(
        self,
        folder: Path,
        start_timeout: float = 300,
        target: Path = TRAIN_SCRIPT,
        kind: str = "train",
    ):
        self.folder = Path(folder)
        self.socket = self.folder / "jobs.socket"
        self._log = self.folder / "server.log"
        self.variable = LAUNCHER_VARIABLES[kind]
        command = [sys.executable, __file__, str(os.getpid()), "jobs", str(self.socket), kind]
        with open(self._log, "w") as log:
            self.process = subprocess.Popen(
                [*command, str(target)],
                env=os.environ | ONE_THREAD_JOB,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        source = self.process.stdout.fileno()
        line = b""
        deadline = time.monotonic() + start_timeout
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            if not select.select([source], [], [], max(0.0, deadline - time.monotonic()))[0]:
                break
            chunk = os.read(source, 65536)
            if not chunk:
                break
            line += chunk
        ready = json.loads(line) if line.endswith(b"\n") else None
        if ready is None or ready["unsafe_threads"] or ready["python_threads"] != 1:
            self.close()
            raise ForkServerError(
                f"the job server is not ready to fork ({ready}); its log:\n"
                f"{self._log.read_text()[-3000:]}"
            )

    def environment(self, env: dict) -> dict:
        return env | {self.variable: str(self.socket)}

    def close(self) -> None:
        """End the server (end of input; it kills the jobs still running) and wait for it."""
        end_server(self.process)


def end_server(process: subprocess.Popen) -> None:
    """Close a server's input (its signal to end), wait a minute, else kill it."""
    with contextlib.suppress(OSError):
        process.stdin.close()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.stdout.close()


# The variable that names a server's socket to the launcher, by kind of job.
LAUNCHER_VARIABLES = {"train": "OPTBENCH_TEST_JOB_SERVER", "scripts": "OPTBENCH_TEST_SCRIPT_SERVER"}
# What Snakemake's shell adds to the environment of a job of one thread
# (snakemake/shell.py): the servers import torch or numpy with it, as such a
# job does.
ONE_THREAD_JOB = {name: "1" for name in THREAD_VARIABLES}
# The folder whose sitecustomize hands a training job to the server: on the
# PYTHONPATH of the suite's processes (conftest).
LAUNCHER_PATH = Path(__file__).resolve().parent / "job_launcher"


# ---- the test side ----------------------------------------------------------


class ForkServerError(RuntimeError):
    """The fork server could not start, refused a command, or died."""


class Forked:
    """A child forked by the server, handled as a ``subprocess.Popen``."""

    def __init__(self, server: ForkServer, args: list, pid: int):
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


class ForkServer:
    """A server of ``kind`` (KINDS), started in ``folder`` (its log and the
    children's output files); a Snakemake server forks the starts of
    ``snakefile`` only."""

    def __init__(
        self, folder: Path, kind: str = "job", start_timeout: float = 300, snakefile=SNAKEFILE
    ):
        if kind not in KINDS:
            raise ValueError(f"unknown fork server kind {kind!r}: one of {KINDS}")
        self.folder, self.kind = Path(folder), kind
        # snakemake: the only Snakefile whose starts it forks (the warm-up
        # imported the repository's library, which that Snakefile imports).
        self.snakefile = Path(snakefile).resolve()
        self.cpu_seconds = 0.0  # of the forked children, as the server reaped them
        self.running = None
        self.started = 0
        self._pending = b""
        self._log = self.folder / "server.log"
        # The environment the warm-up's imports read: a command asking for
        # another one must start fresh.
        self.environment = dict(os.environ)
        with open(self._log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, __file__, str(os.getpid()), kind],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        ready = self._message(start_timeout)
        if ready is None or ready["unsafe_threads"] or ready["python_threads"] != 1:
            self.close()
            raise ForkServerError(
                f"the fork server is not ready to fork ({ready}: the warm-up must start no "
                f"thread but {FORK_SAFE_THREADS}); its log:\n{self._log.read_text()[-3000:]}"
            )

    def popen(
        self, args: list, stdout=None, stderr=None, *, cwd=None, env=None, umask=None
    ) -> Forked:
        """Start ``args`` forked (refused unless ``usable``); its output goes to
        the files given (else to files of the server's folder). ``cwd`` and
        ``env``: as subprocess's (default: this process's); ``umask``: the
        child's (default: inherited)."""
        env = dict(os.environ if env is None else env)
        refusal = self.refusal(args, env)
        if refusal:
            raise ForkServerError(refusal + ": start it with subprocess")
        if self.running is not None:
            raise ForkServerError(f"one child at a time: {self.running.args} still runs")
        self.started += 1
        request = {
            "argv": [str(arg) for arg in args[1:]],
            "cwd": str(cwd if cwd is not None else os.getcwd()),
            "env": env,
            "umask": None if umask is None or umask < 0 else umask,
            "stdout": str(stdout or self.folder / f"{self.started}.stdout"),
            "stderr": str(stderr or self.folder / f"{self.started}.stderr"),
        }
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()
        forked = self._message(timeout=60)
        if forked is None:
            raise ForkServerError("the fork server did not fork within 60 s")
        self.running = Forked(self, list(args), forked["pid"])
        return self.running

    def run(self, args: list, timeout: float, **options) -> subprocess.CompletedProcess:
        """As ``subprocess.run(args, capture_output=True, text=True, timeout=...)``;
        ``options``: popen's ``cwd``, ``env``, ``umask``."""
        stdout = self.folder / f"{self.started + 1}.stdout"
        stderr = self.folder / f"{self.started + 1}.stderr"
        child = self.popen(args, stdout, stderr, **options)
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise
        finally:
            outputs = [path.read_text() if path.exists() else "" for path in (stdout, stderr)]
            for path in (stdout, stderr):
                path.unlink(missing_ok=True)
        return subprocess.CompletedProcess(list(args), child.returncode, *outputs)

    def usable(self, args: list, env: dict | None = None) -> bool:
        """Whether ``args`` (with ``env``, default this process's) would start
        as it starts fresh."""
        return not self.refusal(args, dict(os.environ if env is None else env))

    def refusal(self, args: list, env: dict) -> str:
        """Why ``args`` cannot be forked by this server ("" if it can)."""
        args = [str(arg) for arg in args]
        if self.kind == "job":
            return self._job_refusal(args, env)
        if args[:3] != [sys.executable, "-m", "snakemake"]:
            return f"this server runs [sys.executable, -m, snakemake, ARG...] only, got {args[:3]}"
        snakefiles = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in SNAKEFILE_OPTIONS]
        if not snakefiles or any(Path(path).resolve() != self.snakefile for path in snakefiles):
            return f"the warm-up imported the library of {self.snakefile}, not of {snakefiles}"
        changed = [name for name in FROZEN_AT_IMPORT if env.get(name) != self.environment.get(name)]
        if changed:
            return f"the warm-up's imports read {changed}, which this start changes"
        return ""

    def _job_refusal(self, args: list, env: dict) -> str:
        if len(args) < 2 or args[0] != sys.executable or not args[1].endswith(".py"):
            return f"this fork server runs [sys.executable, SCRIPT.py, ARG...] only, got {args[:3]}"
        from optbench.engines import numerics

        changed = {
            name: env.get(name)
            for name in numerics.STEERING_VARIABLES
            if env.get(name) != self.environment.get(name)
        }
        mode = numerics.mode_from_argv(args[2:])
        if mode != numerics.DEFAULT_MODE or changed:
            return (
                f"the fork server imported torch in numerics {numerics.DEFAULT_MODE} with the "
                f"environment of its start; this job asks for numerics {mode} "
                f"(environment changed since: {changed})"
            )
        return ""

    def close(self) -> None:
        """End the server (end of input) and wait for it; kill a child still running."""
        if self.running is not None and self.running.poll() is None:
            self.running.kill()
            self.running.wait()
        end_server(self.process)

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
    if sys.argv[2] == "jobs":
        sys.exit(serve_jobs(int(sys.argv[1]), *sys.argv[3:6]))
    sys.exit(serve(int(sys.argv[1]), sys.argv[2]))
