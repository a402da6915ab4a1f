"""The training loop against an independent copy of the article's loop."""

import json
import math
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from conftest import TRAIN_SCRIPT, training_job
from optbench import problems
from optbench.engines import numerics, timing, training

OPTIMIZERS = {
    "sgd": ("SGD", {"lr": 0.1}),
    "momentum_sgd": ("SGD", {"lr": 0.1, "momentum": 0.9}),
    "adam": ("Adam", {"lr": 0.1, "betas": [0.9, 0.99], "eps": 1e-9}),
    "rmsprop": ("RMSprop", {}),
}
LOSSES = {"mse": "MSELoss", "l1": "L1Loss"}


def article_loop(seed, optimizer_factory, criterion, steps=40):
    """The blog post's loop as docs/reference-experiment.md describes it, after manual_seed."""
    torch.manual_seed(seed)
    net = torch.nn.Linear(in_features=20, out_features=20, bias=False)
    x = torch.randn(1, 20)
    w = torch.randn(1, 1)
    y = w * x + 2
    optimizer = optimizer_factory(net.parameters())
    history = []
    for _ in range(steps):
        optimizer.zero_grad()
        prediction = net(x)
        loss = criterion(prediction, y)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history


def article_tsv(losses, lr: float | None) -> bytes:
    """A run TSV as the file contract (README) spells it, written out here rather
    than by the code under test: a header, then step, repr(loss), the loss
    evaluations of the step (1 for the article's optimizers) and its learning
    rate (constant: no schedule; empty where the writer was given none)."""
    rate = "" if lr is None else repr(lr)
    rows = ["step\tloss\tevaluations\tlr"]
    rows += [f"{step}\t{float(value)!r}\t1\t{rate}" for step, value in enumerate(losses)]
    return ("\n".join(rows) + "\n").encode()


# The learning rate each article optimizer runs at (RMSprop's default).
ARTICLE_LRS = {"sgd": 0.1, "momentum_sgd": 0.1, "adam": 0.1, "rmsprop": 0.01}
ARTICLE_OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "momentum_sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=0.1, betas=(0.9, 0.99), eps=1e-9),
    "rmsprop": lambda p: torch.optim.RMSprop(p),
}
ARTICLE_LOSSES = {"mse": torch.nn.MSELoss(), "l1": torch.nn.L1Loss()}


JOB_RUN_LINE = re.compile(
    r"seed (\d+): final loss (\S+) after (\d+) steps, (\S+) s training, written to (\S+) and (\S+)"
)


TIMING_LINE = re.compile(
    r"timing: linear/(\w+)/(\w+) takes ([0-9.]+) us per step alone in the loop "
    r"\(median of 20, 1 thread\(s\)\)"
)
ENGINE_LINE = re.compile(r"engine (batched|loop): (\d+) run\(s\) of linear/(\w+)/(\w+)[ ;].*")
# A batch is verified: its variant's lowest seed re-trained in the loop, bit-identical.
VERIFIED_LINE = re.compile(
    r"verified: 1 of (\d+) batched run\(s\) re-trained in the per-run loop \(seed (\d+) "
    r"\(base\)\) in [0-9.]+ s, against [0-9.]+ s batched: bit-identical"
)


def assert_job_log(
    workdir,
    log,
    cells,
    seeds,
    steps,
    device="cpu",
    engine="batched",
    requested=None,
    manifest=None,
):
    """A training job's log says what ran: its cells ((loss, optimizer) pairs of
    the linear problem, base variants), its seeds, the device, the engine of
    each (loss, optimizer) group (a batched one verified against the loop), per
    run the final loss (the article loop's, exactly), time and files, in that
    order, then its manifest if it writes one."""
    # Progress lines come at most once a second, wherever a job is (optbench.progress).
    lines = [
        line
        for line in (workdir / log).read_text().splitlines()
        if not line.startswith("progress:")
    ]
    assert lines, f"{log} is empty"
    for line, (loss, optimizer) in zip(lines, cells, strict=False):
        assert line.startswith("cell: problem linear = linear(**{'dim': 20}), "), line
        assert f", loss {loss} = torch.nn." in line, line
        assert f", optimizer {optimizer} variant base = torch.optim." in line, line
        assert line.endswith(f", {steps} steps"), line
    rest = lines[len(cells) :]
    assert rest[0] == "runs: seeds " + " ".join(map(str, seeds))
    assert rest[1].startswith(f"training on {device} "), rest[1]
    assert f"device {requested or device} requested" in rest[1], rest[1]
    meta = json.loads(
        (
            workdir / f"results/runs/linear/{cells[0][0]}/{cells[0][1]}/base/seed{seeds[0]}.json"
        ).read_text()
    )
    assert rest[2] == numerics.describe(meta["numerics"]), rest[2]
    assert rest[2].startswith("numerics portable: ATEN_CPU_CAPABILITY=avx2 "), rest[2]
    rest = rest[3:]
    # Every (problem, loss, optimizer) is timed alone before any trains (engines/timing.py).
    for line, (loss, optimizer) in zip(rest, cells, strict=False):
        timed = TIMING_LINE.fullmatch(line)
        assert timed and timed.groups()[:2] == (loss, optimizer), line
        assert float(timed[3]) > 0
    rest = rest[len(cells) :]
    for loss, optimizer in cells:
        match = ENGINE_LINE.fullmatch(rest[0])
        assert match, rest[0]
        assert match.groups() == (engine, str(len(seeds)), loss, optimizer), rest[0]
        if engine == "batched":
            verified = VERIFIED_LINE.fullmatch(rest[1])
            assert verified, rest[1]
            assert verified.groups() == (str(len(seeds)), str(min(seeds))), rest[1]
            rest = rest[1:]
        for line, seed in zip(rest[1 : 1 + len(seeds)], seeds, strict=True):
            match = JOB_RUN_LINE.fullmatch(line)
            assert match, line
            losses = article_loop(seed, ARTICLE_OPTIMIZERS[optimizer], ARTICLE_LOSSES[loss], steps)
            assert (int(match[1]), match[2], int(match[3])) == (seed, repr(losses[-1]), steps)
            stem = f"results/runs/linear/{loss}/{optimizer}/base/seed{seed}"
            assert (match[5], match[6]) == (f"{stem}.tsv", f"{stem}.json")
            meta = json.loads((workdir / match[6]).read_text())
            assert float(match[4]) == meta["train_seconds"] > 0
            assert meta["engine"] == engine, meta["engine_reason"]
        rest = rest[1 + len(seeds) :]
    runs = len(cells) * len(seeds)
    if manifest:  # a packed job of a coarser scope lists what it wrote, last
        assert rest[0] == f"manifest: {manifest}", rest
        rest = rest[1:]
    done = rf"done: {runs} run\(s\) \({runs} trained, 0 reused\) in [0-9.]+ s"
    assert len(rest) == 1 and re.fullmatch(done, rest[0]), rest


def spec(optimizer="adam", loss="mse", steps=40, dim=20, device="cpu"):
    """A training job's spec for the reference problem, as settings.run_spec writes it."""
    cls, kwargs = OPTIMIZERS[optimizer]
    return {
        "problem": {
            "name": "linear",
            "problem": "linear",
            "kind": "regression",
            "kwargs": {"dim": dim},
        },
        "optimizer": {"name": optimizer, "class": cls, "kwargs": kwargs},
        "loss": {"name": loss, "class": LOSSES[loss], "kwargs": {}},
        "variant": "base",
        "steps": steps,
        "device": device,
        "problems_dir": "",
    }


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("seed", [0, 7, 123456])
def test_run_equals_article_loop_bit_for_bit(optimizer, loss, seed):
    expected = article_loop(seed, ARTICLE_OPTIMIZERS[optimizer], ARTICLE_LOSSES[loss])
    result = training.train_one(spec(optimizer, loss), seed, torch.device("cpu"))
    assert result.losses == expected  # exact float equality, every step
    assert len(result.losses) == 40


def test_step_zero_is_the_loss_of_the_initial_weights():
    torch.manual_seed(3)
    net = torch.nn.Linear(20, 20, bias=False)
    x = torch.randn(1, 20)
    y = torch.randn(1, 1) * x + 2
    initial = torch.nn.functional.mse_loss(net(x), y).item()
    assert training.train_one(spec("sgd"), 3, torch.device("cpu")).losses[0] == initial


def test_different_seeds_give_different_runs():
    a = training.train_one(spec(), 0, torch.device("cpu")).losses
    b = training.train_one(spec(), 1, torch.device("cpu")).losses
    assert a != b


class SlowOnceSGD(torch.optim.SGD):
    """SGD that sleeps ``SLEEP`` seconds in its step number ``SLOW_STEP`` (counted
    over the optimizer's life, so from the timing pass's warm-up on) and records how
    long the sleep really took in ``slept``: a load spike on a shared machine, planted."""

    SLEEP = 0.1
    SLOW_STEP = timing.WARM + 3  # the third step of the first timed burst
    slept: list[float] = []

    def __init__(self, params, lr=0.1):
        super().__init__(params, lr=lr)
        self.calls = 0

    def step(self, closure=None):
        self.calls += 1
        if self.calls == self.SLOW_STEP:
            started = time.perf_counter()
            time.sleep(self.SLEEP)
            SlowOnceSGD.slept.append(time.perf_counter() - started)
        return super().step(closure)


def test_one_slow_step_does_not_move_the_timed_seconds_per_step(monkeypatch):
    """The timing pass's step time is the median of its 20 timed steps, so one step
    slowed by 100 ms moves it by at most one rank: it stays a normal step's time
    (a fraction of a millisecond here), far below the slow step's share of a mean
    (100 ms / 20 = 5 ms), which a load spike would put into every time-to-target."""
    monkeypatch.setattr(SlowOnceSGD, "slept", [])
    slow = {**spec("sgd"), "optimizer": {"name": "slow", "class": SlowOnceSGD, "kwargs": {}}}
    (timed,) = timing.step_times([slow], torch.device("cpu"))
    assert len(SlowOnceSGD.slept) == 1  # the slow step was taken, and timed
    assert timed["timed_steps"] == timing.TIMED == 20
    # A mean would be at least the sleep's share, measured here: the median is far below.
    share_of_a_mean = SlowOnceSGD.slept[0] / timing.TIMED
    assert 0 < timed["seconds_per_step"] < share_of_a_mean / 2


# Each device path is tested on every machine: the no-GPU side by hiding the
# GPUs (in-process by making torch see none, in a job by CUDA_VISIBLE_DEVICES=""),
# the GPU side where one is visible, so a GPU machine skips nothing unreplaced.
needs_gpu = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a visible CUDA GPU; the no-GPU side runs here"
)


@pytest.fixture
def no_gpu_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_auto_device_without_gpu_is_cpu(no_gpu_visible):
    assert training.resolve_device("auto") == torch.device("cpu")


@needs_gpu
def test_auto_device_with_gpu_is_cuda():
    assert training.resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_gpu_fails_before_training(device, no_gpu_visible):
    with pytest.raises(
        training.RunError,
        match=f"config key device: '{device}' was asked for, but .*Fix: set device to auto or cpu",
    ):
        training.resolve_device(device)


@needs_gpu
def test_cuda_index_must_be_a_visible_gpu():
    count = torch.cuda.device_count()
    assert training.resolve_device("cuda") == torch.device("cuda")
    assert training.resolve_device(f"cuda:{count - 1}") == torch.device(f"cuda:{count - 1}")
    with pytest.raises(training.RunError, match=f"only {count} GPU\\(s\\) are visible"):
        training.resolve_device(f"cuda:{count}")


@needs_gpu
def test_gpu_run_starts_from_the_cpu_draws_and_follows_the_article():
    cpu = article_loop(4, ARTICLE_OPTIMIZERS["sgd"], ARTICLE_LOSSES["mse"])
    result = training.train_one(spec("sgd", "mse"), 4, torch.device("cuda"))
    # Same weights, x and y (drawn on the CPU generator); only the arithmetic differs.
    assert result.losses[0] == pytest.approx(cpu[0], rel=1e-6)
    assert result.losses == pytest.approx(cpu, rel=1e-4, abs=1e-7)


def run_cli(tmp_path, run_spec, seeds=(0,), env=None):
    command = [sys.executable, str(TRAIN_SCRIPT), "--spec", json.dumps(run_spec)]
    paths = []
    for seed in seeds:
        tsv, sidecar = tmp_path / f"seed{seed}.tsv", tmp_path / f"seed{seed}.json"
        command += ["--run", str(seed), str(tsv), str(sidecar)]
        paths.append((tsv, sidecar))
    if env is None:
        return training_job(command), paths
    return subprocess.run(command, capture_output=True, text=True, env=env), paths


def test_cli_writes_tsv_and_sidecar_and_rerun_is_byte_identical(tmp_path):
    process, [(tsv, sidecar)] = run_cli(tmp_path, spec("rmsprop", "l1", steps=12), seeds=(5,))
    assert process.returncode == 0, process.stderr
    first = tsv.read_bytes()
    lines = first.decode().splitlines()
    assert lines[0] == "step\tloss\tevaluations\tlr" and len(lines) == 13
    expected = article_loop(5, ARTICLE_OPTIMIZERS["rmsprop"], ARTICLE_LOSSES["l1"], steps=12)
    assert first == article_tsv(expected, ARTICLE_LRS["rmsprop"])
    meta = json.loads(sidecar.read_text())
    assert meta["seed"] == 5 and meta["device"] == "cpu" and meta["device_requested"] == "cpu"
    assert meta["torch_version"] == torch.__version__
    assert meta["optimizer"] == {"name": "rmsprop", "class": "RMSprop", "kwargs": {}}
    assert meta["cuda_built"] == torch.backends.cuda.is_built()
    assert meta["train_seconds"] > 0 and meta["first_nonfinite_step"] is None
    process, _ = run_cli(tmp_path, spec("rmsprop", "l1", steps=12), seeds=(5,))
    assert process.returncode == 0 and tsv.read_bytes() == first


def failing_at(real, call, error):
    """A method that raises ``error`` on its ``call``-th call (1-based), else runs ``real``."""
    calls = 0

    def method(self, *args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == call:
            raise error
        return real(self, *args, **kwargs)

    return method


@pytest.mark.parametrize("where", ["loss", "optimizer"])
def test_first_step_failure_names_the_entry_later_ones_are_not_blamed(monkeypatch, where):
    """A value torch refuses at first use names its config entry; the same
    error after the first step, or running out of memory, is not the config's."""
    target = (torch.nn.MSELoss, "forward") if where == "loss" else (torch.optim.SGD, "step")
    real = getattr(*target)
    kind, name = ("losses", "mse") if where == "loss" else ("optimizers", "sgd")
    monkeypatch.setattr(*target, failing_at(real, 1, ValueError("bad value.")))
    with pytest.raises(training.RunError) as error:
        training.train_one(spec("sgd", "mse", steps=3), 0, torch.device("cpu"))
    assert str(error.value).startswith(f"config key {kind}.{name}: ")
    assert "failed in the first training step: bad value. Fix the kwargs" in str(error.value)
    later = failing_at(real, 2, ValueError("later"))
    out_of_memory = failing_at(real, 1, torch.OutOfMemoryError("out of memory"))
    for failure in (later, out_of_memory):
        monkeypatch.setattr(*target, failure)
        with pytest.raises((ValueError, torch.OutOfMemoryError)) as error:
            training.train_one(spec("sgd", "mse", steps=3), 0, torch.device("cpu"))
        assert not isinstance(error.value, training.RunError)


def test_cli_bad_kwargs_fail_at_once_naming_the_entry(tmp_path):
    bad = spec("sgd")
    bad["optimizer"]["kwargs"] = {"lr": 0.1, "momentun": 0.9}
    process, [(tsv, sidecar)] = run_cli(tmp_path, bad)
    assert process.returncode == 2
    assert "config key optimizers.sgd" in process.stderr and "momentun" in process.stderr
    assert not tsv.exists() and not sidecar.exists()


def test_cli_cuda_on_cpu_machine_fails_clearly(tmp_path):
    hidden = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, on any machine
    process, [(tsv, _)] = run_cli(tmp_path, spec(device="cuda"), env=hidden)
    assert process.returncode == 2
    assert "config key device: 'cuda' was asked for" in process.stderr
    assert not tsv.exists()


@needs_gpu
def test_cli_trains_on_the_gpu_and_records_it(tmp_path):
    process, [(tsv, sidecar)] = run_cli(tmp_path, spec("sgd", "mse", device="cuda"), seeds=(2,))
    assert process.returncode == 0, process.stderr
    meta = json.loads(sidecar.read_text())
    assert (meta["device"], meta["device_requested"]) == ("cuda", "cuda")
    assert meta["device_name"] == torch.cuda.get_device_name(0)
    assert meta["cuda_available"] and meta["cuda_built"]
    assert f"training on cuda ({meta['device_name']})" in process.stderr
    losses = [float(line.split("\t")[1]) for line in tsv.read_text().splitlines()[1:]]
    cpu = article_loop(2, ARTICLE_OPTIMIZERS["sgd"], ARTICLE_LOSSES["mse"])
    assert losses == pytest.approx(cpu, rel=1e-4, abs=1e-7)


def test_cli_records_divergence(tmp_path):
    diverging = spec("sgd", "mse", steps=30)
    diverging["optimizer"]["kwargs"] = {"lr": 10.0}
    process, [(tsv, sidecar)] = run_cli(tmp_path, diverging)
    assert process.returncode == 0, process.stderr
    losses = article_loop(0, lambda p: torch.optim.SGD(p, lr=10.0), ARTICLE_LOSSES["mse"], 30)
    first_bad = next(step for step, value in enumerate(losses) if not math.isfinite(value))
    assert tsv.read_bytes() == article_tsv(losses, 10.0)
    assert json.loads(sidecar.read_text())["first_nonfinite_step"] == first_bad


def test_training_job_imports_no_heavy_library(tmp_path):
    """The job imports torch but not pandas, matplotlib, scipy or snakemake."""
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['train.py', '--spec', {json.dumps(json.dumps(spec(steps=3)))},"
        f" '--run', '0', {str(tmp_path / 'a.tsv')!r}, {str(tmp_path / 'a.json')!r}]\n"
        f"sys.path.insert(0, {str(TRAIN_SCRIPT.parent)!r})\n"
        "try:\n"
        f"    runpy.run_path({str(TRAIN_SCRIPT)!r}, run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = {'pandas', 'matplotlib', 'scipy', 'snakemake', 'jsonschema', 'yaml'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    process = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "a.tsv").exists()


@pytest.mark.parametrize("visible", [None, "0", "1,3", ""])
def test_environment_records_the_gpus_the_scheduler_gave(monkeypatch, visible):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert training.environment(torch.device("cpu"))["cuda_visible_devices"] == visible


def test_a_run_keeps_the_facts_of_its_problems_draw():
    """text_transformer's corpus digest reaches the run (and so its sidecar's problem_info)."""
    run_spec = spec("adam", "mse", steps=3)
    run_spec["problem"] = {
        "name": "text",
        "problem": "text_transformer",
        "kind": "classification",
        "kwargs": {"layers": 1},
    }
    run_spec["loss"] = {"name": "ce", "class": "CrossEntropyLoss", "kwargs": {}}
    result = training.train_one(run_spec, 0, torch.device("cpu"))
    assert result.info["corpus_sha256"] == problems.load("text_transformer").CORPUS_SHA256
    assert result.info["corpus"] == "torch/optim/*.py"
    assert training.train_one(spec("adam", "mse", steps=3), 0, torch.device("cpu")).info == {}
