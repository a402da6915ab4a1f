"""A real, single-node Slurm cluster on loopback, for the cluster tests.

Opt-in (see ``opt_in``): a plain ``pytest`` neither installs packages nor
starts daemons. Opted in, a private munged, slurmctld and slurmd are started
in the foreground as child processes, everything they read or write under one
temporary directory: the configuration (``SLURM_CONF``; no configless mode,
which would leave ``/run/slurm/conf`` behind), munge's key, socket and seed
(``AuthInfo=socket=...``, so the system's munged and ``/etc/munge`` are not
used), state, spool, pid and log files. The two Slurm ports are free ports
picked at start, so the cluster runs beside another Slurm. ``stop`` cancels
what is still queued and ends each daemon by its PID, also when a test fails.

The node ``localhost`` has two modelled GPUs: ``gres.conf`` points at
character devices made with mknod, so ``--gpus=1`` is scheduled for real and
sets ``CUDA_VISIBLE_DEVICES`` in the job. Accounting is off, so every Slurm
job is also written to a job completion file (``jobcomp/filetxt``), Slurm's
own record of what it ran.

Needs root (the daemons, mknod). Every external command runs under
``timeout -k``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

OPT_IN = "OPTBENCH_SLURM_TESTS"
PACKAGES = ("slurm-wlm", "munge")
TOOLS = ("slurmctld", "slurmd", "munged", "sbatch", "srun", "scontrol")
GPUS = 2
CPUS = 4
# How long a finished job stays visible to squeue, the status command used
# without sacct. Above the plugin's longest wait between status checks: the
# wait grows by 10 s after every check that sees no job finish, up to 180 s,
# and a job gone from squeue counts as still running, for ever (at 30 s a
# 36-second job on a loaded machine was never seen to end, and its run hung
# until its timeout). Slurm's own default.
MIN_JOB_AGE = 300
START_ATTEMPTS = 3


def bounded(seconds: int, *command: str) -> list[str]:
    """``command`` under coreutils timeout: TERM after ``seconds``, KILL 5 s later."""
    return ["timeout", "-k", "5", str(seconds), *command]


def run(seconds: int, *command: str, env=None, check=True, **kwargs):
    process = subprocess.run(
        bounded(seconds, *command), env=env, capture_output=True, text=True, **kwargs
    )
    if check and process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {process.returncode}:\n{process.stdout}\n{process.stderr}"
        )
    return process


def opt_in(environ=None) -> str:
    """The opt-in mode: '' (off), 'run' (installed Slurm only) or 'install'.

    OPTBENCH_SLURM_TESTS unset, empty or 0: off. 1: run against slurm-wlm and
    munge as installed. install: apt-get install them first when missing.
    """
    value = (os.environ if environ is None else environ).get(OPT_IN, "").strip().lower()
    if value in ("", "0"):
        return ""
    if value == "1":
        return "run"
    if value == "install":
        return "install"
    raise ValueError(
        f"{OPT_IN}={value!r} is not understood. Fix: use {OPT_IN}=1 (run the cluster tests "
        f"with the installed slurm-wlm and munge), {OPT_IN}=install (apt-get install them "
        f"first when missing) or {OPT_IN}=0 (skip them)."
    )


def installed() -> bool:
    return all(shutil.which(tool) for tool in TOOLS)


def unavailable_reason(mode: str) -> str | None:
    """Why the cluster tests do not run here, or None."""
    if not mode:
        return (
            f"the Slurm cluster tests are opt-in: set {OPT_IN}=1 to run them with the "
            f"installed slurm-wlm and munge, or {OPT_IN}=install to let them apt-get install "
            "both first; they start a private munged/slurmctld/slurmd on free loopback ports "
            "(root needed) and stop them afterwards"
        )
    if sys.platform != "linux":
        return "the Slurm cluster tests need Linux"
    if os.geteuid() != 0:
        return "the Slurm cluster tests start slurmctld/slurmd and need root"
    if shutil.which("timeout") is None:
        return "coreutils timeout is missing"
    if not installed():
        if mode != "install":
            return (
                f"slurm-wlm/munge are not installed; install them, or set {OPT_IN}=install "
                "to let the tests apt-get install them"
            )
        if shutil.which("apt-get") is None:
            return "slurm-wlm/munge are not installed and apt-get is unavailable to install them"
    return None


def install() -> None:
    """apt-get install slurm-wlm munge, once; an update first when the index is stale."""
    if installed():
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ("apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES)
    if run(300, *command, env=env, check=False).returncode != 0:
        run(300, "apt-get", "update", "-q", env=env)
        run(300, *command, env=env)


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that are free now (held open together)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Cluster:
    """One munged + slurmctld + slurmd on 127.0.0.1, everything under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "etc" / "slurm.conf"
        self.jobcomp = root / "jobcomp.txt"
        self.munge_socket = root / "munge" / "munge.socket"
        self.ctld_port = self.slurmd_port = 0
        self.processes: list[subprocess.Popen] = []
        # Jobs get PATH through sbatch --export=ALL, and so the srun wrapper.
        self.env = {
            **os.environ,
            "SLURM_CONF": str(self.conf),
            "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    # -- set-up -----------------------------------------------------------------

    def write_config(self) -> None:
        etc, dev = self.root / "etc", self.root / "dev"
        for folder in ("etc", "dev", "state", "spool", "log", "bin", "munge"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        for index in range(GPUS):
            device = dev / f"gpu{index}"
            if not device.exists():
                # Same numbers as /dev/null: a real character device, harmless to open.
                os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        memory = 4000
        self.conf.write_text(
            f"""\
ClusterName=optbench-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd.pid
SlurmctldLogFile={self.root}/log/slurmctld.log
SlurmdLogFile={self.root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
MinJobAge={MIN_JOB_AGE}
ReturnToService=2
MpiDefault=none
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory={memory} Gres=gpu:{GPUS} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
        )
        (etc / "gres.conf").write_text(
            f"NodeName=localhost Name=gpu File={dev}/gpu[0-{GPUS - 1}]\n"
        )
        # snakemake-executor-plugin-slurm-jobstep drops every SLURM_* variable
        # before it calls srun inside a job, so srun would look for
        # /etc/slurm/slurm.conf; this wrapper, first on the jobs' PATH, gives
        # it the private configuration instead.
        srun = self.root / "bin" / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {shutil.which("srun")} "$@"\n')
        srun.chmod(0o755)

    def _spawn(self, *command: str) -> None:
        """Start a daemon in the foreground, as our child (so we know its PID)."""
        with open(self.root / "log" / f"{Path(command[0]).name}.out", "ab") as log:
            self.processes.append(
                subprocess.Popen(
                    command,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def _munge_works(self) -> bool:
        socket_option = f"--socket={self.munge_socket}"
        munge = subprocess.run(bounded(5, "munge", "-n", socket_option), capture_output=True)
        if munge.returncode != 0:
            return False
        unmunge = subprocess.run(
            bounded(5, "unmunge", socket_option), input=munge.stdout, capture_output=True
        )
        return unmunge.returncode == 0

    def start_munge(self) -> None:
        folder = self.munge_socket.parent
        key = folder / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            key.chmod(0o400)
        # --force: munged wants every directory above its socket searchable by
        # all users; pytest's temporary root is private (0700), and every
        # client here runs as root anyway.
        self._spawn(
            shutil.which("munged"),
            "--foreground",
            "--force",
            f"--socket={self.munge_socket}",
            f"--key-file={key}",
            f"--pid-file={folder / 'munged.pid'}",
            f"--seed-file={folder / 'munged.seed'}",
            f"--log-file={self.root / 'log' / 'munged.log'}",
        )
        self._wait("munged", self._munge_works)

    def start(self) -> None:
        """Start the three daemons; on a port taken meanwhile, again on other ports."""
        for attempt in range(1, START_ATTEMPTS + 1):
            self.ctld_port, self.slurmd_port = free_ports(2)
            self.write_config()
            try:
                if not self.processes:
                    self.start_munge()
                self._spawn(shutil.which("slurmctld"), "-D", "-f", str(self.conf))
                pinged = lambda: self.command(5, "scontrol", "ping", check=False).returncode == 0  # noqa: E731
                self._wait("slurmctld", pinged)
                self._spawn(shutil.which("slurmd"), "-D", "-N", "localhost", "-f", str(self.conf))
                self._wait("slurmd", lambda: self.node_state() in {"idle", "mixed", "allocated"})
                return
            except RuntimeError as error:
                if attempt == START_ATTEMPTS or "Address already in use" not in str(error):
                    raise
                self._stop_processes(self.processes[1:])  # keep munged
                del self.processes[1:]

    def _wait(self, what: str, ready, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if ready():
                return
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args} exited {process.returncode}\n{self.logs()}")
            time.sleep(0.2)
        raise RuntimeError(f"{what} did not become ready in {seconds} s\n{self.logs()}")

    # -- use --------------------------------------------------------------------

    def command(self, seconds: int, *command: str, check=True):
        return run(seconds, *command, env=self.env, check=check)

    def node_state(self) -> str:
        process = self.command(5, "sinfo", "-h", "-N", "-o", "%t", check=False)
        return process.stdout.strip().rstrip("*~#")

    def completed_jobs(self) -> list[dict[str, str]]:
        """Slurm's own record of every finished job (jobcomp/filetxt), oldest first."""
        if not self.jobcomp.exists():
            return []
        records = []
        for line in self.jobcomp.read_text().splitlines():
            fields = dict(field.split("=", 1) for field in line.split(" ") if "=" in field)
            if fields:
                records.append(fields)
        return records

    def queued(self) -> str:
        return self.command(5, "squeue", "-h", check=False).stdout.strip()

    def wait_idle(self, seconds: float = 30) -> None:
        """Until no job is queued or running (between tests)."""
        self._wait("an empty queue", lambda: self.queued() == "", seconds)

    def logs(self) -> str:
        texts = []
        for path in sorted((self.root / "log").glob("*")):
            texts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(texts)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    # -- tear-down ----------------------------------------------------------------

    @staticmethod
    def _stop_processes(processes) -> None:
        """TERM each process (newest first) by its PID, KILL if it lingers."""
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)

    def stop(self) -> None:
        """Cancel what is still queued (a job's slurmstepd outlives slurmd), then
        end the daemons we started."""
        if self.processes and self.processes[-1].poll() is None:
            user = pwd.getpwuid(os.geteuid()).pw_name
            self.command(10, "scancel", "--user", user, check=False)
            # the daemons go anyway; the leftover test reports stray job steps
            with contextlib.suppress(RuntimeError):
                self.wait_idle(15)
        self._stop_processes(self.processes)
        self.processes.clear()
