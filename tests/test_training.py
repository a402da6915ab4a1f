"""The training loop against an independent copy of the article's loop."""

import json
import subprocess
import sys

import pytest
import torch

from conftest import TRAIN_SCRIPT
from optbench import runfiles, training

OPTIMIZERS = {
    "sgd": ("SGD", {"lr": 0.1}),
    "momentum_sgd": ("SGD", {"lr": 0.1, "momentum": 0.9}),
    "adam": ("Adam", {"lr": 0.1, "betas": [0.9, 0.99], "eps": 1e-9}),
    "rmsprop": ("RMSprop", {}),
}
LOSSES = {"mse": "MSELoss", "l1": "L1Loss"}


def article_loop(seed, optimizer_factory, criterion, steps=40):
    """The blog post's loop, written out as in ARTICLE.md, after torch.manual_seed."""
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


def article_tsv(losses) -> bytes:
    """A run TSV as the file contract (DESIGN.md) spells it, written out here
    rather than by the code under test: a header, then step and repr(loss)."""
    rows = ["step\tloss"] + [f"{step}\t{float(value)!r}" for step, value in enumerate(losses)]
    return ("\n".join(rows) + "\n").encode()


ARTICLE_OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "momentum_sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=0.1, betas=(0.9, 0.99), eps=1e-9),
    "rmsprop": lambda p: torch.optim.RMSprop(p),
}
ARTICLE_LOSSES = {"mse": torch.nn.MSELoss(), "l1": torch.nn.L1Loss()}


def spec(optimizer="adam", loss="mse", steps=40, dim=20, device="cpu"):
    cls, kwargs = OPTIMIZERS[optimizer]
    return {
        "optimizer": {"name": optimizer, "class": cls, "kwargs": kwargs},
        "loss": {"name": loss, "class": LOSSES[loss], "kwargs": {}},
        "steps": steps,
        "dim": dim,
        "device": device,
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


def test_auto_device_without_gpu_is_cpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here; auto then means cuda")
    assert training.resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_gpu_fails_before_training(device):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    with pytest.raises(
        training.RunError, match="config key device: .*Fix: set device to auto or cpu"
    ):
        training.resolve_device(device)


def run_cli(tmp_path, run_spec, seeds=(0,)):
    command = [sys.executable, str(TRAIN_SCRIPT), "--spec", json.dumps(run_spec)]
    paths = []
    for seed in seeds:
        tsv, sidecar = tmp_path / f"seed{seed}.tsv", tmp_path / f"seed{seed}.json"
        command += ["--run", str(seed), str(tsv), str(sidecar)]
        paths.append((tsv, sidecar))
    return subprocess.run(command, capture_output=True, text=True), paths


def test_cli_writes_tsv_and_sidecar_and_rerun_is_byte_identical(tmp_path):
    process, [(tsv, sidecar)] = run_cli(tmp_path, spec("rmsprop", "l1", steps=12), seeds=(5,))
    assert process.returncode == 0, process.stderr
    first = tsv.read_bytes()
    lines = first.decode().splitlines()
    assert lines[0] == "step\tloss" and len(lines) == 13
    expected = article_loop(5, ARTICLE_OPTIMIZERS["rmsprop"], ARTICLE_LOSSES["l1"], steps=12)
    assert runfiles.read_run(tsv, 12) == expected
    meta = json.loads(sidecar.read_text())
    assert meta["seed"] == 5 and meta["device"] == "cpu" and meta["device_requested"] == "cpu"
    assert meta["torch_version"] == torch.__version__
    assert meta["optimizer"] == {"name": "rmsprop", "class": "RMSprop", "kwargs": {}}
    assert meta["cuda_built"] == torch.backends.cuda.is_built()
    assert meta["train_seconds"] > 0 and meta["first_nonfinite_step"] is None
    process, _ = run_cli(tmp_path, spec("rmsprop", "l1", steps=12), seeds=(5,))
    assert process.returncode == 0 and tsv.read_bytes() == first


def test_cli_bad_kwargs_fail_at_once_naming_the_entry(tmp_path):
    bad = spec("sgd")
    bad["optimizer"]["kwargs"] = {"lr": 0.1, "momentun": 0.9}
    process, [(tsv, sidecar)] = run_cli(tmp_path, bad)
    assert process.returncode == 2
    assert "config key optimizers.sgd" in process.stderr and "momentun" in process.stderr
    assert not tsv.exists() and not sidecar.exists()


def test_cli_cuda_on_cpu_machine_fails_clearly(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    process, [(tsv, _)] = run_cli(tmp_path, spec(device="cuda"))
    assert process.returncode == 2
    assert "config key device: 'cuda' was asked for" in process.stderr
    assert not tsv.exists()


def test_cli_records_divergence(tmp_path):
    diverging = spec("sgd", "mse", steps=30)
    diverging["optimizer"]["kwargs"] = {"lr": 10.0}
    process, [(tsv, sidecar)] = run_cli(tmp_path, diverging)
    assert process.returncode == 0, process.stderr
    losses = runfiles.read_run(tsv, 30)
    first_bad = runfiles.first_nonfinite_step(losses)
    assert first_bad is not None
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
