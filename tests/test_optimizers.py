"""Optimizers from packages and from users' files: where a class comes from, the
checks before any job, and the protocols each needs, against hand-written loops."""

import hashlib
import json
import shutil

import pytest
import pytorch_optimizer
import torch

from conftest import REPO, SCHEMA
from optbench.engines import optimizers, training
from optbench.planning import optimizer_sources, settings

TEMPLATE = REPO / "optimizers" / "_template.py"
PROBLEMS = {
    "linear": ({"linear": {"kwargs": {"dim": 20}}}, {"mse": {"class": "MSELoss"}}),
    "digits_mlp": ({"digits_mlp": {}}, {"cross_entropy": {"class": "CrossEntropyLoss"}}),
}


def spec_for(entry, problem="linear", steps=6, optimizers_dir=None):
    problems, losses = PROBLEMS[problem]
    config = {
        "seeds": [0],
        "steps": steps,
        "device": "cpu",
        "problems": problems,
        "losses": losses,
        "optimizers": {"x": entry},
    }
    experiment = settings.validate(config, SCHEMA, optimizers_dir=optimizers_dir)
    spec = experiment.run_spec(experiment.cells()[0])
    return spec | ({"optimizers_dir": str(optimizers_dir)} if optimizers_dir else {})


def hand_loop(spec, seed, make, create_graph=False, train_eval=False):
    """The article's loop written out, with the calls the protocol adds."""
    criterion = (
        torch.nn.CrossEntropyLoss()
        if spec["loss"]["class"] == "CrossEntropyLoss"
        else (torch.nn.MSELoss())
    )
    instance = training.build_instance(spec, seed)
    optimizer = make(instance.model)
    if train_eval:
        optimizer.train()
    losses = []
    for step in range(spec["steps"]):
        inputs, targets = instance.batch(step)
        optimizer.zero_grad()
        loss = instance.loss(criterion, inputs, targets)
        loss.backward(create_graph=create_graph)
        optimizer.step()
        losses.append(loss.item())
    if train_eval:
        optimizer.eval()
    return losses, instance.evaluate(criterion)


def pipeline(spec, seed=0):
    result = training.train_one(spec, seed, torch.device("cpu"))
    return result.losses, result.heldout


def test_schedule_free_steps_in_train_mode_and_is_evaluated_in_eval_mode():
    entry = {"class": "pytorch_optimizer.ScheduleFreeAdamW", "kwargs": {"lr": 0.01}}
    spec = spec_for(entry, "digits_mlp")

    def make(model):
        return pytorch_optimizer.ScheduleFreeAdamW(model.parameters(), lr=0.01)

    expected = hand_loop(spec, 0, make, train_eval=True)
    assert pipeline(spec) == expected
    # eval() moves the weights to the averaged point: the held-out loss differs.
    _, at_training_point = hand_loop(spec, 0, make, train_eval=False)
    assert at_training_point["heldout_loss"] != expected[1]["heldout_loss"]


def test_sophia_gets_a_graph_for_its_hessian_vector_products():
    entry = {"class": "pytorch_optimizer.SophiaH", "kwargs": {"lr": 0.01, "update_period": 2}}
    spec = spec_for(entry)
    assert optimizers.needs_create_graph("pytorch_optimizer.SophiaH")
    assert not optimizers.needs_create_graph("Adam")

    def make(model):
        return pytorch_optimizer.SophiaH(model.parameters(), lr=0.01, update_period=2)

    torch.manual_seed(1)
    expected = hand_loop(spec, 0, make, create_graph=True)
    torch.manual_seed(1)
    assert pipeline(spec) == expected
    torch.manual_seed(1)
    with pytest.raises(RuntimeError):  # without the graph its Hessian step cannot run
        hand_loop(spec, 0, make, create_graph=False)


def test_muon_on_the_weight_matrices_and_its_adamw_on_the_rest():
    entry = {
        "class": "pytorch_optimizer.Muon",
        "kwargs": {"lr": 0.02, "adamw_lr": 0.001},
        "groups": {"matrices": {"use_muon": True}, "others": {"use_muon": False}},
    }
    spec = spec_for(entry, "digits_mlp")

    def make(model):
        matrices = [p for p in model.parameters() if p.ndim >= 2]
        others = [p for p in model.parameters() if p.ndim < 2]
        assert matrices and others
        groups = [{"params": matrices, "use_muon": True}, {"params": others, "use_muon": False}]
        return pytorch_optimizer.Muon(groups, lr=0.02, adamw_lr=0.001)

    assert pipeline(spec) == hand_loop(spec, 0, make)
    # A role the model has but the entry does not list would never train: refused.
    entry["groups"] = {"matrices": {"use_muon": True}}
    with pytest.raises(training.RunError, match="has others parameters, but groups lists no"):
        pipeline(spec_for(entry, "digits_mlp"))


def test_lion_from_the_package_matches_its_hand_loop():
    spec = spec_for({"class": "pytorch_optimizer.Lion", "kwargs": {"lr": 0.001}})

    def make(model):
        return pytorch_optimizer.Lion(model.parameters(), lr=0.001)

    assert pipeline(spec) == hand_loop(spec, 0, make)
    assert optimizers.protocol(pytorch_optimizer.Lion([torch.nn.Parameter(torch.ones(2))])) == {
        "closure": False,
        "train_eval": False,
        "create_graph": False,
    }


def test_a_users_file_optimizer_runs_as_its_hand_loop(tmp_path):
    folder = tmp_path / "optimizers"
    folder.mkdir()
    shutil.copy(TEMPLATE, folder / "signum.py")
    entry = {"class": "signum.Signum", "kwargs": {"lr": 0.01, "momentum": 0.5}}
    spec = spec_for(entry, optimizers_dir=folder)
    cls = optimizers.resolve("signum.Signum", folder)
    assert cls.__module__ == "optbench_user_optimizers.signum"

    def make(model):
        return cls(model.parameters(), lr=0.01, momentum=0.5)

    assert pipeline(spec) == hand_loop(spec, 0, make)
    digest = hashlib.sha256((folder / "signum.py").read_bytes()).hexdigest()
    assert spec["optimizer"]["source_sha256"] == digest  # an edit re-runs its runs
    # checked before any job, from the file's source
    with pytest.raises(settings.ConfigError, match="signum.Signum does not accept 'betas'"):
        spec_for(entry | {"kwargs": {"betas": [0.9, 0.9]}}, optimizers_dir=folder)
    with pytest.raises(settings.ConfigError, match="takes a number here"):
        spec_for(entry | {"kwargs": {"lr": "fast"}}, optimizers_dir=folder)
    with pytest.raises(settings.ConfigError, match="defines no class 'Signun'"):
        spec_for({"class": "signum.Signun"}, optimizers_dir=folder)


def test_where_a_class_comes_from(tmp_path):
    folder = tmp_path / "optimizers"
    folder.mkdir()
    locate = optimizer_sources.locate
    assert locate("Adam", folder).origin == "torch"
    assert (locate("torch.optim.Muon", folder).origin, locate("torch.optim.Muon", None).name) == (
        "torch",
        "Muon",
    )
    assert locate("pytorch_optimizer.Lion", folder).origin == "package"
    (folder / "mine.py").write_text("class Mine: pass\n")
    assert locate("mine.Mine", folder).path == folder / "mine.py"
    refused = {
        "mine.sub.Mine": "is written mine.ClassName, one dot",
        "optimizers/mine.py": "no paths, no code",
        "os.path.join(1)": "no paths, no code",
        "not_a_package_here.Opt": "pip install not-a-package-here",
        "pytorch_optimizer.Lion.step": "attribute chains are not accepted",
        "_template.Signum": "is a template",
    }
    for text, message in refused.items():
        with pytest.raises(optimizer_sources.SourceError, match=message):
            locate(text, folder)
    # A file with an installed package's name would make the class ambiguous.
    (folder / "numpy.py").write_text("class Opt: pass\n")
    with pytest.raises(optimizer_sources.SourceError, match="installed package 'numpy'"):
        locate("numpy.Opt", folder)


def test_package_and_file_classes_train_in_the_loop_with_the_reason():
    from optbench.planning import batch_policy

    choice = batch_policy.choose_engine("auto", "pytorch_optimizer.Lion", "regression", "MSELoss")
    assert not choice.batched and "only where the run-independence probe passes" in choice.reason
    choice = batch_policy.choose_engine("auto", "Adam", "regression", "MSELoss", grouped=True)
    assert not choice.batched and "parameter groups" in choice.reason


def test_checking_torch_optim_classes_imports_no_torch_and_a_package_class_does():
    """A dry run of a config that names only torch.optim classes stays torch-free;
    a package's class is imported to read its signature (the cost docs/optimizers.md
    states)."""
    import subprocess
    import sys

    code = (
        "import sys, yaml; sys.path.insert(0, {scripts!r})\n"
        "from optbench.planning import settings\n"
        "config = yaml.safe_load(open({config!r}))\n"
        "config['optimizers']['extra'] = {{'class': {cls!r}}}\n"
        "settings.validate(config, {schema!r}, memory_bytes=None)\n"
        "print('torch' in sys.modules, 'pytorch_optimizer' in sys.modules)"
    )
    scripts = str(REPO / "workflow" / "scripts")
    for cls, expected in (
        ("torch.optim.NAdam", "False False"),
        ("pytorch_optimizer.Lion", "True True"),
    ):
        command = code.format(
            scripts=scripts, config=str(REPO / "config.yaml"), cls=cls, schema=str(SCHEMA)
        )
        process = subprocess.run(
            [sys.executable, "-c", command], capture_output=True, text=True, check=True
        )
        assert process.stdout.split("\n")[-2] == expected, (cls, process.stdout)


# --- the run-independence probe ------------------------------------------------


class CouplingSGD(torch.optim.Optimizer):
    """SGD whose step shrinks with the norm of every gradient it holds: harmless
    for one run, but stacked, one run's gradient steers the others' steps."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            norm = torch.sqrt(sum((p.grad**2).sum() for p in group["params"]))
            for parameter in group["params"]:
                parameter.add_(parameter.grad, alpha=-group["lr"] / (1.0 + norm.item()))


def test_the_probe_passes_element_wise_classes_and_catches_coupling():
    from optbench.engines import probe

    assert probe.independent(torch.optim.Adam, [{"lr": 0.1}])[0]
    assert probe.independent(pytorch_optimizer.Lion, [{"lr": 0.001}])[0]
    coupled, reason = probe.independent(CouplingSGD, [{"lr": 0.1}])
    assert not coupled and "failed the run-independence probe" in reason
    for cls in (pytorch_optimizer.Prodigy, pytorch_optimizer.DAdaptAdam, pytorch_optimizer.Lamb):
        assert not probe.independent(cls, [{}])[0], cls


def test_lion_is_batched_after_the_probe_and_gives_the_loops_bytes(tmp_path):
    from test_jobs import grid_of, run_job, sidecar

    # The reference problem, where the batched engine's losses are the loop's bit
    # for bit (on digits_mlp only the weights are: engines/batched.py).
    lion = {"lion": {"class": "pytorch_optimizer.Lion", "kwargs": {"lr": 0.01}}}
    grid = grid_of(lion, seeds=(0, 1, 2), steps=12)
    process, runs = run_job(tmp_path / "auto", grid, "auto")
    assert process.returncode == 0, process.stderr
    loop, loop_runs = run_job(tmp_path / "loop", grid, "loop")
    assert loop.returncode == 0, loop.stderr
    for run, looped in zip(runs, loop_runs, strict=True):
        meta = sidecar(run)
        assert meta["engine"] == "batched", meta["engine_reason"]
        assert "passed the run-independence probe" in meta["engine_details"]["probe"]
        with open(run.tsv, "rb") as a, open(looped.tsv, "rb") as b:
            assert a.read() == b.read()  # bit for bit
        assert meta["heldout"] == sidecar(looped)["heldout"]


def test_prodigy_fails_the_probe_and_trains_in_the_loop_saying_why(tmp_path):
    from test_jobs import grid_of, run_job, sidecar

    prodigy = {"prodigy": {"class": "pytorch_optimizer.Prodigy", "kwargs": {}}}
    process, runs = run_job(tmp_path, grid_of(prodigy, seeds=(0, 1), steps=5), "auto")
    assert process.returncode == 0, process.stderr
    meta = sidecar(runs[0])
    assert meta["engine"] == "loop"
    assert "Prodigy 4.1.0 failed the run-independence probe" in meta["engine_reason"]
    assert "Prodigy 4.1.0 failed the run-independence probe" in process.stderr
    refused, _ = run_job(tmp_path / "batched", grid_of(prodigy, seeds=(0, 1), steps=5), "batched")
    assert refused.returncode == 2
    assert (
        "config key engine: batched, but linear/mse/prodigy cannot be: optimizer "
        "pytorch_optimizer.Prodigy runs in the per-run loop: pytorch_optimizer.Prodigy 4.1.0 "
        "failed the run-independence probe" in refused.stderr
    ), refused.stderr


# --------------------------------------------------- closure kinds and wrappers


def recorded(spec, seed=0):
    result = training.train_one(spec, seed, torch.device("cpu"))
    return result.losses, result.evaluations


def model_loss(spec, seed):
    """(the run's instance, its loss at the current weights for a step's batch)."""
    instance = training.build_instance(spec, seed)
    criterion = torch.nn.MSELoss()

    def loss_at(step):
        inputs, targets = instance.batch(step)
        return instance.loss(criterion, inputs, targets)

    return instance, loss_at


def test_sam_around_sgd_is_detected_and_trains_as_a_hand_written_sam():
    """pytorch_optimizer.SAM's step(closure=None) refuses to run without a closure
    and expects the gradients first: written out by hand (perturb the weights by
    rho * g / |g|, the gradient there, back to the weights, SGD's step on that
    gradient), 2 loss evaluations per step, the first pass's loss recorded."""
    rho, lr, steps = 0.05, 0.05, 6
    entry = {"class": "pytorch_optimizer.SAM", "base": "SGD", "kwargs": {"lr": lr, "rho": rho}}
    spec = spec_for(entry, steps=steps)
    assert optimizers.describe(pytorch_optimizer.SAM).closure == "second_pass"
    instance, loss_at = model_loss(spec, 0)
    weights = list(instance.model.parameters())
    sgd = torch.optim.SGD(weights, lr=lr)
    expected = []
    for step in range(steps):
        sgd.zero_grad()
        loss = loss_at(step)
        loss.backward()
        expected.append(loss.item())
        with torch.no_grad():
            norm = torch.sqrt(sum((w.grad**2).sum() for w in weights)) + 1e-12
            saved = [w.clone() for w in weights]
            for w in weights:
                w.add_(w.grad * (rho / norm))
        sgd.zero_grad()
        loss_at(step).backward()  # the gradient at the perturbed weights
        with torch.no_grad():
            for w, old in zip(weights, saved, strict=True):
                w.copy_(old)
        sgd.step()
    losses, evaluations = recorded(spec)
    assert evaluations == [2] * steps
    assert losses == pytest.approx(expected, rel=1e-6)
    # Bit for bit against SAM's documented use: backward, then step(closure).
    instance, loss_at = model_loss(spec, 0)
    sam = pytorch_optimizer.SAM(instance.model.parameters(), torch.optim.SGD, rho=rho, lr=lr)
    documented = []
    for step in range(steps):
        sam.zero_grad()
        loss = loss_at(step)
        loss.backward()

        def closure(step=step):
            sam.zero_grad()
            again = loss_at(step)
            again.backward()
            return again

        sam.step(closure)
        documented.append(loss.item())
    assert losses == documented
    # Without SAM's perturbation (plain SGD) the losses differ: SAM really ran.
    assert recorded(spec_for({"class": "SGD", "kwargs": {"lr": lr}}, steps=steps))[0] != losses


def test_lookahead_around_adamw_trains_as_a_hand_written_lookahead():
    """Lookahead (k steps of AdamW, then the weights move alpha of the way from the
    slow weights to the fast ones, and both become that point)."""
    k, alpha, lr, steps = 3, 0.5, 0.05, 10
    entry = {
        "class": "pytorch_optimizer.Lookahead",
        "base": "AdamW",
        "kwargs": {"lr": lr, "k": k, "alpha": alpha, "weight_decay": 0.0},
    }
    spec = spec_for(entry, steps=steps)
    instance, loss_at = model_loss(spec, 0)
    weights = list(instance.model.parameters())
    adamw = torch.optim.AdamW(weights, lr=lr, weight_decay=0.0)
    slow = [w.detach().clone() for w in weights]
    expected = []
    for step in range(steps):
        adamw.zero_grad()
        loss = loss_at(step)
        loss.backward()
        adamw.step()
        expected.append(loss.item())
        if (step + 1) % k == 0:
            with torch.no_grad():
                for w, s in zip(weights, slow, strict=True):
                    w.lerp_(s, 1.0 - alpha)
                    s.copy_(w)
    losses, evaluations = recorded(spec)
    assert evaluations == [1] * steps
    assert losses == expected
    # Without the slow weights (AdamW alone) the losses part from step k on.
    plain = recorded(
        spec_for({"class": "AdamW", "kwargs": {"lr": lr, "weight_decay": 0.0}}, steps=steps)
    )[0]
    assert plain[:k] == losses[:k] and plain[k] != losses[k]


def test_alig_evaluates_the_loss_itself_through_the_closure():
    """AliG's step(closure=None) refuses to run without a closure and calls it first
    (as L-BFGS does): one evaluation per step, the loss it returns recorded."""
    steps = 6
    spec = spec_for({"class": "pytorch_optimizer.AliG", "kwargs": {"max_lr": 0.1}}, steps=steps)
    assert optimizers.describe(pytorch_optimizer.AliG).closure == "evaluates"
    instance, loss_at = model_loss(spec, 0)
    weights = list(instance.model.parameters())
    expected = []
    for step in range(steps):
        loss = loss_at(step)
        for w in weights:
            w.grad = None
        loss.backward()
        # AliG: step size min(loss / (|g|^2 + eps), max_lr), then w -= step * g.
        with torch.no_grad():
            squared = sum((w.grad**2).sum() for w in weights)
            size = min((loss / (squared + 1e-5)).item(), 0.1)
            for w in weights:
                w.add_(w.grad, alpha=-size)
        expected.append(loss.item())
    losses, evaluations = recorded(spec)
    assert evaluations == [1] * steps
    assert losses == pytest.approx(expected, rel=1e-5)


USER_CLOSURE_OPTIMIZERS = '''
import torch


class Lookback(torch.optim.Optimizer):
    """Gradient descent whose step evaluates the loss itself (closure first)."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None:
            raise RuntimeError("Lookback needs a closure")
        with torch.enable_grad():
            loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad, alpha=-group["lr"])
        return loss


class Extragradient(torch.optim.Optimizer):
    """Extragradient: a half step along the gradients given, the gradient there,
    then the step from the old weights along it."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def half_step(self):
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["old"] = p.clone()
                p.add_(p.grad, alpha=-group["lr"])

    @torch.no_grad()
    def step(self, closure=None):
        assert closure is not None, "Extragradient needs a closure"
        self.half_step()
        with torch.enable_grad():
            closure()
        for group in self.param_groups:
            for p in group["params"]:
                p.copy_(self.state[p]["old"]).add_(p.grad, alpha=-group["lr"])
'''


def test_a_users_optimizer_that_refuses_a_missing_closure_gets_one(tmp_path):
    """step(closure=None) that raises without a closure is a closure optimizer,
    whatever the default; called first it evaluates, after a method of its own
    (the extragradient's half step) it is given the gradients first."""
    folder = tmp_path / "optimizers"
    folder.mkdir()
    (folder / "closures.py").write_text(USER_CLOSURE_OPTIMIZERS)
    lr, steps = 0.05, 5
    kinds = {
        name: optimizers.describe(optimizers.resolve(f"closures.{name}", folder)).closure
        for name in ("Lookback", "Extragradient")
    }
    assert kinds == {"Lookback": "evaluates", "Extragradient": "second_pass"}

    spec = spec_for(
        {"class": "closures.Lookback", "kwargs": {"lr": lr}}, steps=steps, optimizers_dir=folder
    )
    sgd = recorded(spec_for({"class": "SGD", "kwargs": {"lr": lr}}, steps=steps))
    assert recorded(spec) == sgd  # gradient descent, one evaluation a step

    spec = spec_for(
        {"class": "closures.Extragradient", "kwargs": {"lr": lr}},
        steps=steps,
        optimizers_dir=folder,
    )
    instance, loss_at = model_loss(spec, 0)
    weights = list(instance.model.parameters())
    expected = []
    for step in range(steps):
        loss = loss_at(step)
        gradients = torch.autograd.grad(loss, weights)
        with torch.no_grad():
            half = [w - lr * g for w, g in zip(weights, gradients, strict=True)]
        for w, h in zip(weights, half, strict=True):
            w.data, old = h, w.data
            w.old = old
        at_half = torch.autograd.grad(loss_at(step), weights)
        with torch.no_grad():
            for w, g in zip(weights, at_half, strict=True):
                w.data = w.old - lr * g
        expected.append(loss.item())
    losses, evaluations = recorded(spec)
    assert evaluations == [2] * steps
    assert losses == pytest.approx(expected, rel=1e-6)


def test_wrapper_and_closure_optimizers_train_in_the_loop_with_the_reason():
    from optbench.engines import probe

    for cls, base, why in (
        (pytorch_optimizer.SAM, torch.optim.SGD, "a closure for a second pass"),
        (pytorch_optimizer.Lookahead, torch.optim.AdamW, "(a wrapper)"),
        (pytorch_optimizer.AliG, None, "a closure that re-evaluates the loss"),
    ):
        passed, reason = probe.independent(cls, [{}], base)
        assert passed is None and why in reason, reason


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"class": "pytorch_optimizer.Lookahead", "kwargs": {"lr": 0.01}},
            "pytorch_optimizer.Lookahead wraps a base optimizer (its optimizer argument), and "
            "the entry names none. Fix: add base:",
        ),
        ({"class": "Adam", "base": "SGD"}, "optimizers.x.base: torch.optim.Adam takes no base"),
        ({"class": "pytorch_optimizer.SAM", "base": "Sgd"}, "Did you mean 'SGD'?"),
        (
            {"class": "pytorch_optimizer.SAM", "base": "LBFGS"},
            "torch.optim.LBFGS cannot be the base of pytorch_optimizer.SAM: it evaluates",
        ),
        (
            {"class": "pytorch_optimizer.SAM", "base": "pytorch_optimizer.Lookahead"},
            "it is itself a wrapper",
        ),
        (
            {"class": "pytorch_optimizer.Lookahead", "base": "pytorch_optimizer.ScheduleFreeAdamW"},
            "has train() and eval() modes",
        ),
        (
            {"class": "pytorch_optimizer.SAM", "base": "SGD", "kwargs": {"betas": [0.9, 0.9]}},
            "pytorch_optimizer.SAM around SGD does not accept 'betas'",
        ),
        (
            {"class": "pytorch_optimizer.SAM", "base": "SGD", "kwargs": {"lr": "fast"}},
            "optimizers.x.kwargs.lr: pytorch_optimizer.SAM around SGD takes a number here",
        ),
        (
            {"class": "pytorch_optimizer.SAM", "base": "SGD", "kwargs": {"base_optimizer": "SGD"}},
            "'base_optimizer' is supplied by the pipeline",
        ),
        ({"class": "pytorch_optimizer.GSAM", "base": "SGD"}, "needs model (the model itself)"),
    ],
)
def test_wrapper_entries_are_checked_before_any_job(entry, message):
    with pytest.raises(settings.ConfigError) as raised:
        spec_for(entry)
    assert message in str(raised.value)


def test_base_enters_the_settings_only_where_given():
    """An entry without base: keeps its settings (and digests) as they were."""
    plain = spec_for({"class": "SGD", "kwargs": {"lr": 0.1}})
    assert "base" not in plain["optimizer"]
    wrapped = spec_for({"class": "pytorch_optimizer.SAM", "base": "torch.optim.SGD"})
    assert wrapped["optimizer"]["base"] == "SGD"  # torch.optim.SGD is SGD


WRAPPERS_CONFIG = """
seeds: [0, 1]
steps: 6
device: cpu
problems: {linear: {kwargs: {dim: 20}}}
losses: {mse: {class: MSELoss}}
optimizers:
  sam_sgd: {class: pytorch_optimizer.SAM, base: SGD, kwargs: {lr: 0.05, rho: 0.05}}
  lookahead_adamw:
    class: pytorch_optimizer.Lookahead
    base: AdamW
    kwargs: {lr: 0.05, k: 3, alpha: 0.5}
"""


def test_sam_and_lookahead_entries_run_end_to_end_in_the_loop(tmp_path):
    """snakemake on a config with both wrappers: each run's TSV holds the losses
    and evaluation counts of the library's loop (tested above against hand
    loops), and its sidecar says why it trained in the loop."""
    from conftest import snakemake
    from optbench import runfiles

    config = tmp_path / "wrappers.yaml"
    config.write_text(WRAPPERS_CONFIG)
    targets = [
        f"results/runs/linear/mse/{name}/base/seed{seed}.tsv"
        for name in ("sam_sgd", "lookahead_adamw")
        for seed in (0, 1)
    ]
    # The training job's output is its manifest (job_scope loss, every seed one job).
    manifest = "results/manifests/train/linear/mse/seeds0-1.tsv"
    snakemake(tmp_path, "--cores", "2", manifest, configfile=config)
    import yaml

    entries = yaml.safe_load(WRAPPERS_CONFIG)["optimizers"]
    for target in targets:
        name, seed = target.split("/")[4], int(target[-5])
        spec = spec_for(entries[name])
        losses, evaluations = recorded(spec, seed)
        table = (tmp_path / target).read_text()
        assert table == runfiles.format_losses(losses, evaluations, [spec_lr(spec)] * 6)
        meta = json.loads((tmp_path / target).with_suffix(".json").read_text())
        assert meta["engine"] == "loop"
        reason = "a closure for a second pass" if name == "sam_sgd" else "(a wrapper)"
        assert reason in meta["engine_reason"], meta["engine_reason"]
        assert meta["optimizer"]["base"] == entries[name]["base"]


def spec_lr(spec):
    return spec["optimizer"]["kwargs"]["lr"]
