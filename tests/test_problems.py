"""The problem library: registry and declarations, parameter and loss checks,
seeded draws, the article's problem bit for bit, and each optimum against an
independent solver."""

import copy
import math
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import integrate, optimize

import optbench.problems as problems
from conftest import REPO
from optbench.problems import ProblemError
from optbench.problems.instance import Instance, stack
from test_training import ARTICLE_LOSSES, ARTICLE_OPTIMIZERS, article_loop

BUILTINS = (
    "breast_cancer_mlp",
    "digits_cnn",
    "digits_mlp",
    "linear",
    "logistic",
    "noisy_quadratic",
    "quadratic",
    "rosenbrock",
    "text_transformer",
)
CRITERIA = {
    "regression": torch.nn.MSELoss,
    "binary": torch.nn.BCEWithLogitsLoss,
    "classification": torch.nn.CrossEntropyLoss,
    "objective": lambda: None,
}
TEMPLATE = REPO / "problems" / "_template.py"


@pytest.fixture(autouse=True)
def one_thread():
    """Single-threaded, as training jobs run by default; the machine is shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def build(name, seed=0, steps=40, user_dir=None, **parameters) -> Instance:
    return problems.build(name, seed, steps, parameters, user_dir=user_dir)


def tensors(instance: Instance) -> dict[str, bytes]:
    """Every drawn tensor of an instance as bytes: weights, data, index, held-out data."""
    found = {f"model.{k}": v for k, v in instance.model.state_dict().items()}
    found |= {"inputs": instance.inputs, "targets": instance.targets, "index": instance.index}
    if instance.heldout is not None:
        found |= {"heldout.inputs": instance.heldout[0], "heldout.targets": instance.heldout[1]}
    return {k: v.numpy().tobytes() for k, v in found.items() if v is not None}


def write_problem(folder, name, text):
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    return path


MINIMAL = '''
    """A minimal problem."""
    KIND = "objective"
    PARAMETERS = {"dim": 3}
    STOCHASTIC = False
    OPTIMUM = 0.0


    def build(seed, steps, dim=3):
        raise NotImplementedError
'''


def lbfgs(instance: Instance, criterion, iterations=500) -> float:
    """Full-batch L-BFGS with a strong Wolfe line search; the final loss."""
    optimizer = torch.optim.LBFGS(
        instance.model.parameters(),
        lr=1,
        max_iter=iterations,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-12,
        tolerance_change=1e-16,
    )
    inputs, targets = instance.batch(0)

    def closure():
        optimizer.zero_grad()
        loss = instance.loss(criterion, inputs, targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(instance.loss(criterion, inputs, targets))


# --------------------------------------------------------------- registry


def test_import_does_not_import_torch():
    code = (
        "import sys, optbench.problems as p; p.declaration('digits_mlp'); "
        "p.check_parameters(p.declaration('quadratic'), {'dim': 3}); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'sklearn')))"
    )
    process = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO / "workflow" / "scripts",
        check=True,
    )
    assert process.stdout.strip() == "[]"


def test_builtins_are_found_by_name_with_their_declarations():
    assert sorted(problems.available()) == sorted(BUILTINS)
    for name in BUILTINS:
        decl = problems.declaration(name)
        assert decl.name == name and decl.path == problems.BUILTIN_DIR / f"{name}.py"
        assert decl.kind in problems.KINDS
        assert decl.description.startswith(decl.description[0].upper())
        assert "stresses" in decl.description.lower(), decl.description


@pytest.mark.parametrize("name", BUILTINS)
def test_declaration_read_by_ast_equals_the_imported_module(name):
    """What planning reads without running the file is what the file holds at run time."""
    import inspect

    decl = problems.declaration(name)
    module = problems.load(name)
    imported = {
        "kind": module.KIND,
        "parameters": module.PARAMETERS,
        "stochastic": module.STOCHASTIC,
        "optimum": module.OPTIMUM,
        "limits": getattr(module, "LIMITS", {}),
    }
    assert imported == {key: getattr(decl, key) for key in imported}
    facts = {
        "heldout_target": getattr(module, "HELDOUT_TARGET", None),
        "run_bytes": getattr(module, "RUN_BYTES", None),
        "run_step_us": getattr(module, "RUN_STEP_US", {}),
    }
    assert facts == {key: getattr(decl.facts, key) for key in facts}
    signature = inspect.signature(module.build)
    defaults = {k: p.default for k, p in signature.parameters.items() if k not in ("seed", "steps")}
    assert defaults == decl.parameters  # build's defaults are the declared ones


def test_user_problem_is_found_loaded_and_built(tmp_path):
    users = tmp_path / "problems"
    users.mkdir()
    shutil.copy(TEMPLATE, users / "sine_fit.py")
    assert problems.available(users)["sine_fit"] == users / "sine_fit.py"
    decl = problems.declaration("sine_fit", users)
    assert decl.kind == "regression" and decl.parameters["hidden"] == 16
    instance = build("sine_fit", seed=1, user_dir=users, hidden=4)
    assert instance.model[0].out_features == 4
    loss = instance.loss(torch.nn.MSELoss(), *instance.batch(0))
    assert loss.dim() == 0 and math.isfinite(loss.item())
    assert instance.evaluate(torch.nn.MSELoss())["heldout_accuracy"] is None


def test_template_in_the_users_folder_is_not_picked_up():
    assert TEMPLATE.is_file()
    assert "_template" not in problems.available(REPO / "problems")


def test_user_problem_with_a_builtin_name_is_refused(tmp_path):
    write_problem(tmp_path, "quadratic", MINIMAL)
    with pytest.raises(ProblemError, match=r"name of a built-in problem \(quadratic\).*rename"):
        problems.declaration("linear", tmp_path)  # any lookup: the clash is always an error


@pytest.mark.parametrize(
    "name",
    [
        "mine.py",
        "problems/mine",
        "../problems/mine",
        "/abs/mine",
        "optbench.problems.builtin.linear",
        "Mine",
        "",
        "1mine",
        "mine-2",
        3,
    ],
)
def test_path_like_or_dotted_names_are_refused(tmp_path, name):
    write_problem(tmp_path, "mine", MINIMAL)
    with pytest.raises(ProblemError, match="not a plain name.*dotted module paths and file paths"):
        problems.declaration(name, tmp_path)


def test_unknown_name_lists_the_known_problems_and_skipped_files(tmp_path):
    write_problem(tmp_path, "My-Problem", MINIMAL)
    with pytest.raises(ProblemError) as error:
        problems.declaration("my_problem", tmp_path)
    message = str(error.value)
    assert "unknown problem 'my_problem'" in message and "rosenbrock" in message
    assert "My-Problem.py" in message  # the near miss is named


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL.replace('{"dim": 3}', "dict(dim=3)"), r"PARAMETERS must be a literal.*dict\(dim"),
        (MINIMAL.replace('    KIND = "objective"\n', ""), "missing module-level literal.*KIND"),
        (MINIMAL.replace('"objective"', '"ranking"'), "KIND is 'ranking'"),
        (MINIMAL.replace("STOCHASTIC = False", "STOCHASTIC = 0"), "STOCHASTIC must be True"),
        (MINIMAL.replace("OPTIMUM = 0.0", "OPTIMUM = 'zero'"), "OPTIMUM must be a finite"),
        (MINIMAL.replace('{"dim": 3}', '{"dim": None}'), "typed default"),
        (MINIMAL.replace('{"dim": 3}', '{"seed": 3}'), "may not contain 'seed'"),
        (MINIMAL.replace("def build(", "def make("), "no top-level function build"),
        (MINIMAL.replace("dim=3)", "size=3)"), "does not accept PARAMETERS dim"),
        (MINIMAL.replace('"""A minimal problem."""', ""), "no module docstring"),
        (MINIMAL + "    LIMITS = {'dim': [5, None]}\n", "default of dim: 3 is outside"),
        (MINIMAL + "    OPTIMUM = None\n", "OPTIMUM is assigned more than once"),
        (MINIMAL + "    CONSTRAINTS = ['dim > 5']\n", "defaults break CONSTRAINTS entry 'dim > 5'"),
        (MINIMAL + "    CONSTRAINTS = ['open(dim)']\n", "'open.dim.' is not a comparison"),
        (MINIMAL + "    CONSTRAINTS = ['size > 1']\n", "'size > 1' is not a comparison of numeric"),
        (MINIMAL.replace("OPTIMUM = 0.0", "OPTIMUM = 0.0 +"), "cannot read the problem file"),
    ],
)
def test_misdeclared_problem_file_is_refused_naming_file_and_fix(tmp_path, text, expected):
    path = write_problem(tmp_path, "mine", text)
    with pytest.raises(ProblemError, match=expected) as error:
        problems.declaration("mine", tmp_path)
    assert str(path) in str(error.value)


# ------------------------------------------------------------- parameters

TYPED = '''
    """Every parameter type."""
    KIND = "objective"
    PARAMETERS = {"n": 3, "x": 0.5, "flag": True, "mode": "a", "ints": [1, 2], "xs": [0.5]}
    LIMITS = {"n": [1, 10], "xs": [0.0, 1.0]}
    STOCHASTIC = False
    OPTIMUM = None


    def build(seed, steps, **parameters):
        raise NotImplementedError
'''


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"n": True}, r"n: True \(bool\) is not an int; its default is 3"),
        ({"n": 2.0}, r"n: 2.0 \(float\) is not an int"),
        ({"n": "3"}, r"n: '3' \(str\) is not an int"),
        ({"x": "big"}, r"x: 'big' \(str\) is not a float \(or an int\); its default is 0.5"),
        ({"x": False}, r"x: False \(bool\) is not a float"),
        ({"x": float("nan")}, "x: nan is not finite"),
        ({"flag": 1}, r"flag: 1 \(int\) is not a bool"),
        ({"mode": 1}, r"mode: 1 \(int\) is not a string"),
        ({"ints": [1, 2.5]}, "ints: .* is not a list of ints"),
        ({"xs": [True]}, r"xs: \[True\] .* is not a list of numbers"),
        ({"xs": 0.5}, "xs: 0.5 .* is not a list of numbers"),
        ({"n": 11}, r"n: 11 is outside its limits \[1, 10\]"),
        ({"xs": [0.5, 2.0]}, r"xs: \[0.5, 2.0\] is outside its limits"),
    ],
)
def test_parameter_of_the_wrong_type_or_range_is_refused(tmp_path, given, expected):
    write_problem(tmp_path, "typed", TYPED)
    errors = problems.check_parameters(problems.declaration("typed", tmp_path), given)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"problems.typed.{next(iter(given))}")
    assert re.search(expected, errors[0]), errors[0]


def test_parameters_of_the_right_type_resolve_with_ints_as_floats(tmp_path):
    write_problem(tmp_path, "typed", TYPED)
    decl = problems.declaration("typed", tmp_path)
    given = {"n": 4, "x": 2, "flag": False, "mode": "b", "ints": [3], "xs": [1, 0.25]}
    assert problems.check_parameters(decl, given) == []
    resolved = problems.resolve_parameters(decl, given)
    assert resolved == given and type(resolved["x"]) is float
    assert [type(v) for v in resolved["xs"]] == [float, float]
    assert problems.resolve_parameters(decl, None) == decl.parameters


def test_every_parameter_error_is_reported_at_once():
    decl = problems.declaration("quadratic")
    given = {"dims": 3, "dim": True, "condition_number": "big", "noise": -1.0, "samples": 40}
    errors = problems.check_parameters(decl, given, key="problems.q")
    assert len(errors) == 4, errors
    unknown = [e for e in errors if e.startswith("problems.q.dims: unknown parameter")]
    assert unknown and all(f"{k} (default" in unknown[0] for k in decl.parameters)
    assert any(e.startswith("problems.q.dim: True (bool) is not an int") for e in errors)
    assert any("condition_number: 'big'" in e for e in errors)
    assert any("noise: -1.0 is outside its limits [0.0, inf]" in e for e in errors)
    with pytest.raises(ProblemError) as error:
        problems.resolve_parameters(decl, given)
    assert str(error.value).count("\n") == 3


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"samples": 10}, "needs samples >= dim, got dim=20, samples=10"),
        ({"samples": 10, "dim": 10}, None),
        ({"samples": 30, "dim": 31}, "needs samples >= dim, got dim=31, samples=30"),
    ],
)
def test_constraints_between_parameters_are_checked_at_planning(given, expected):
    errors = problems.check_parameters(problems.declaration("quadratic"), given)
    if expected is None:
        assert errors == []
        assert build("quadratic", **given).inputs.shape == (10, 10)
    else:
        assert len(errors) == 1 and expected in errors[0] and errors[0].startswith("problems.q")
        with pytest.raises(ProblemError, match=expected):
            build("quadratic", **given)


def test_keyword_arguments_that_are_not_a_mapping_are_refused():
    errors = problems.check_parameters(problems.declaration("linear"), [20])
    assert errors and "must be a mapping" in errors[0] and "dim (default 20)" in errors[0]


# ----------------------------------------------------------------- losses


def test_loss_table_names_real_torch_losses():
    for kind, names in problems.LOSSES.items():
        for name in names:
            cls = getattr(torch.nn, name)
            assert issubclass(cls, torch.nn.modules.loss._Loss), (kind, name)


@pytest.mark.parametrize("name", BUILTINS)
def test_every_fitting_loss_trains_the_problem(name):
    """Each loss the table allows takes the problem's outputs and targets as they are."""
    decl = problems.declaration(name)
    instance = build(name, seed=2)
    if decl.kind == "objective":
        assert decl.losses == ()
        loss = instance.loss(None, *instance.batch(0))
        loss.backward()
        assert loss.dim() == 0
        return
    for loss_name in decl.losses:
        assert problems.loss_error(decl, loss_name) is None
        instance.model.zero_grad()
        loss = instance.loss(getattr(torch.nn, loss_name)(), *instance.batch(0))
        loss.backward()
        assert loss.dim() == 0 and math.isfinite(loss.item()), loss_name
        assert all(p.grad is not None for p in instance.model.parameters())


@pytest.mark.parametrize(
    ("name", "loss", "expected"),
    [
        ("quadratic", "CrossEntropyLoss", "a regression problem.*MSELoss, L1Loss"),
        ("quadratic", "BCEWithLogitsLoss", "a regression problem"),
        ("logistic", "MSELoss", "a binary problem.*BCEWithLogitsLoss"),
        ("logistic", "SoftMarginLoss", "a binary problem"),  # wants -1/+1 targets
        ("digits_mlp", "NLLLoss", "a classification problem.*CrossEntropyLoss"),
        ("digits_mlp", "MSELoss", "a classification problem"),
        ("rosenbrock", "MSELoss", "an objective .* takes no loss"),
        ("rosenbrock", "CrossEntropyLoss", "an objective .* takes no loss"),
    ],
)
def test_impossible_problem_loss_pairs_are_refused(name, loss, expected):
    decl = problems.declaration(name)
    assert problems.loss_error(decl, loss) is not None
    with pytest.raises(ProblemError, match=expected) as error:
        problems.check_loss(decl, loss)
    assert repr(name) in str(error.value) and repr(loss) in str(error.value)


# ------------------------------------------------------------ seeded draws


@pytest.mark.parametrize("name", BUILTINS)
def test_draws_are_byte_identical_per_seed_and_differ_across_seeds(name):
    first, again, other = tensors(build(name, 5)), tensors(build(name, 5)), tensors(build(name, 6))
    assert first == again
    assert first.keys() == other.keys()
    # Every drawn tensor changes with the seed; the digits images and the
    # noisy quadratic's step-after-step index are fixed layouts, not draws.
    # (The breast cancer inputs are standardised on each seed's training split.)
    fixed = {
        "digits_mlp": ("inputs", "targets"),
        "digits_cnn": ("inputs", "targets"),
        "breast_cancer_mlp": ("targets",),
        "text_transformer": ("inputs", "targets", "heldout.inputs", "heldout.targets"),
        "noisy_quadratic": ("index",),
    }
    # Layer norms start at weight 1 and bias 0: no draw.
    drawn = [k for k in first if k not in fixed.get(name, ()) and "norm" not in k]
    assert all(first[k] != other[k] for k in drawn), [k for k in drawn if first[k] == other[k]]


@pytest.mark.parametrize("name", BUILTINS)
def test_draws_do_not_depend_on_the_thread_count(name):
    single = tensors(build(name, 9))
    torch.set_num_threads(2)
    assert tensors(build(name, 9)) == single


@pytest.mark.parametrize("name", [n for n in BUILTINS if n != "linear"])
def test_builds_leave_the_global_generator_alone(name):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    build(name, 1)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    "name", ["digits_mlp", "digits_cnn", "breast_cancer_mlp", "noisy_quadratic", "text_transformer"]
)
def test_steps_change_only_the_draws_made_last(name):
    """The per-step data are drawn last, so the run length changes nothing else."""
    short, long = build(name, 3, steps=40), build(name, 3, steps=90)
    assert len(short.index) == 40 and len(long.index) == 90
    same = {k: v for k, v in tensors(short).items() if k not in ("index", "inputs", "targets")}
    assert same == {k: v for k, v in tensors(long).items() if k in same}


# ------------------------------------------------------- article's problem


def test_linear_draws_equal_the_articles_draws_bit_for_bit():
    instance = build("linear", 11)
    torch.manual_seed(11)
    net = torch.nn.Linear(in_features=20, out_features=20, bias=False)
    x = torch.randn(1, 20)
    y = torch.randn(1, 1) * x + 2
    assert tensors(instance) == {
        "model.weight": net.weight.detach().numpy().tobytes(),
        "inputs": x.numpy().tobytes(),
        "targets": y.numpy().tobytes(),
    }


@pytest.mark.parametrize("optimizer", sorted(ARTICLE_OPTIMIZERS))
@pytest.mark.parametrize("loss", sorted(ARTICLE_LOSSES))
@pytest.mark.parametrize("seed", [0, 7])
def test_linear_problem_trains_like_the_articles_loop_bit_for_bit(optimizer, loss, seed):
    expected = article_loop(seed, ARTICLE_OPTIMIZERS[optimizer], ARTICLE_LOSSES[loss])
    instance = build("linear", seed).to("cpu")
    opt = ARTICLE_OPTIMIZERS[optimizer](instance.model.parameters())
    losses = []
    for step in range(40):
        inputs, targets = instance.batch(step)
        opt.zero_grad()
        value = instance.loss(ARTICLE_LOSSES[loss], inputs, targets)
        value.backward()
        opt.step()
        losses.append(value.item())
    assert losses == expected


def test_linear_optimum_zero_is_reached_by_the_rank_one_solution():
    """W = y x^T / (x . x) gives W x = y: zero loss, up to float64 rounding here."""
    instance = build("linear", 4)
    x, y = (t.double() for t in instance.batch(0))
    instance.model.double()
    with torch.no_grad():
        instance.model.weight.copy_(y.T @ x / (x @ x.T))
        for name in problems.LOSSES["regression"]:
            value = float(instance.loss(getattr(torch.nn, name)(), x, y))
            assert value < 1e-14 and instance.optima[name] == 0.0
    assert problems.declaration("linear").optimum == 0.0


# ------------------------------------------------------------------ optima


@pytest.mark.parametrize("noise", [0.0, 0.1])
@pytest.mark.parametrize("condition_number", [10.0, 1000.0])
def test_quadratic_curvature_and_optimum_against_numpy(noise, condition_number):
    instance = build("quadratic", 3, condition_number=condition_number, noise=noise)
    x, y = (t.double().numpy() for t in instance.batch(0))
    # MSE Hessian 2/n X^T X: eigenvalues from 2 down to 2 / condition_number
    eigenvalues = np.linalg.eigvalsh(2 * x.T @ x / len(x))
    assert eigenvalues.max() == pytest.approx(2, rel=1e-5)
    assert eigenvalues.max() / eigenvalues.min() == pytest.approx(condition_number, rel=1e-4)
    solution = np.linalg.lstsq(x, y, rcond=None)[0]
    optimum = np.mean((x @ solution - y) ** 2)
    assert instance.optima["MSELoss"] == pytest.approx(optimum, rel=1e-9, abs=1e-18)
    if noise:
        assert optimum == pytest.approx(noise**2 * (40 - 20) / 40, rel=0.5)
    else:
        assert optimum < 1e-13


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_lbfgs_reaches_the_quadratic_optimum(seed, noise):
    """Tolerance: float32 training stops about 1e-13 above a zero optimum and
    within about 1e-6 (relative) of a positive one; bounds are 10x that."""
    instance = build("quadratic", seed, noise=noise)
    final = lbfgs(instance, torch.nn.MSELoss())
    optimum = instance.optima["MSELoss"]
    assert abs(final - optimum) <= 1e-5 * optimum + 1e-12, (final, optimum)


def test_rosenbrock_is_scipys_rosen_and_zero_at_ones():
    instance = build("rosenbrock", 2, dim=7)
    start = instance.model.x.detach().double().numpy()
    assert instance.model().item() == pytest.approx(optimize.rosen(start), rel=1e-6)
    assert np.all(np.abs(start - 1) <= 1)  # 1 + U(-1, 1)
    with torch.no_grad():
        instance.model.x.fill_(1.0)
    assert instance.model().item() == 0.0 == problems.declaration("rosenbrock").optimum


@pytest.mark.parametrize("dim", [2, 10])
@pytest.mark.parametrize("seed", range(4))
def test_lbfgs_reaches_the_rosenbrock_minimum(dim, seed):
    """Tolerance: f <= 1e-9 and every coordinate within 1e-4 of 1 (float32 L-BFGS
    stops near f = 1e-12, 1e-6 from (1, ..., 1))."""
    instance = build("rosenbrock", seed, dim=dim)
    assert lbfgs(instance, None, iterations=2000) <= 1e-9
    assert torch.allclose(instance.model.x, torch.ones(dim), atol=1e-4)


def logistic_data(instance):
    x, y = (t.double().numpy() for t in instance.batch(0))
    return np.hstack([x, np.ones((len(x), 1))]), y[:, 0]


def scipy_logistic_minimum(design, y) -> float:
    def loss_and_gradient(w):
        z = design @ w
        loss = np.mean(np.logaddexp(0, z) - y * z)
        return loss, design.T @ (1 / (1 + np.exp(-z)) - y) / len(y)

    result = optimize.minimize(
        loss_and_gradient, np.zeros(design.shape[1]), jac=True, method="BFGS", tol=1e-12
    )
    assert np.linalg.norm(result.jac) < 1e-7
    return result.fun


def separable_by_linprog(design, y) -> bool:
    """Feasibility of s_i (w . x_i) >= 1 with s_i = +-1: the data are separable."""
    signs = 2 * y - 1
    result = optimize.linprog(
        np.zeros(design.shape[1]),
        A_ub=-signs[:, None] * design,
        b_ub=-np.ones(len(y)),
        bounds=[(None, None)] * design.shape[1],
    )
    assert result.status in (0, 2), result.message
    return result.status == 0


@pytest.mark.parametrize("seed", range(3))
def test_nonseparable_logistic_optimum_matches_scipy_and_lbfgs_reaches_it(seed):
    """Tolerance: 1e-9 relative against scipy's float64 BFGS; float32 L-BFGS
    within 1e-6 (it stops about 1e-8 away)."""
    instance = build("logistic", seed, label_noise=0.1)
    design, y = logistic_data(instance)
    assert not separable_by_linprog(design, y) and instance.info["separable"] is False
    reference = scipy_logistic_minimum(design, y)
    assert instance.optima["BCEWithLogitsLoss"] == pytest.approx(reference, rel=1e-9)
    final = lbfgs(instance, torch.nn.BCEWithLogitsLoss())
    assert abs(final - reference) < 1e-6


@pytest.mark.parametrize("seed", range(3))
def test_separable_logistic_has_infimum_zero(seed):
    instance = build("logistic", seed, label_noise=0.0)
    design, y = logistic_data(instance)
    assert separable_by_linprog(design, y)
    assert instance.info["separable"] is True and instance.optima["BCEWithLogitsLoss"] == 0.0
    assert instance.info["flipped_labels"] == 0


def test_logistic_label_noise_flips_about_that_share_of_labels():
    flipped = [build("logistic", s, label_noise=0.2).info["flipped_labels"] for s in range(10)]
    assert 0.15 < sum(flipped) / 2000 < 0.25


def huber(residual, delta=1.0):
    small = np.abs(residual) <= delta
    return np.where(small, residual**2 / 2, delta * (np.abs(residual) - delta / 2))


@pytest.mark.parametrize("noise", [0.05, 0.5, 1.0, 3.0])
def test_noisy_quadratic_expected_optima_against_numerical_integration(noise):
    optima = build("noisy_quadratic", 0, noise=noise).optima
    losses = {
        "MSELoss": np.square,
        "L1Loss": np.abs,
        "HuberLoss": huber,
        "SmoothL1Loss": huber,  # beta 1: the same function as Huber with delta 1
    }
    for name, loss in losses.items():
        expected = integrate.quad(
            lambda e, loss=loss: loss(e) * np.exp(-((e / noise) ** 2) / 2),
            -np.inf,
            np.inf,
            epsabs=1e-14,
        )[0] / (noise * np.sqrt(2 * np.pi))
        assert optima[name] == pytest.approx(expected, rel=1e-8), name
    # Each torch loss, at a zero residual plus Gaussian noise of this scale
    residuals = torch.randn(200_000, generator=torch.Generator().manual_seed(0)) * noise
    for name in losses:
        sample = float(getattr(torch.nn, name)()(residuals, torch.zeros_like(residuals)))
        assert sample == pytest.approx(optima[name], rel=0.02), name


@pytest.mark.parametrize("rotate", [True, False])
def test_noisy_quadratic_samples_have_the_stated_covariance_and_noise(rotate):
    instance = build("noisy_quadratic", 1, steps=2500, rotate=rotate, condition_number=50.0)
    x, y = instance.inputs.double().numpy(), instance.targets.double().numpy()
    covariance = x.T @ x / len(x)  # 20,000 samples: about 1 % sampling error
    expected = 50.0 ** -(np.arange(10) / 9)
    assert np.linalg.eigvalsh(covariance)[::-1] == pytest.approx(expected, rel=0.06)
    if not rotate:  # axis-aligned: the covariance is diagonal
        assert np.abs(covariance - np.diag(np.diag(covariance))).max() < 0.03
    solution = np.linalg.lstsq(x, y, rcond=None)[0]
    assert np.mean((x @ solution - y) ** 2) == pytest.approx(0.1**2, rel=0.03)
    batch_inputs, _ = instance.batch(7)
    assert torch.equal(batch_inputs, instance.inputs[56:64])  # step after step


# ------------------------------------------------------------------- digits


def test_digits_are_scikit_learns_images_and_labels():
    from sklearn.datasets import load_digits  # the reference reader (slow import)

    reference = load_digits()
    instance = build("digits_mlp", 0, steps=100)
    assert np.array_equal(instance.inputs.numpy() * 16, reference.data.astype(np.float32))
    assert np.array_equal(instance.targets.numpy(), reference.target)
    assert instance.info == {"training_images": 1438, "heldout_images": 359}


def test_digits_heldout_rows_are_exactly_the_rows_not_trained_on():
    instance = build("digits_mlp", 4, steps=45)  # 45 x 32 = 1,440 rows: one epoch and 2
    first_epoch = instance.index.flatten()[:1438]
    assert len(set(first_epoch.tolist())) == 1438
    held = sorted(set(range(1797)) - set(first_epoch.tolist()))
    assert torch.equal(instance.heldout[1].sort().values, instance.targets[held].sort().values)
    assert len(held) == len(instance.heldout[0]) == 359


def test_digits_mlp_learns_far_above_chance():
    """Measured: 0.95-0.97 held-out accuracy after 300 Adam steps (lr 0.01), seeds 0-2."""
    instance = build("digits_mlp", 1, steps=300)
    criterion = torch.nn.CrossEntropyLoss()
    before = instance.evaluate(criterion)
    optimizer = torch.optim.Adam(instance.model.parameters(), lr=0.01)
    for step in range(300):
        optimizer.zero_grad()
        instance.loss(criterion, *instance.batch(step)).backward()
        optimizer.step()
    after = instance.evaluate(criterion)
    assert before["heldout_accuracy"] < 0.3 and after["heldout_accuracy"] > 0.9
    assert after["heldout_loss"] < before["heldout_loss"] / 5


# ---------------------------------------------------------------- instance


def test_evaluate_computes_loss_and_accuracy_by_hand():
    instance = build("logistic", 0)
    lbfgs(instance, torch.nn.BCEWithLogitsLoss(), iterations=5)  # partly trained: logits spread
    instance.heldout = (instance.inputs, instance.targets)
    result = instance.evaluate(torch.nn.BCEWithLogitsLoss())
    logits = instance.model(instance.inputs).detach().double().numpy()[:, 0]
    labels = instance.targets.double().numpy()[:, 0]
    expected = np.mean(np.logaddexp(0, logits) - labels * logits)
    assert result["heldout_loss"] == pytest.approx(expected, rel=1e-6)
    assert result["heldout_accuracy"] == np.mean((logits > 0) == (labels == 1)) > 0.7
    assert build("quadratic").evaluate(torch.nn.MSELoss()) is None  # no held-out data


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        (lambda i: setattr(i, "targets", i.targets * 2), "binary targets must be 0 or 1"),
        (lambda i: setattr(i, "targets", i.targets[:, 0]), "float targets shaped like"),
        (lambda i: setattr(i, "index", torch.zeros(3, 2, dtype=torch.int64)), "index has 3 steps"),
        (lambda i: setattr(i, "index", torch.full((40, 2), 999)), "index points outside"),
        (lambda i: setattr(i, "kind", "classification"), "int64 targets"),
    ],
)
def test_instance_that_breaks_the_contract_is_refused(spoil, expected):
    instance = build("logistic", 0)
    spoil(instance)
    with pytest.raises(ProblemError, match=expected):
        instance.check(40)


def test_user_build_returning_the_wrong_kind_is_refused(tmp_path):
    write_problem(
        tmp_path,
        "wrong",
        '''
        """Says objective, builds regression."""
        import torch
        from optbench.problems.instance import Instance
        KIND = "objective"
        PARAMETERS = {}
        STOCHASTIC = False
        OPTIMUM = None


        def build(seed, steps):
            x = torch.ones(2, 1)
            return Instance("regression", torch.nn.Linear(1, 1), x, x)
        ''',
    )
    with pytest.raises(ProblemError, match="kind 'regression' but KIND is 'objective'"):
        build("wrong", user_dir=tmp_path)


@pytest.mark.parametrize("name", BUILTINS)
def test_runs_of_one_problem_stack_for_a_batched_engine(name):
    """torch.func over stacked weights and stacked data gives each run's own loss."""
    from torch.func import functional_call, stack_module_state, vmap

    runs = [build(name, seed) for seed in (0, 1, 2)]
    kind = runs[0].kind
    weights, buffers = stack_module_state([run.model for run in runs])
    skeleton = copy.deepcopy(runs[0].model).to("meta")
    stacked = stack(runs)
    criterion = CRITERIA[kind]()
    unreduced = None if criterion is None else type(criterion)(reduction="none")
    for step in (0, 17):
        inputs, targets = stacked.batch(step)
        if kind == "objective":
            batched = vmap(lambda w, b: functional_call(skeleton, (w, b), ()))(weights, buffers)
        else:

            def one_run(w, b, x, t):
                return unreduced(functional_call(skeleton, (w, b), (x,)), t).mean()

            batched = vmap(one_run)(weights, buffers, inputs, targets)
        looped = torch.stack([run.loss(criterion, *run.batch(step)) for run in runs])
        # vmap turns mm into bmm, which may round differently in the last bit
        torch.testing.assert_close(batched, looped, rtol=1e-6, atol=1e-7)
        for number, run in enumerate(runs):
            expected = run.batch(step)
            if kind == "objective":
                assert expected == (None, None) and (inputs, targets) == (None, None)
            else:
                assert torch.equal(inputs[number], expected[0])
                assert torch.equal(targets[number], expected[1])
    shared = ("digits_mlp", "digits_cnn", "rosenbrock", "text_transformer")
    assert stacked.shared == (name in shared)


def test_to_moves_model_and_all_data_and_returns_the_instance():
    instance = build("digits_mlp", 0)
    moved = instance.to(torch.device("meta"))
    assert moved is instance
    tensors_after = [instance.inputs, instance.targets, instance.index, *instance.heldout]
    assert all(t.device.type == "meta" for t in tensors_after)
    assert all(p.device.type == "meta" for p in instance.model.parameters())


def test_docs_describe_every_builtin_problem():
    text = (REPO / "docs" / "problems.md").read_text()
    for name in BUILTINS:
        assert f"### `{name}`" in text, name


def test_breast_cancer_is_scikit_learns_data_standardised_on_the_training_split():
    from sklearn.datasets import load_breast_cancer  # the reference reader (slow import)

    reference = load_breast_cancer()
    instance = build("breast_cancer_mlp", 2, steps=30)
    held = instance.info["heldout_rows"]
    assert (held, instance.info["training_rows"]) == (114, 455)  # round(0.2 x 569)
    training = sorted(set(range(569)) - set(torch.unique(instance.index).tolist()))
    assert len(training) <= held  # rows never trained on can only be held out
    # Standardised with the training split's mean and (population) deviation, in float64.
    order = torch.randperm(569, generator=torch.Generator().manual_seed(2))
    rows = reference.data[order[held:].numpy()]
    expected = (reference.data - rows.mean(axis=0)) / rows.std(axis=0)
    np.testing.assert_allclose(instance.inputs.numpy(), expected, rtol=1e-6, atol=1e-6)
    assert instance.inputs.dtype == torch.float32
    assert instance.targets[:, 0].tolist() == reference.target.astype(float).tolist()


def test_digits_cnn_sees_the_digits_as_images_and_learns_far_above_chance():
    instance = build("digits_cnn", 1, steps=150)
    images, _ = build("digits_mlp", 1, steps=1).inputs, None
    assert torch.equal(instance.inputs.reshape(1797, 64), images)
    assert [type(m).__name__ for m in instance.model] == [
        "Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear"
    ]  # fmt: skip
    optimizer = torch.optim.Adam(instance.model.parameters(), lr=0.01)
    criterion = torch.nn.CrossEntropyLoss()
    for step in range(150):
        optimizer.zero_grad()
        instance.loss(criterion, *instance.batch(step)).backward()
        optimizer.step()
    assert instance.evaluate(criterion)["heldout_accuracy"] > 0.85  # chance: 0.1


def test_text_transformer_reads_torchs_optim_sources_and_holds_out_their_end():
    import hashlib
    import importlib.util

    root = Path(next(iter(importlib.util.find_spec("torch").submodule_search_locations)))
    text = b"".join(path.read_bytes() for path in sorted((root / "optim").glob("*.py")))
    instance = build("text_transformer", 3, steps=50)
    info = instance.info
    assert info["corpus_sha256"] == hashlib.sha256(text).hexdigest()
    assert info["corpus_bytes"] == len(text) and info["heldout_bytes"] == round(0.1 * len(text))
    # Inputs and their next bytes are windows of the text itself.
    start = 12345
    assert bytes(instance.inputs[start].tolist()) == text[start : start + 32]
    assert bytes(instance.targets[start].tolist()) == text[start + 1 : start + 33]
    # No training window reaches into the held-out end; the held-out windows tile it.
    first_heldout = len(text) - info["heldout_bytes"]
    assert int(instance.index.max()) + 32 < first_heldout
    # Held out: every k-th of the held-out text's non-overlapping 33-byte windows,
    # k the smallest stride that keeps at most 256 of them.
    inputs, targets = instance.heldout
    windows = info["heldout_bytes"] // 33
    stride = -(-windows // 256)
    assert len(inputs) == -(-windows // stride) <= 256
    for number in (0, 1, len(inputs) - 1):
        start = first_heldout + number * stride * 33
        assert bytes(inputs[number].tolist()) == text[start : start + 32]
        assert bytes(targets[number].tolist()) == text[start + 1 : start + 33]
    # Causal: a byte's logits do not depend on later bytes.
    tokens = instance.inputs[:2].clone()
    before = instance.model(tokens)[:, :, :10]
    tokens[:, 10:] = 0
    assert torch.equal(instance.model(tokens)[:, :, :10], before)


def test_text_transformer_refuses_another_corpus(monkeypatch):
    module = problems.load("text_transformer")
    module.corpus.cache_clear()
    monkeypatch.setattr(module, "CORPUS_SHA256", "0" * 64)
    try:
        with pytest.raises(problems.ProblemError, match="another torch gives another problem"):
            module.build(0, 5)
    finally:
        module.corpus.cache_clear()


def test_text_transformer_learns_the_text():
    instance = build("text_transformer", 0, steps=60)
    criterion = torch.nn.CrossEntropyLoss()
    before = instance.evaluate(criterion)["heldout_loss"]
    optimizer = torch.optim.Adam(instance.model.parameters(), lr=0.003)
    for step in range(60):
        optimizer.zero_grad()
        instance.loss(criterion, *instance.batch(step)).backward()
        optimizer.step()
    after = instance.evaluate(criterion)
    # From about uniform over the 256 byte values (ln 256 = 5.55 nats) to well below.
    assert before > 5.0 and after["heldout_loss"] < 3.6 and after["heldout_accuracy"] > 0.15
