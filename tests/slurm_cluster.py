"""A real, single-node Slurm cluster on loopback, for the cluster tests.

Debian's ``slurm-wlm`` and ``munge`` are installed with apt when missing; then
munged, slurmctld and slurmd are started in the foreground as child processes
with a private configuration (``SLURM_CONF``) under a temporary directory, and
stopped by PID afterwards, also when a test fails. The node ``localhost`` has
two modelled GPUs: ``gres.conf`` points at character devices made with mknod,
so ``--gpus=1`` is scheduled for real and sets ``CUDA_VISIBLE_DEVICES`` in the
job. Accounting is off, so every Slurm job is also written to a job
completion file (``jobcomp/filetxt``), Slurm's own record of what it ran.

Needs root (the daemons, mknod, apt) and apt; the fixture skips with the reason
otherwise. Every external command runs under ``timeout -k``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
GPUS = 2
CPUS = 4
# Several seconds above the plugin's first status check (1 s in the tests), so
# finished jobs stay visible to squeue, the status command used without sacct.
MIN_JOB_AGE = 30


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


def unavailable_reason() -> str | None:
    """Why a cluster cannot be started here, or None."""
    if sys.platform != "linux":
        return "the Slurm cluster tests need Linux"
    if os.geteuid() != 0:
        return "the Slurm cluster tests start slurmctld/slurmd and need root"
    if shutil.which("timeout") is None:
        return "coreutils timeout is missing"
    installed = all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "munged", "sbatch"))
    if not installed and shutil.which("apt-get") is None:
        return "slurm-wlm/munge are not installed and apt-get is unavailable to install them"
    return None


def install() -> None:
    """apt-get install slurm-wlm munge, once; an update first when the index is stale."""
    if all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "munged", "sbatch")):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ("apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES)
    if run(300, *command, env=env, check=False).returncode != 0:
        run(300, "apt-get", "update", "-q", env=env)
        run(300, *command, env=env)


class Cluster:
    """One munged + slurmctld + slurmd on 127.0.0.1, configured under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "etc" / "slurm.conf"
        self.jobcomp = root / "jobcomp.txt"
        self.processes: list[subprocess.Popen] = []
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    # -- set-up -----------------------------------------------------------------

    def write_config(self) -> None:
        etc, dev = self.root / "etc", self.root / "dev"
        for folder in (etc, dev, self.root / "state", self.root / "spool", self.root / "log"):
            folder.mkdir(parents=True, exist_ok=True)
        for index in range(GPUS):
            device = dev / f"gpu{index}"
            if not device.exists():
                # Same numbers as /dev/null: a real character device, harmless to open.
                os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))
        memory = 4000
        self.conf.write_text(
            f"""\
ClusterName=optbench-test
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
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
SlurmctldParameters=enable_configless
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory={memory} Gres=gpu:{GPUS} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
        )
        (etc / "gres.conf").write_text(
            f"NodeName=localhost Name=gpu File={dev}/gpu[0-{GPUS - 1}]\n"
        )

    def _spawn(self, *command: str, user: str | None = None) -> None:
        """Start a daemon in the foreground, as our child (so we know its PID)."""
        with open(self.root / "log" / f"{Path(command[0]).name}.out", "ab") as log:
            self.processes.append(
                subprocess.Popen(
                    command,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    user=user,
                    group=user,
                )
            )

    def _munge_works(self) -> bool:
        munge = subprocess.run(bounded(5, "munge", "-n"), capture_output=True)
        if munge.returncode != 0:
            return False
        return (
            subprocess.run(bounded(5, "unmunge"), input=munge.stdout, capture_output=True)
        ).returncode == 0

    def start_munge(self) -> None:
        if self._munge_works():
            return  # a munged is already running: use it
        for folder in ("/run/munge", "/var/lib/munge", "/var/log/munge"):
            Path(folder).mkdir(parents=True, exist_ok=True)
            shutil.chown(folder, "munge", "munge")
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            run(30, "mungekey", "--create", "--keyfile", str(key))
            shutil.chown(key, "munge", "munge")
            key.chmod(0o400)
        self._spawn("/usr/sbin/munged", "--foreground", user="munge")
        self._wait("munged", self._munge_works)

    def start(self) -> None:
        self.write_config()
        self.start_munge()
        self._spawn("slurmctld", "-D", "-f", str(self.conf))
        pinged = lambda: self.command(5, "scontrol", "ping", check=False).returncode == 0  # noqa: E731
        self._wait("slurmctld", pinged)
        # Configless: slurmd fetches the configuration from slurmctld and keeps
        # it in /run/slurm/conf, where srun inside a job finds it (the jobstep
        # plugin drops SLURM_CONF from the job's environment).
        self._spawn("slurmd", "-D", "-N", "localhost", "--conf-server", "127.0.0.1")
        self._wait("slurmd", lambda: self.node_state() in {"idle", "mixed", "allocated"})

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

    def wait_idle(self, seconds: float = 30) -> None:
        """Until no job is queued or running (between tests)."""
        self._wait(
            "an empty queue",
            lambda: self.command(5, "squeue", "-h", check=False).stdout.strip() == "",
            seconds,
        )

    def logs(self) -> str:
        texts = []
        for path in sorted((self.root / "log").glob("*")):
            texts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(texts)

    # -- tear-down ----------------------------------------------------------------

    def stop(self) -> None:
        """TERM each daemon we started (newest first) by its PID, KILL if it lingers."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
        self.processes.clear()
