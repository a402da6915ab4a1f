"""The repository describes its own reference experiment and points at nothing
outside itself."""

import ast
import os
import re
import subprocess
import textwrap

import pytest
import yaml

from conftest import REPO

DOC = REPO / "docs" / "reference-experiment.md"


# What a checkout holds besides the project's own files: git's folder, the
# virtual environment, outputs and caches (.gitignore), mutmut's copy.
NOT_SOURCE = {".git", ".venv", "results", ".snakemake", "__pycache__", ".pytest_cache",
              ".ruff_cache", "mutants", "src"}  # fmt: skip


def source_files(root=REPO) -> list[str]:
    """The project's files under ``root``, found without git, so that the suite
    also runs from a source archive with no ``.git``."""
    names = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in NOT_SOURCE)
        names += [
            os.path.relpath(os.path.join(folder, f), root)
            for f in sorted(files)
            if f not in NOT_SOURCE  # a worktree's .git is a file
        ]
    return names


def test_source_files_are_what_git_tracks(tmp_path):
    """Without .git the walk finds the tracked files (and nothing ignored)."""
    if not (REPO / ".git").exists():
        pytest.skip("no .git here: nothing to compare the walk with")
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    untracked = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    found = set(source_files())
    assert set(tracked) <= found
    assert found - set(tracked) <= set(untracked)


def test_no_file_points_outside_the_repository():
    pointing = [
        name
        for name in source_files()
        if not name.endswith(".png")
        and (REPO / name).is_file()
        and re.search(r"ARTICLE\.md|\.\./shared/", (REPO / name).read_text(errors="replace"))
        and name != "tests/test_docs.py"
    ]
    assert pointing == []


def test_reference_experiment_doc_states_the_default_grid():
    """Its grid table is config.yaml's optimizers, classes and settings."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    text = DOC.read_text()
    rows = re.findall(r"^\| `(\w+)` \| `torch\.optim\.(\w+)` \| (.+?) \|$", text, re.MULTILINE)
    documented = {}
    for name, cls, settings in rows:
        kwargs = {}
        if not settings.startswith("torch's defaults"):
            call = ast.parse(f"f({settings.strip('`')})", mode="eval").body
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        documented[name] = (cls, kwargs)
    configured = {
        name: (
            entry["class"],
            {k: tuple(v) if isinstance(v, list) else v for k, v in entry["kwargs"].items()},
        )
        for name, entry in config["optimizers"].items()
    }
    assert documented == configured
    assert config["steps"] == 40 and "40 steps" in text
    assert config["problems"] == {"linear": {"problem": "linear", "kwargs": {"dim": 20}}}
    assert "torch.nn.Linear(20, 20, bias=False)" in text
    assert {name: entry["class"] for name, entry in config["losses"].items()} == {
        "mse": "MSELoss",
        "l1": "L1Loss",
    }
    assert "`torch.nn.MSELoss()`" in text and "`torch.nn.L1Loss()`" in text
    assert "docs/reference-experiment.md" in (REPO / "config.yaml").read_text()


def test_readme_configuration_example_is_valid():
    """The README's one configuration passes the checks, with the grid it describes."""
    from conftest import SCHEMA
    from optbench.planning import settings

    text = (REPO / "README.md").read_text()
    (block,) = re.findall(r"```yaml\n(# my\.yaml.*?)```", text, re.DOTALL)
    experiment = settings.validate(yaml.safe_load(block), SCHEMA, problems_dir=REPO / "problems")
    assert experiment.n_runs == 16 * 13
    assert {(c.problem, c.loss) for c in experiment.cells()} == {
        ("quadratic", "mse"),
        ("digits_mlp", "ce"),
    }


def test_every_documentation_link_resolves():
    """Relative links of the README and docs/ point at files that exist."""
    broken = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.name}: {target}")
    assert broken == []


def test_the_report_page_lists_every_table_and_figure_the_registry_declares():
    from optbench.reporting import outputs

    page = (REPO / "docs" / "report.md").read_text()
    missing = [t.file for t in outputs.TABLES if f"`{t.file}`" not in page]
    missing += [f"{f.stem}.png" for f in outputs.FIGURES if f"`{f.stem}.png`" not in page]
    missing += [name for name in [outputs.EXPLORER_PAGE] if f"`{name}`" not in page]
    assert not missing, f"docs/report.md does not describe {missing}"


def test_the_problems_doc_names_a_user_problem_as_the_checks_accept_it(tmp_path):
    """docs/problems.md, "Adding your own problem", step 4: its YAML, with the template
    copied to problems/mine.py, passes the checks and sets what its comments say. (It
    showed a placeholder, `<name>: {samples: 128, hidden: 8}`, that the checks refuse.)"""
    import shutil

    from conftest import SCHEMA
    from optbench.planning import settings

    text = (REPO / "docs" / "problems.md").read_text()
    step = text.split("\n4. Name it in the configuration", 1)[1].split("\n5. ", 1)[0]
    (block,) = re.findall(r"```yaml\n(.*?)```", step, re.DOTALL)
    users = tmp_path / "problems"
    users.mkdir()
    shutil.copy(REPO / "problems" / "_template.py", users / "mine.py")
    config = yaml.safe_load(textwrap.dedent(block))
    experiment = settings.validate(config, SCHEMA, problems_dir=users)
    mine, wide = experiment.problems["mine"], experiment.problems["mine_wide"]
    assert (mine.problem, mine.losses, mine.steps) == ("mine", ("mse",), 100)
    assert mine.kwargs == {"samples": 128, "hidden": 8, "heldout_samples": 256}
    assert (wide.problem, wide.losses, wide.steps) == ("mine", ("mse",), 40)
    assert wide.kwargs["hidden"] == 64


def test_the_configuration_doc_error_example_is_what_the_checks_say():
    """docs/configuration.md, "Errors before anything runs": the message for the
    config it names, as Snakemake prints it (common.smk), line for line. Its list of
    known keys had lost five keys the schema gained."""
    from snakemake.utils import update_config

    from conftest import SCHEMA
    from optbench.planning import settings

    text = (REPO / "docs" / "configuration.md").read_text()
    section = text.split("### Errors before anything runs", 1)[1]
    (block,) = re.findall(r"```\n(Invalid configuration.*?)```", section, re.DOTALL)
    given = {"step": 40, "optimizers": {"sgd": {"class": "SGD", "kwargs": {"momentun": 0.9}}}}
    assert "`--config step=40 'optimizers={sgd: {class: SGD, kwargs: {momentun: 0.9}}}'`" in (
        section
    )
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(config, given)
    try:
        settings.validate(config, SCHEMA, command_line=given)
    except settings.ConfigError as error:
        said = f"Invalid configuration ({len(error.problems)} problems):\n{error}\n"
    else:
        raise AssertionError("the doc's example config passes the checks")
    assert block == said, "update the example in docs/configuration.md to what the checks say"
    known = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert f"Known keys: {', '.join(sorted(known['properties']))}." in block


def test_the_readme_says_what_has_run_on_a_gpu():
    """The README promised GPU workstations while docs/speed.md said CUDA was untested:
    while speed.md has no GPU measurement, the README says the CUDA path has not run on
    a GPU yet (and when one is measured, this test asks for the README to say so)."""
    readme = " ".join((REPO / "README.md").read_text().split())
    speed = " ".join((REPO / "docs" / "speed.md").read_text().split())
    measured_on_gpu = "| GPU rows | no GPU |" not in speed
    assert not measured_on_gpu, "a GPU was measured: update the README's GPU sentence"
    assert "untested on CUDA" in speed
    assert "GPU workstation" not in readme
    assert "**GPUs: not yet run on one.** The CUDA code path is there and is selected" in readme
