"""Shared helpers: the repository's paths and a way to run snakemake on it."""

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fork_server
import pytest

from optbench.engines import numerics

# Tests that train in this process compare bits, so they run in the portable
# mode, pinned before anything imports torch (its libraries read the pins
# then): the suite's pinned bytes then hold on any x86-64 CPU with AVX2.
# Subprocesses inherit these variables; tests of the native mode remove them.
numerics.pin("portable")

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
CONFIGS = Path(__file__).resolve().parent / "configs"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
TRAIN_SCRIPT = REPO / "workflow" / "scripts" / "train.py"
TINY_UMASK = 0o002


def snakemake_command(
    workdir, *args, configfile=None, snakefile=SNAKEFILE, study="config"
) -> list[str]:
    """The command line of snakemake on the repository's Snakefile in ``workdir``.

    With a ``configfile``, the run is the study ``study`` (config key study):
    by default the default study, whose outputs are under results/ as the tests
    read them (each test has a workdir of its own); None: the config file's
    stem, as a user's run (tests/test_studies.py)."""
    command = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(workdir)]
    args = list(args)
    if configfile is not None:
        command += ["--configfile", str(configfile)]
        if study is not None:
            # One --config option: a second would replace the first.
            if "--config" in args:
                args.insert(args.index("--config") + 1, f"study={study}")
            else:
                args += ["--config", f"study={study}"]
    return command + args


def snakemake(
    workdir,
    *args,
    configfile=None,
    check=True,
    timeout=600,
    umask=-1,
    snakefile=SNAKEFILE,
    study="config",
    env=None,
):
    """Run snakemake on the repository's Snakefile in ``workdir``; returns the process.

    ``env``: its environment (and its jobs'), by default this process's. The
    start is forked from this worker's Snakemake fork server where the server
    can make it as a fresh one (``snakemake_starts``), else a fresh process."""
    command = snakemake_command(
        workdir, *args, configfile=configfile, snakefile=snakefile, study=study
    )
    server = _SNAKEMAKE_SERVER.get("server")
    job_servers = [_SNAKEMAKE_SERVER.get(kind) for kind in ("jobs", "scripts")]
    if server is not None:
        env = dict(os.environ if env is None else env)
        for each in job_servers:
            env = each.environment(env)
    if server is not None and server.usable(command, env):
        process = server.run(command, timeout, env=env, umask=umask)
    else:
        process = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, umask=umask, env=env
        )
    if check and process.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {process.returncode}\n"
            f"stdout:\n{process.stdout[-4000:]}\nstderr:\n{process.stderr[-6000:]}"
        )
    return process


def training_job(command, *, timeout=600, check=False) -> subprocess.CompletedProcess:
    """``command`` (``[python, train.py, ARG...]``) run as Snakemake runs a
    training job of one thread: in this process's environment plus the thread
    variables Snakemake's shell sets, output captured as text. Forked from this
    worker's job server where the server can make it as a fresh start would be
    (``snakemake_starts``; a fresh job spends about 2 s of CPU importing torch),
    else a fresh process. Tests of a job's own start (threads, simulated hosts,
    signals) start it themselves."""
    env = os.environ | fork_server.ONE_THREAD_JOB
    jobs = _SNAKEMAKE_SERVER.get("jobs")
    if jobs is not None:
        env = jobs.environment(env)
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        env=env,
    )


def wait_for_one_of(children) -> tuple[int, int]:
    """(pid, wait status) of the first of ``children`` to end.

    Only these pids are reaped: os.wait() would also reap a child that some other
    test left behind (a Popen whose own wait() then finds nothing), and return a
    pid that is not ours.
    """
    while True:
        for pid in children:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return done, status
        time.sleep(0.01)


def snakemake_main_status(argv: list[str]) -> int:
    """In a forked child: Snakemake's main on ``argv`` (the command line after
    `python -m snakemake`), its exit status, stdio flushed."""
    import snakemake.cli

    # The command line as a fresh `python -m snakemake` has it: common.smk
    # reads sys.argv (a --report is refused early).
    sys.argv = [snakemake.__file__, *argv]
    try:
        snakemake.cli.main(argv)
        code = 0
    except SystemExit as stop:
        code = fork_server.exit_status(stop.code)
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def snakemake_forked(runs: dict, scratch: Path, parallel: int = 2, umask: int = -1) -> dict:
    """``{key: (workdir, args)}`` -> ``{key: CompletedProcess}``: snakemake's command
    line run in children forked from this process, at most ``parallel`` at a time.

    For long tables of refused configurations (docs/bad-input.md): the parent
    imports Snakemake and warms it up once (fork_server.warm_up_snakemake), so each row
    costs its own parsing and checks, not Snakemake's start-up (a row took
    2.5 s as a fresh process, 0.65 s of CPU forked cold, 0.12 s forked warm).
    Children are forked from the main thread only, write their output to files
    in ``scratch`` and never return into pytest (os._exit); ``umask``: theirs
    (-1: this process's), as subprocess.run's. (One run at a time goes to the
    worker's Snakemake fork server instead: ``snakemake``.)
    """

    fork_server.warm_up_snakemake()
    pending = list(enumerate(runs.items()))
    running: dict[int, tuple] = {}
    done = {}
    while pending or running:
        while pending and len(running) < parallel:
            index, (key, (workdir, args)) = pending.pop(0)
            argv = snakemake_command(workdir, *args)[3:]  # after "python -m snakemake"
            out, err = scratch / f"{index}.out", scratch / f"{index}.err"
            pid = os.fork()
            if pid == 0:  # the child: snakemake's main, then exit without returning
                code = 1
                try:
                    if umask >= 0:
                        os.umask(umask)
                    for fd, path in ((1, out), (2, err)):
                        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
                    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
                    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
                    code = snakemake_main_status(argv)
                finally:
                    os._exit(code)
            running[pid] = (key, argv, out, err)
        pid, status = wait_for_one_of(running)
        key, argv, out, err = running.pop(pid)
        done[key] = subprocess.CompletedProcess(
            argv, os.waitstatus_to_exitcode(status), out.read_text(), err.read_text()
        )
    return done


class ForkedSnakemake:
    """snakemake started in the background as a child forked from this
    warmed-up process, in a session and process group of its own (as a
    terminal's foreground job), its output in the file ``output_path``: what
    subprocess.Popen(..., start_new_session=True) gives, without Snakemake's
    start-up. Ctrl-C (SIGINT) raises KeyboardInterrupt in it, as in a fresh
    interpreter started from a terminal, whatever this process does with
    SIGINT (a test run started in the background by a non-interactive shell,
    `cmd &` as some CI runners do, inherits SIGINT ignored, and the Ctrl-C a
    test sends would be lost). The handle offers Popen's pid, poll(),
    wait(timeout) and send_signal()."""

    def __init__(self, workdir, *args, output_path, configfile=None, study="config"):

        fork_server.warm_up_snakemake()
        command = snakemake_command(workdir, *args, configfile=configfile, study=study)
        argv = command[3:]  # after "python -m snakemake"
        self.args, self.output_path, self.returncode = command, str(output_path), None
        # Made before the fork: the file exists once the constructor returns.
        output = os.open(self.output_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        pid = os.fork()
        if pid == 0:  # the child: snakemake's main, then exit without returning
            code = 1
            try:
                os.setsid()
                signal.signal(signal.SIGINT, signal.default_int_handler)
                for fd in (1, 2):
                    os.dup2(output, fd)
                # Line-buffered: the test reads the file while snakemake runs.
                sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
                sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
                code = snakemake_main_status(argv)
            finally:
                os._exit(code)
        os.close(output)
        self.pid = pid

    def poll(self):
        if self.returncode is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, sig):
        if self.poll() is None:
            os.kill(self.pid, sig)


def planned_jobs(process) -> dict[str, int]:
    """Job counts per rule (and 'total') from the 'Job stats' table of a dry run.

    {} only where Snakemake says "Nothing to be done"; any other output, or a
    table not in the expected shape (header, rule rows, a total that is their
    sum), fails loudly, so that a change of Snakemake's format cannot make
    `planned_jobs(...) == {}` pass by accident.
    """
    text = process.stdout + process.stderr
    if "Job stats:" not in text:
        if "Nothing to be done" in text:
            return {}
        raise AssertionError(f"no 'Job stats:' table in the dry run's output:\n{text[-3000:]}")
    lines = text.split("Job stats:", 1)[1].splitlines()
    header_ok = len(lines) > 3 and lines[1].split() == ["job", "count"]
    if not header_ok or set(lines[2].replace(" ", "")) != {"-"}:
        raise AssertionError(f"unexpected 'Job stats' header:\n{chr(10).join(lines[:4])}")
    counts: dict[str, int] = {}
    for line in lines[3:]:
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            raise AssertionError(f"unexpected row {line!r} before the 'total' row of Job stats")
        if fields[0] == "total":
            if int(fields[1]) != sum(counts.values()):
                raise AssertionError(f"Job stats total {fields[1]} is not the sum of {counts}")
            return counts | {"total": int(fields[1])}
        counts[fields[0]] = int(fields[1])
    raise AssertionError("the 'Job stats' table has no 'total' row")


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def run_tsvs(workdir: Path) -> dict[str, bytes]:
    """The bytes of every run TSV under ``workdir``/results/runs, by relative path."""
    files = tree_bytes(workdir / "results" / "runs")
    return {name: data for name, data in files.items() if name.endswith(".tsv")}


# The workflow's start caches (optbench.planning.disk_cache), and what other
# programs the suite starts keep in the user's folders: Snakemake's source
# cache and matplotlib's font cache (XDG_CACHE_HOME), Chromium's crash reports
# and dconf, matplotlib's config folder (XDG_CONFIG_HOME), and the folders
# that Snakemake, Chromium and torch's inductor make in /tmp and leave (TMPDIR).
_PRIVATE_VARIABLES = {
    "OPTBENCH_CACHE": "optbench",
    "XDG_CACHE_HOME": "cache",
    "XDG_CONFIG_HOME": "config",
    "TMPDIR": "tmp",
}
_PRIVATE_FOLDER: dict = {}


def pytest_configure(config):
    """What the suite's processes would cache or configure in the user's home
    goes to a temporary folder of this run, removed at the end: the suite
    leaves nothing in ~/.cache, ~/.config or /tmp (collection already reads
    torch's catalogue). Set before xdist starts its workers, which inherit it
    and share it. pytest's own folders (tmp_path) stay where pytest keeps
    them, /tmp/pytest-of-USER: this process has read the system's temporary
    folder before TMPDIR changes (mkdtemp; tempfile keeps it), and xdist hands
    each worker a folder under this process's."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    folder = Path(tempfile.mkdtemp(prefix="optbench-test-"))
    _PRIVATE_FOLDER["folder"] = folder
    _PRIVATE_FOLDER["previous"] = {name: os.environ.get(name) for name in _PRIVATE_VARIABLES}
    for name, subfolder in _PRIVATE_VARIABLES.items():
        (folder / subfolder).mkdir()  # TMPDIR must exist, or tempfile passes it over
        os.environ[name] = str(folder / subfolder)


def pytest_unconfigure(config):
    if "folder" not in _PRIVATE_FOLDER:
        return
    shutil.rmtree(_PRIVATE_FOLDER.pop("folder"), ignore_errors=True)
    for name, previous in _PRIVATE_FOLDER.pop("previous").items():
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def pytest_xdist_auto_num_workers(config):
    """`--numprocesses=auto` (pyproject.toml): one worker more than the machine
    has cores (--maxprocesses caps it). A worker often waits: on its training
    jobs' and Snakemake's subprocesses, on Slurm's scheduling and status
    checks, on the browser, on a shared run another worker is making; a third
    worker on 2 cores fills those waits (.ci/run: 12 min 10 s of pytest with
    2 workers, 10 min 11-43 s with 3)."""
    return (os.cpu_count() or 1) + 1


def pytest_xdist_make_scheduler(config, log):
    """Longest units of work first, a few long tests on their own (tests/scheduling.py)."""
    if config.getoption("dist") == "loadfile":
        import scheduling

        return scheduling.make_scheduler(config, log)
    return None


# This worker's servers, once snakemake_starts has started them.
_SNAKEMAKE_SERVER: dict = {}


@pytest.fixture(scope="session", autouse=True)
def snakemake_starts(no_stray_slurm_lookup, tmp_path_factory):
    """The `snakemake` starts of ``snakemake`` forked from a server that imported
    Snakemake and the workflow's library once, their training jobs forked
    from one that imported torch once, and their `script:` jobs (summaries,
    figures, explorer) from one that imported pandas, scipy and matplotlib
    once (tests/fork_server.py): a fresh Snakemake start spends about 1.5 s of
    CPU on its imports, a fresh training job about 2 s and a fresh analysis
    job about 1.3 s, and the suite makes a few hundred of them. The job
    launcher (tests/job_launcher/) goes on the PYTHONPATH of every process the
    tests start, and acts only where ``snakemake`` names the job servers.
    OPTBENCH_FRESH_SNAKEMAKE=1 starts everything fresh instead."""
    if os.environ.get("OPTBENCH_FRESH_SNAKEMAKE") == "1":
        yield None
        return
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(fork_server.LAUNCHER_PATH), *([previous] if previous else [])]
    )
    servers = []
    try:
        jobs = fork_server.JobServer(tmp_path_factory.mktemp("job-server"))
        servers.append(jobs)
        scripts = fork_server.JobServer(
            tmp_path_factory.mktemp("script-server"), target=fork_server.SCRIPTS, kind="scripts"
        )
        servers.append(scripts)
        server = fork_server.ForkServer(
            tmp_path_factory.mktemp("snakemake-fork-server"), "snakemake"
        )
        servers.append(server)
        _SNAKEMAKE_SERVER.update(server=server, jobs=jobs, scripts=scripts)
        yield server
    finally:
        _SNAKEMAKE_SERVER.clear()
        for each in reversed(servers):
            each.close()
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


@pytest.fixture(scope="session", autouse=True)
def no_stray_slurm_lookup():
    """Snakemake loads every installed executor plugin; the Slurm one runs
    `scontrol show config` on import, which waits 10 s for a controller when a
    Slurm client is installed without one (a workstation, a login node whose
    controller is down). Runs outside the suite's own cluster get an empty
    configuration, so scontrol fails at once."""
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = os.devnull
    yield
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous


@contextlib.contextmanager
def exclusive(lock_file: Path):
    """Hold an exclusive lock on ``lock_file`` (created if missing) for the block."""
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def made_once_per_session(tmp_path_factory, name: str, make) -> Path:
    """The folder ``name``, filled by ``make(folder)`` once per test session.

    Under pytest-xdist each worker has its own session fixtures, so a session
    fixture alone would make the folder once per worker. The folder lives
    instead in the temporary directory the workers share (the parent of each
    worker's own), under a lock: the first worker to ask makes it, the others
    wait for it and reuse it. A marker written after ``make`` returns tells a
    finished folder from one a failed attempt left half-made (made again)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # pytest-of-<user>/pytest-<n>/, above popen-gw<i>/
    folder, finished = base / name, base / f"{name}.finished"
    with exclusive(base / f"{name}.lock"):
        if not finished.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            finished.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory):
    """The tiny config run once per test session with four cores, shared by the
    xdist workers: read it or dry-run it, but copy it (copy_tree) before changing
    anything.

    Run under umask 002 (group-writable), which is neither the usual 022 nor the
    0600 of a private temporary file, so that file modes can be checked on it."""

    def run(workdir):
        snakemake(workdir, "--cores", "4", configfile=CONFIGS / "tiny.yaml", umask=TINY_UMASK)

    return made_once_per_session(tmp_path_factory, "tiny", run)


# Stand-ins for other CPUs (tests/test_numerics.py): an AVX2 laptop and an
# AVX-512 server, as environment variables that make the libraries take their
# code paths.
AVX2_HOST = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
AVX512_HOST = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_ENABLE_INSTRUCTIONS": "AVX512"}


def host_environment(host: dict) -> dict:
    """This process's environment without its numerics pins, plus a simulated host's variables."""
    kept = {k: v for k, v in os.environ.items() if k not in numerics.STEERING_VARIABLES}
    return kept | host


def run_default_command(workdir: Path, host: dict) -> Path:
    """README's first command under a simulated ``host``: config.yaml copied into
    ``workdir`` (as in a clone) and `snakemake --cores 2` there, no --configfile."""
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    snakemake(workdir, "--cores", "2", timeout=900, env=host_environment(host))
    return workdir


@pytest.fixture(scope="session")
def default_results(tmp_path_factory):
    """The default config (80 runs of 40 steps) run once per test session by the
    README's first command on the simulated AVX2 host, shared by the xdist
    workers (tests/test_workflow.py, tests/test_numerics.py): copy it before
    changing anything."""
    return made_once_per_session(
        tmp_path_factory, "default", lambda workdir: run_default_command(workdir, AVX2_HOST)
    )


def copy_tree(source: Path, target: Path) -> Path:
    subprocess.run(["cp", "-a", f"{source}/.", str(target)], check=True)
    return target
