"""The Snakemake fork server behind the suite's `snakemake` starts
(tests/fork_server.py, conftest's ``snakemake``): a forked start must be what
``python -m snakemake`` started fresh would be. (The training-job server is
checked the same way in tests/test_checkpoints.py.)"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import fork_server
import psutil
import pytest

from conftest import SNAKEFILE, snakemake_command

# A Snakefile that reports how its interpreter started, then does what its
# config asks: end, fail, or wait.
PROBE = """
import json, os, random, sys
umask = os.umask(0o022)
os.umask(umask)
main = sys.modules["__main__"]
facts = {"argv": sys.argv, "path": sys.path, "cwd": os.getcwd(), "umask": umask,
         "variable": os.environ.get("FORK_PROBE"), "random": random.random(),
         "pid": os.getpid()}
with open(config["facts"], "w") as handle:
    json.dump(facts, handle)
if config["mode"] == "raise":
    raise ValueError("raised on purpose")
if config["mode"] == "wait":
    import time
    time.sleep(600)

rule all:
    shell:
        "echo ran the rule"
"""


@pytest.fixture(scope="module")
def probe_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("probe")
    (folder / "Snakefile").write_text(PROBE)
    server = fork_server.ForkServer(
        tmp_path_factory.mktemp("probe-server"), "snakemake", snakefile=folder / "Snakefile"
    )
    yield server, folder / "Snakefile"
    server.close()
    assert server.process.returncode == 0, (server.folder / "server.log").read_text()


def probe_command(snakefile, workdir, facts, mode) -> list[str]:
    return snakemake_command(
        workdir, "--cores", "1", "--config", f"facts={facts}", f"mode={mode}", snakefile=snakefile
    )


def folder_name(start: str) -> str:
    return "start_" + start.replace(" ", "_")


def unnamed(argv: list[str]) -> list[str]:
    return [re.sub(r"/start_\w+", "/start_X", arg) for arg in argv]


def test_a_forked_snakemake_start_is_what_a_fresh_one_would_be(probe_server, tmp_path):
    server, snakefile = probe_server
    env = os.environ | {"FORK_PROBE": "given with the request"}
    outcomes, facts = {}, {}
    for start in ("fresh", "forked", "forked again"):
        workdir = tmp_path / folder_name(start)
        command = probe_command(snakefile, workdir, tmp_path / f"{workdir.name}.json", "end")
        if start == "fresh":
            outcome = subprocess.run(
                command, capture_output=True, text=True, env=env, umask=0o027, timeout=120
            )
        else:
            outcome = server.run(command, 120, env=env, umask=0o027)
        outcomes[start] = outcome
        facts[start] = json.loads((tmp_path / f"{workdir.name}.json").read_text())
    for start, outcome in outcomes.items():
        assert outcome.returncode == 0, outcome.stderr
        assert "ran the rule" in outcome.stdout + outcome.stderr, start
    fresh = facts["fresh"]
    for start in ("forked", "forked again"):
        seen = facts[start]
        assert seen["umask"] == fresh["umask"] == 0o027
        assert seen["variable"] == fresh["variable"] == "given with the request"
        assert seen["cwd"] == str(tmp_path / folder_name(start))
        assert fresh["cwd"] == str(tmp_path / folder_name("fresh"))
        # the command line (but the folder's name), and the import path, as fresh
        assert unnamed(seen["argv"]) == unnamed(fresh["argv"])
        assert seen["path"] == fresh["path"]
    # each child a process of its own, with Python's generator seeded afresh
    assert len({each["pid"] for each in facts.values()}) == 3
    assert len({each["random"] for each in facts.values()}) == 3
    assert server.usable(probe_command(snakefile, tmp_path, tmp_path / "x.json", "end"))


def test_a_failing_or_hung_forked_start_ends_as_a_fresh_one_would(probe_server, tmp_path):
    server, snakefile = probe_server
    command = probe_command(snakefile, tmp_path / "fail", tmp_path / "fail.json", "raise")
    fresh = subprocess.run(command, capture_output=True, text=True, timeout=120)
    forked = server.run(command, 120)
    assert fresh.returncode == forked.returncode == 1
    for outcome in (fresh, forked):
        assert "ValueError" in outcome.stderr and "raised on purpose" in outcome.stderr
    # a start that outlives its timeout is killed, as subprocess.run kills it,
    # and the server forks the next one
    hung = probe_command(snakefile, tmp_path / "wait", tmp_path / "wait.json", "wait")
    with pytest.raises(subprocess.TimeoutExpired):
        server.run(hung, 5)
    pid = json.loads((tmp_path / "wait.json").read_text())["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    again = server.run(probe_command(snakefile, tmp_path / "ok", tmp_path / "ok.json", "end"), 120)
    assert again.returncode == 0, again.stderr


def test_starts_the_warm_up_would_change_are_refused(probe_server, tmp_path):
    server, snakefile = probe_server
    command = probe_command(snakefile, tmp_path, tmp_path / "x.json", "end")
    assert server.usable(command)
    # another Snakefile (its library may differ from the one the warm-up imported)
    other = probe_command(SNAKEFILE, tmp_path, tmp_path / "x.json", "end")
    assert "not of" in server.refusal(other, dict(os.environ))
    # a variable the Slurm plugin reads when imported
    for name, value in (("SLURM_CONF", "/etc/slurm/slurm.conf"), ("PATH", "/nowhere")):
        changed = dict(os.environ) | {name: value}
        assert name in server.refusal(command, changed)
        with pytest.raises(fork_server.ForkServerError, match=name):
            server.run(command, 60, env=changed)
    # anything but `python -m snakemake`
    assert "only" in server.refusal([sys.executable, "train.py"], dict(os.environ))


def test_the_suites_snakemake_starts_are_forked(snakemake_starts, tmp_path):
    """conftest's ``snakemake`` sends a start of the repository's Snakefile to
    the worker's server (unless OPTBENCH_FRESH_SNAKEMAKE=1 asked for fresh ones)."""
    if snakemake_starts is None:
        pytest.skip("OPTBENCH_FRESH_SNAKEMAKE=1: every start is fresh")
    from conftest import CONFIGS, snakemake

    before = snakemake_starts.started
    process = snakemake(tmp_path, "-n", configfile=CONFIGS / "tiny.yaml")
    assert snakemake_starts.started == before + 1
    assert "training jobs to run" in process.stdout + process.stderr
    # a start under another Slurm configuration starts fresh
    env = dict(os.environ) | {"SLURM_CONF": "/nonexistent/slurm.conf"}
    snakemake(tmp_path, "-n", configfile=CONFIGS / "tiny.yaml", env=env)
    assert snakemake_starts.started == before + 1


# ---- the training-job launcher (tests/job_launcher/) and its server ----------

# Stands in for train.py (the launcher acts on a script of that name only):
# reports how it started, then does what its argument says.
JOB_PROBE = """
import json, os, signal, sys, time
umask = os.umask(0o022)
os.umask(umask)
facts = {"argv": sys.argv, "path": sys.path, "cwd": os.getcwd(), "umask": umask,
         "variable": os.environ.get("FORK_PROBE"), "pid": os.getpid(),
         "stdin": sys.stdin.read()}
with open(os.environ["PROBE_FACTS"], "w") as handle:
    json.dump(facts, handle)
print("to stdout", flush=True)
print("to stderr", file=sys.stderr, flush=True)
mode = sys.argv[1]
if mode == "wait":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(75))  # as a job saving its checkpoint
    time.sleep(600)
if mode == "die":
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "raise":
    raise ValueError("raised on purpose")
sys.exit(int(mode))
"""


@pytest.fixture(scope="module")
def job_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("job-probe")
    script = folder / "train.py"
    script.write_text(JOB_PROBE)
    # As conftest's snakemake_starts: the launcher on the path of every start.
    path = os.environ.get("PYTHONPATH", "")
    with pytest.MonkeyPatch.context() as patch:
        if str(fork_server.LAUNCHER_PATH) not in path.split(os.pathsep):
            patch.setenv(
                "PYTHONPATH", os.pathsep.join(filter(None, [str(fork_server.LAUNCHER_PATH), path]))
            )
        server = fork_server.JobServer(tmp_path_factory.mktemp("job-server"), target=script)
        yield server, script
        server.close()


def launched(script, facts, mode, env, **options) -> subprocess.Popen:
    """`python train.py MODE` as a Snakemake job starts it (output to pipes)."""
    env = fork_server.ONE_THREAD_JOB | env | {"PROBE_FACTS": str(facts)}
    return subprocess.Popen(
        [sys.executable, str(script), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **options,
    )


def wait_for_file(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size):
        assert time.monotonic() < deadline, f"{path} never came"
        time.sleep(0.05)
    time.sleep(0.1)  # written whole (json.dump, then close)
    return json.loads(path.read_text())


def test_a_launched_job_is_what_a_fresh_one_would_be(job_server, tmp_path):
    server, script = job_server
    env = os.environ | {"FORK_PROBE": "given to the job"}
    outcomes, facts = {}, {}
    for start, job_env in (("fresh", env), ("launched", server.environment(env))):
        path = tmp_path / f"{start}.json"
        process = launched(script, path, "3", job_env, cwd=tmp_path, umask=0o027)
        outcomes[start] = process.communicate("the job's stdin", timeout=120)
        outcomes[start] += (process.returncode,)
        facts[start] = json.loads(path.read_text())
        facts[start]["launcher"] = process.pid
    assert outcomes["launched"] == outcomes["fresh"] == ("to stdout\n", "to stderr\n", 3)
    fresh, seen = facts["fresh"], facts["launched"]
    for key in ("argv", "path", "cwd", "umask", "variable", "stdin"):
        assert seen[key] == fresh[key], key
    assert fresh["stdin"] == "the job's stdin" and fresh["umask"] == 0o027
    # the fresh job ran in its own process, the launched one in the server's child
    assert fresh["pid"] == fresh["launcher"] and seen["pid"] != seen["launcher"]
    for mode, expected in (("0", 0), ("raise", 1), ("die", -signal.SIGKILL)):
        process = launched(script, tmp_path / f"{mode}.json", mode, server.environment(env))
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == expected, (mode, stderr)
        if mode == "raise":
            assert "ValueError: raised on purpose" in stderr


def test_the_launcher_relays_signals_and_takes_its_job_when_killed(job_server, tmp_path):
    server, script = job_server
    env = server.environment(dict(os.environ))
    # SIGTERM to the launcher (as Snakemake or Slurm sends it) reaches the job,
    # whose exit status the launcher then takes.
    process = launched(script, tmp_path / "term.json", "wait", env)
    process.stdin.close()
    job = wait_for_file(tmp_path / "term.json")["pid"]
    assert job != process.pid
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert process.returncode == 75
    # SIGKILL to the launcher cannot be relayed: the server kills its job.
    process = launched(script, tmp_path / "kill.json", "wait", env)
    process.stdin.close()
    job = wait_for_file(tmp_path / "kill.json")["pid"]
    process.kill()
    process.wait(timeout=60)
    deadline = time.monotonic() + 30
    while psutil.pid_exists(job) and psutil.Process(job).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the job outlived its killed launcher"
        time.sleep(0.05)


def test_a_job_the_warm_up_would_start_differently_runs_in_the_launcher(job_server, tmp_path):
    """Another environment for torch (a simulated host), another numerics mode:
    the launcher runs the job itself, as a plain `python train.py`."""
    server, script = job_server
    env = server.environment(dict(os.environ))
    server_env = env | fork_server.ONE_THREAD_JOB
    assert fork_server.job_refusal([str(script), "0"], server_env, server_env, script) == ""
    for changed in (env | {"ATEN_CPU_CAPABILITY": "avx512"}, env | {"OPENBLAS_NUM_THREADS": "4"}):
        process = launched(script, tmp_path / "own.json", "0", changed)
        process.communicate(timeout=120)
        assert process.returncode == 0
        assert json.loads((tmp_path / "own.json").read_text())["pid"] == process.pid
    assert "numerics" in fork_server.job_refusal(
        [str(script), "--numerics", "native"], env, env, script
    )
    # What torch's own import sets (torch._dynamo: TORCHINDUCTOR_CACHE_DIR, in
    # every process that has built a torch optimizer) changes nothing; another
    # value for it does.
    import torch

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    imported = {"TORCHINDUCTOR_CACHE_DIR": os.environ["TORCHINDUCTOR_CACHE_DIR"]}
    bare = {k: v for k, v in server_env.items() if k not in imported}
    argv = [str(script), "0"]
    assert fork_server.job_refusal(argv, bare | imported, bare, script, imported) == ""
    elsewhere = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    assert "torch" in fork_server.job_refusal(argv, bare | elsewhere, bare, script, imported)
    assert "torch" in fork_server.job_refusal(argv, bare | imported, bare, script)
    process = launched(script, tmp_path / "worker.json", "0", env | imported)
    process.communicate(timeout=120)
    assert process.returncode == 0
    assert json.loads((tmp_path / "worker.json").read_text())["pid"] != process.pid
    # another interpreter than the server's (here the same binary by another
    # name, which a venv would make another environment) runs it itself
    other = tmp_path / "python-elsewhere"
    other.symlink_to(sys.executable)
    process = subprocess.Popen(
        [str(other), str(script), "0"],
        env=fork_server.ONE_THREAD_JOB | env | {"PROBE_FACTS": str(tmp_path / "other.json")},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.communicate(timeout=120)
    assert process.returncode == 0
    assert json.loads((tmp_path / "other.json").read_text())["pid"] == process.pid
    # and without a server the start goes on as usual
    gone = env | {server.variable: str(tmp_path / "no.socket")}
    process = launched(script, tmp_path / "alone.json", "0", gone)
    process.communicate(timeout=120)
    assert process.returncode == 0
    assert json.loads((tmp_path / "alone.json").read_text())["pid"] == process.pid


# ---- the analysis jobs' server (kind "scripts") ---------------------------------


@pytest.fixture(scope="module")
def script_server(tmp_path_factory):
    path = os.environ.get("PYTHONPATH", "")
    with pytest.MonkeyPatch.context() as patch:
        if str(fork_server.LAUNCHER_PATH) not in path.split(os.pathsep):
            patch.setenv(
                "PYTHONPATH", os.pathsep.join(filter(None, [str(fork_server.LAUNCHER_PATH), path]))
            )
        server = fork_server.JobServer(
            tmp_path_factory.mktemp("script-server"), target=fork_server.SCRIPTS, kind="scripts"
        )
        yield server
        server.close()


def snakemake_script(folder, of="plot.py"):
    """A probe written as Snakemake writes a `script:` job's script: in
    .snakemake/scripts/, named tmp*, its preamble naming the workflow's script."""
    scripts = folder / ".snakemake" / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    script = scripts / f"tmp4k2j9x.{of}"
    named = str(fork_server.SCRIPTS / of)
    script.write_text(f"__real_file__ = __file__; __file__ = {named!r};\n" + JOB_PROBE)
    return script


def test_a_script_job_is_forked_as_a_fresh_one_would_run(script_server, tmp_path):
    """The `script:` jobs of a forked Snakemake run (summaries, figures) reach the
    analysis server; what the job sees is what a fresh start would see."""
    script = snakemake_script(tmp_path)
    env = os.environ | {"FORK_PROBE": "given to the job"}
    outcomes, facts = {}, {}
    for start, job_env in (("fresh", env), ("launched", script_server.environment(env))):
        path = tmp_path / f"{start}.json"
        process = launched(script, path, "4", job_env, cwd=tmp_path, umask=0o027)
        outcomes[start] = process.communicate("stdin", timeout=120) + (process.returncode,)
        facts[start] = json.loads(path.read_text()) | {"launcher": process.pid}
    assert outcomes["launched"] == outcomes["fresh"] == ("to stdout\n", "to stderr\n", 4)
    fresh, seen = facts["fresh"], facts["launched"]
    for key in ("argv", "path", "cwd", "umask", "variable", "stdin"):
        assert seen[key] == fresh[key], key
    assert fresh["pid"] == fresh["launcher"] and seen["pid"] != seen["launcher"]
    # A start the warm-up's imports would see differently runs in its launcher:
    # matplotlib's backend, BLAS threads.
    for changed in ({"MPLBACKEND": "pdf"}, {"OPENBLAS_NUM_THREADS": "2"}):
        job_env = script_server.environment(env | changed)
        process = launched(script, tmp_path / "own.json", "0", job_env)
        process.communicate(timeout=120)
        assert process.returncode == 0
        assert json.loads((tmp_path / "own.json").read_text())["pid"] == process.pid, changed


def test_only_the_workflows_own_scripts_are_forked_by_the_analysis_server(tmp_path):
    same = fork_server.ONE_THREAD_JOB | {"PATH": "/bin"}
    script = snakemake_script(tmp_path)
    refusal = fork_server.script_refusal
    assert refusal([str(script)], "/", same, same) == ""
    # relative to the job's folder, as Snakemake may name it
    relative = str(script.relative_to(tmp_path))
    assert refusal([relative], str(tmp_path), same, same) == ""
    # a copy of the project's scripts (another library than the warm-up's)
    elsewhere = tmp_path / "copy"
    other = snakemake_script(elsewhere)
    other.write_text(other.read_text().replace(str(fork_server.SCRIPTS), str(elsewhere)))
    assert "not a script of" in refusal([str(other)], "/", same, same)
    # any other script, or one Slurm runs
    plain = tmp_path / "tmp_plain.py"
    plain.write_text(script.read_text())
    assert "not a script Snakemake wrote" in refusal([str(plain)], "/", same, same)
    slurm = same | {"SLURM_JOB_ID": "7"}
    assert "Slurm" in refusal([str(script)], "/", slurm, same)
    assert "HOME" in refusal([str(script)], "/", same | {"HOME": "/elsewhere"}, same)
