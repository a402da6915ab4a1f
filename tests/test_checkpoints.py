"""Checkpoints and resume (engines/checkpoints.py): a training job killed at any step
and started again writes the same bytes as a job never killed.

The jobs under test pack a stochastic problem (noisy_quadratic's fresh
mini-batches) and a tiny text_transformer with
optimizers whose state goes beyond weights: Adam under a warm-up-cosine
family, SGD with momentum under torch's StepLR, L-BFGS (closure), a
schedule-free AdamW (train/eval), Prodigy (its own step-size estimate), Muon
with parameter roles and a user's optimizer file. The reference is the same
job run once without interruption, as a fresh process; the kills come from
tests/kill_injection.py, and the killed and resumed starts are forked from a
warm server (tests/fork_server.py) to spare each start torch's imports:
the final bytes of forked starts are thus compared with those of a fresh one.
"""

import json
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import fork_server
import pytest
import torch

import test_training
from conftest import REPO, SCHEMA, TRAIN_SCRIPT, training_job
from optbench.engines import checkpoints
from optbench.planning import jobs, settings

KILL = Path(__file__).resolve().parent / "kill_injection.py"
PATTERNS = (
    "{problem}/{loss}/{optimizer}/{variant}/seed{seed}.tsv",
    "{problem}/{loss}/{optimizer}/{variant}/seed{seed}.json",
)
EVERY = 4  # checkpoint_every steps in these jobs
# Sidecar fields that measure this machine's time, not the run's numbers.
TIMED = ("train_seconds", "job_seconds_before_this_run", "step_timing")


OPTIMIZERS = {
    "adam": {
        "class": "Adam",
        "kwargs": {"lr": 0.01},
        "schedule": {"family": "warmup_cosine", "warmup": 0.2},
    },
    "sgd": {
        "class": "SGD",
        "kwargs": {"lr": 0.01, "momentum": 0.9},
        "schedule": {"class": "StepLR", "step_size": 3, "gamma": 0.5},
    },
    "lbfgs": {"class": "LBFGS", "kwargs": {"lr": 0.5}},
    "signum": {"class": "signum.Signum", "kwargs": {"lr": 0.01, "momentum": 0.9}},
    # From pytorch_optimizer, whose import costs each job start about 2.7 s:
    # a job of their own, killed fewer times.
    "schedule_free": {"class": "pytorch_optimizer.ScheduleFreeAdamW", "kwargs": {"lr": 0.01}},
    "prodigy": {"class": "pytorch_optimizer.Prodigy", "kwargs": {}},
    "muon": {
        "class": "pytorch_optimizer.Muon",
        "kwargs": {"lr": 0.02, "adamw_lr": 0.001},
        "groups": {"matrices": {"use_muon": True}, "others": {"use_muon": False}},
    },
}
SETS = {
    "torch": ("adam", "sgd", "lbfgs", "signum"),
    "packages": ("schedule_free", "prodigy", "muon"),
}


def config(optimizers_dir: Path, names) -> dict:
    shutil.copy(REPO / "optimizers" / "_template.py", optimizers_dir / "signum.py")
    return {
        "seeds": [0, 1],
        "steps": 10,
        "device": "cpu",
        "eval_every": 4,
        "problems": {
            "noisy_quadratic": {"kwargs": {"dim": 6, "heldout_samples": 50}},
            "text_transformer": {
                "kwargs": {"context": 8, "width": 8, "layers": 1, "batch_size": 4},
                "losses": ["ce"],
            },
        },
        "losses": {"mse": {"class": "MSELoss"}, "ce": {"class": "CrossEntropyLoss"}},
        "optimizers": {name: OPTIMIZERS[name] for name in names},
    }


@pytest.fixture(scope="module")
def jobs_of(tmp_path_factory):
    """optimizer set -> (optimizers folder, the job's grid)."""
    made = {}
    for name, optimizers in SETS.items():
        folder = tmp_path_factory.mktemp("optimizers")
        grid = settings.validate(config(folder, optimizers), SCHEMA, optimizers_dir=folder)
        made[name] = folder, grid
    return made


@pytest.fixture(scope="module")
def forked(tmp_path_factory):
    """Job starts forked from one warm server (tests/fork_server.py)."""
    server = fork_server.ForkServer(tmp_path_factory.mktemp("fork-server"), "job")
    yield server
    server.close()
    assert server.process.returncode == 0, (server.folder / "server.log").read_text()


def train(
    root: Path, job, engine: str, kill: tuple = (), starts=None
) -> subprocess.CompletedProcess:
    """The job started fresh (``python train.py``), or by ``starts`` (the fork server)."""
    folder, grid = job
    argument = jobs.argument(
        grid, grid.cells(), grid.all_seeds, *[str(root / pattern) for pattern in PATTERNS]
    )
    command = [sys.executable, *([str(KILL), *kill, "--"] if kill else [str(TRAIN_SCRIPT)])]
    command += ["--job", argument, "--engine", engine, "--optimizers-dir", str(folder)]
    command += ["--manifest", str(root / "manifest.tsv"), "--checkpoint-steps", str(EVERY)]
    if starts is not None:
        return starts.run(command, timeout=300)
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def written(root: Path) -> dict:
    """Every run file: TSVs and held-out tables as bytes, sidecars without timings."""
    found = {}
    for path in sorted(root.rglob("seed*")):
        name = str(path.relative_to(root))
        if path.suffix == ".tsv":
            found[name] = path.read_bytes()
        elif path.suffix == ".json":
            sidecar = json.loads(path.read_text())
            for key in TIMED:
                sidecar.pop(key)
            details = sidecar["engine_details"]
            details.pop("batch_seconds", None)
            details.get("verification", {}).pop("seconds", None)
            found[name] = sidecar
    return found


@pytest.fixture(scope="module")
def uninterrupted(jobs_of, tmp_path_factory):
    """(optimizer set, engine) -> the files of the job run once, never killed
    (made when a test first asks, so that one test alone runs one job)."""
    made = {}

    def files(optimizers, engine):
        if (optimizers, engine) not in made:
            root = tmp_path_factory.mktemp(f"uninterrupted-{optimizers}-{engine}")
            process = train(root, jobs_of[optimizers], engine)
            assert process.returncode == 0, process.stderr
            assert "checkpoint: saved" in process.stderr  # every EVERY steps
            assert not (root / "manifest.tsv.checkpoint").exists()  # removed at the end
            made[optimizers, engine] = written(root)
            # 2 problems x the set's optimizers x 2 seeds: TSV, sidecar and held-out table.
            assert len(made[optimizers, engine]) == 2 * len(SETS[optimizers]) * 2 * 3
        return made[optimizers, engine]

    return files


# SIGKILLs at random step boundaries, one of them during a checkpoint write,
# then SIGTERM; each start after the first resumes. 11 SIGKILLs per engine for
# the torch.optim and file optimizers, 7 for those of pytorch_optimizer. A start
# saves every EVERY boundaries and is killed 1 to EVERY boundaries after its
# 1st, 2nd or 3rd save, so the job moves on by 4-12 steps a start and the kills
# reach the runs of every optimizer (checked) but not the end of the job's
# 130-160 boundaries.
KILLS = {
    "torch": [("step", None)] * 4 + [("write", 2), ("signal", 2)] + [("step", None)] * 6,
    "packages": [("step", None)] * 3 + [("write", 2), ("signal", 2)] + [("step", None)] * 3,
}
# A start's log line for a run (or batched chunk) taken up half-way.
RESUMED_MID_RUN = re.compile(r"/(\w+)/\w+/seed\d+\.tsv resumed from step [1-9]")


def kill_point(chooser: random.Random) -> int:
    return EVERY * chooser.randint(1, 3) + chooser.randint(1, EVERY)


@pytest.mark.parametrize(
    "optimizers, engine", [("torch", "loop"), ("torch", "auto"), ("packages", "loop")]
)
def test_killed_jobs_resume_to_the_same_bytes(
    jobs_of, uninterrupted, forked, optimizers, engine, tmp_path
):
    job = jobs_of[optimizers]
    chooser = random.Random(f"kills-{optimizers}-{engine}")
    sigkills = 0
    resumed = set()  # the optimizers whose runs a start took up half-way
    for mode, at in KILLS[optimizers]:
        at = at or kill_point(chooser)
        process = train(tmp_path, job, engine, kill=(mode, str(at)), starts=forked)
        log = process.stderr
        resumed.update(RESUMED_MID_RUN.findall(log))
        if mode == "signal":
            assert process.returncode == checkpoints.EXIT_PREEMPTED, log[-3000:]
            assert "checkpoint: got SIGTERM; saving and stopping" in log
            saved = checkpoints.decode((tmp_path / "manifest.tsv.checkpoint").read_bytes())
            assert saved["partial"] is not None  # saved at the step boundary it reached
            continue
        # (0: the job ended before its kill; draw the kill points nearer.)
        assert process.returncode == -9, log[-3000:]
        sigkills += 1
        if mode == "write":
            # The half-written file never took the checkpoint's name: the
            # previous checkpoint is still there, whole, and the next start uses it.
            assert "SIGKILL during checkpoint write 2" in log
            assert list(tmp_path.glob(".manifest.tsv.checkpoint.*.part"))
            checkpoints.decode((tmp_path / "manifest.tsv.checkpoint").read_bytes())
        else:
            said = log.split("kill_injection: SIGKILL at step boundary ")[1]
            lost = int(said.split(", ")[1].split()[0])
            # Logged by the kill: what the next start must train again.
            print(f"{optimizers}/{engine}: SIGKILL at boundary {at}, {lost} step(s) per run redone")
            assert 1 <= lost <= EVERY
    assert sigkills == sum(mode != "signal" for mode, _ in KILLS[optimizers])
    final = train(tmp_path, job, engine, starts=forked)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "checkpoint: resuming from" in final.stderr
    assert "resumed from step" in final.stderr
    resumed.update(RESUMED_MID_RUN.findall(final.stderr))
    assert resumed == set(SETS[optimizers]), (
        f"the kills took up runs of {sorted(resumed)} half-way, not all of "
        f"{SETS[optimizers]}: draw kill points further apart (kill_point)"
    )
    assert not (tmp_path / "manifest.tsv.checkpoint").exists()
    assert written(tmp_path) == uninterrupted(optimizers, engine)
    # One timing per group and job: the starts after the first keep the timing
    # the checkpoint holds, so runs written by different starts carry the same.
    assert "group(s) keep the timing of the job's first start" in final.stderr
    timings = {}
    for sidecar in tmp_path.rglob("seed*.json"):
        group = sidecar.parent.relative_to(tmp_path)
        timings.setdefault(group, set()).add(
            json.dumps(json.loads(sidecar.read_text())["step_timing"])
        )
    assert timings and all(len(each) == 1 for each in timings.values()), timings


# ---- the checkpoint file, in process ----------------------------------------


class Log(list):
    def write(self, text):
        self.append(text)

    def flush(self):
        pass


def saved_job(path, key="a" * 64) -> checkpoints.JobCheckpoint:
    job = checkpoints.JobCheckpoint(path, key, checkpoints.Interval(steps=1))
    job.finished["unit"] = [{"result": {"losses": [1.0, 0.5]}}]
    job.save()
    return job


def loaded(path, key="a" * 64):
    log = Log()
    job = checkpoints.JobCheckpoint(path, key, checkpoints.Interval(steps=1), log)
    job.load()
    return job, "".join(log)


def test_a_checkpoint_of_these_settings_is_taken(tmp_path):
    saved_job(tmp_path / "c")
    job, log = loaded(tmp_path / "c")
    assert job.stored("unit") == [{"result": {"losses": [1.0, 0.5]}}]
    assert "checkpoint: resuming from" in log


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda data: data[: len(data) // 2], "does not match its header"),
        (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "does not match its header"),
        (lambda data: b"", "no header line"),
        (lambda data: b"PK\x03\x04" + data, "no header line"),
    ],
)
def test_a_truncated_or_corrupt_checkpoint_is_ignored_with_a_log_line(tmp_path, damage, reason):
    saved_job(tmp_path / "c")
    path = tmp_path / "c"
    path.write_bytes(damage(path.read_bytes()))
    job, log = loaded(path)
    assert job.finished == {} and job.partial is None
    assert f"checkpoint: ignored {path}: " in log and reason in log
    assert "the job starts from step 0" in log


def test_a_checkpoint_of_other_settings_is_ignored_with_a_log_line(tmp_path):
    saved_job(tmp_path / "c", key="a" * 64)
    job, log = loaded(tmp_path / "c", key="b" * 64)
    assert job.finished == {}
    assert "made for other settings" in log and "settings digest" in log


def test_the_job_key_follows_every_run_and_their_order():
    key = checkpoints.job_key(["x", "y"])
    assert key != checkpoints.job_key(["y", "x"]) and key != checkpoints.job_key(["x"])


def test_the_interval_is_due_after_its_steps_or_seconds():
    now = [0.0]
    job = checkpoints.JobCheckpoint("c", "k", checkpoints.Interval(3, 10.0), clock=lambda: now[0])
    due = []
    for _ in range(7):
        job.steps_since += 1
        due.append(job._due())
        if due[-1]:
            job.steps_since = 0
    assert due == [False, False, True, False, False, True, False]
    now[0] = 10.0
    assert job._due()  # 10 s since the last save, whatever the steps
    off = checkpoints.JobCheckpoint("c", "k", checkpoints.Interval(0, 0.0), clock=lambda: 1e9)
    off.steps_since = 10**6
    assert not off._due()


def test_an_optimizers_plain_attributes_and_generator_resume():
    """State some optimizers keep outside state_dict (a counter, a generator of
    their own) comes back too; without it their next steps would differ."""
    weights = torch.nn.Parameter(torch.ones(3))

    def make():
        optimizer = torch.optim.SGD([weights], lr=0.1)
        optimizer.calls = 0
        optimizer.noise = torch.Generator().manual_seed(0)
        return optimizer

    first = make()
    first.calls = 7
    torch.rand(5, generator=first.noise)
    saved = checkpoints.capture_optimizer(first)
    expected = torch.rand(3, generator=first.noise)
    second = make()
    checkpoints.restore_optimizer(second, saved)
    assert second.calls == 7
    assert torch.equal(torch.rand(3, generator=second.noise), expected)


# ---- config key checkpoint_every ---------------------------------------------


def grid_with(**extra):
    base = {
        "seeds": [0],
        "steps": 5,
        "optimizers": {"sgd": {"class": "SGD", "kwargs": {"lr": 0.1}}},
        "losses": {"mse": {"class": "MSELoss"}},
    }
    return settings.validate({**base, **extra}, SCHEMA)


def test_checkpoint_every_defaults_to_120_seconds_and_reaches_the_job_command():
    from optbench.planning import commands

    assert grid_with().checkpoint_every == (0, 120.0)
    assert grid_with(checkpoint_every={"steps": 500}).checkpoint_every == (500, 120.0)
    assert grid_with(checkpoint_every={"steps": 0, "seconds": 0}).checkpoint_every == (0, 0.0)
    made = commands.commands(
        "python", Path("s"), Path("p"), Path("o"), "auto", "portable", "{x}", [], "i", (500, 30.0)
    )
    for command in (made.train_packed, made.train_one_seed):
        assert "--checkpoint-steps 500 --checkpoint-seconds 30.0" in command


def test_a_misspelt_checkpoint_every_key_is_refused_naming_it():
    with pytest.raises(settings.ConfigError) as error:
        grid_with(checkpoint_every={"step": 5})
    assert "config key checkpoint_every: unknown key(s) 'step'" in str(error.value)
    assert "did you mean 'step' -> 'steps'" in str(error.value)


def signalled_job(tmp_path, signum, starts, *extra) -> tuple[int, list, str]:
    """One 20,000-step run by hand (--spec, no manifest), started by ``starts`` (the
    fork server), sent ``signum`` once it has trained 2,000 steps: its exit status,
    its command and its log."""
    runs = tmp_path / "runs"
    runs.mkdir(exist_ok=True)
    progress = tmp_path / "job.progress"
    command = [sys.executable, str(TRAIN_SCRIPT), "--spec", json.dumps(LONG_RUN)]
    command += ["--run", "0", str(runs / "seed0.tsv"), str(runs / "seed0.json"), *extra]
    log = tmp_path / "job.log"
    job = starts.popen([*command, "--progress", str(progress)], stderr=log)
    try:
        deadline = time.monotonic() + 120
        while job.poll() is None and time.monotonic() < deadline:
            if progress.exists() and json.loads(progress.read_text())["steps_done"] >= 2000:
                break
            time.sleep(0.05)
        assert job.poll() is None, f"the job ended before the signal:\n{log.read_text()}"
        job.send_signal(signum)
        returncode = job.wait(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    return returncode, command, log.read_text()


# Plain SGD on the linear problem (tests/test_training.py's spec), long enough to signal.
LONG_RUN = test_training.spec("sgd", "mse", steps=20000)


def test_sigusr1_saves_exits_75_and_the_retry_writes_the_uninterrupted_bytes(tmp_path, forked):
    """Slurm's warning signal (--signal=USR1@...) to a job with a checkpoint file:
    it saves, exits checkpoints.EXIT_PREEMPTED (75), and its next start resumes
    from the saved step and writes the TSV of a job never signalled."""
    reference = tmp_path / "reference"
    reference.mkdir()
    whole = training_job(
        [sys.executable, TRAIN_SCRIPT, "--spec", json.dumps(LONG_RUN), "--run", "0"]
        + [reference / "seed0.tsv", reference / "seed0.json"],
        timeout=300,
    )
    assert whole.returncode == 0, whole.stderr[-3000:]
    saved = tmp_path / "job.checkpoint"
    returncode, command, log = signalled_job(
        tmp_path, signal.SIGUSR1, forked, "--checkpoint", str(saved), "--checkpoint-seconds", "0"
    )
    assert returncode == checkpoints.EXIT_PREEMPTED == 75, log[-3000:]
    assert "got SIGUSR1; saving and stopping" in log and saved.exists()
    assert not (tmp_path / "runs" / "seed0.tsv").exists()
    retry = forked.run(command, timeout=300)
    assert retry.returncode == 0, retry.stderr[-3000:]
    step = int(retry.stderr.split("resumed from step ")[1].split()[0])
    assert 2000 <= step < 20000
    tsv = (tmp_path / "runs" / "seed0.tsv").read_bytes()
    assert tsv == (reference / "seed0.tsv").read_bytes()
    assert not saved.exists()  # removed once the files are written


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["TERM", "USR1"])
def test_a_job_without_a_checkpoint_file_stops_as_a_plain_process(tmp_path, forked, signum):
    """A job run by hand with neither --manifest nor --checkpoint has nowhere to
    save: a signal stops it at once with 128 + the signal (143 for SIGTERM)."""
    returncode, _, log = signalled_job(tmp_path, signum, forked)
    assert returncode == 128 + signum, log[-3000:]
    assert "checkpoint: saved" not in log
    assert sorted(p.name for p in tmp_path.rglob("*checkpoint*")) == []


# ---- the fork server the job starts above go through ------------------------

PROBE = """
import json, os, random, sys
import torch
print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "cwd": os.getcwd(),
                  "variable": os.environ.get("FORK_PROBE"), "torch_seed": torch.initial_seed(),
                  "random": random.random(), "threads": torch.get_num_threads()}), flush=True)
print("to stderr", file=sys.stderr)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), 9)
if sys.argv[1] == "raise":
    raise ValueError("raised on purpose")
sys.exit(int(sys.argv[1]))
"""


def test_a_forked_start_is_what_a_fresh_process_would_be(forked, tmp_path, monkeypatch):
    """Arguments, sys.path[0], folder, environment, output and exit status as
    ``python probe.py``; the generators seeded afresh in each child."""
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FORK_PROBE", "set after the server started")
    command = [sys.executable, str(probe)]
    fresh = subprocess.run([*command, "3"], capture_output=True, text=True, timeout=120)
    runs = {mode: forked.run([*command, mode], timeout=120) for mode in ("3", "0", "kill", "raise")}
    assert {mode: run.returncode for mode, run in runs.items()} == {
        "3": 3,
        "0": 0,
        "kill": -signal.SIGKILL,
        "raise": 1,
    }
    assert fresh.returncode == 3 and runs["3"].stderr == fresh.stderr == "to stderr\n"
    assert "ValueError: raised on purpose" in runs["raise"].stderr
    expected = json.loads(fresh.stdout)
    seen = {mode: json.loads(run.stdout) for mode, run in runs.items()}
    for key in ("argv", "path0", "cwd", "variable", "threads"):
        assert seen["3"][key] == expected[key], key
    # Each fresh interpreter draws torch's seed (torch 2.13) and Python's: so do
    # the children; a torch that seeds with its constant gets the constant.
    seeds = {child["torch_seed"] for child in seen.values()}
    if expected["torch_seed"] == fork_server.TORCH_FIXED_SEED:
        assert seeds == {fork_server.TORCH_FIXED_SEED}
    else:
        assert len(seeds) == len(seen)
    assert len({child["random"] for child in seen.values()}) == len(seen)
