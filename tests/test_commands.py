"""Job commands and code digests (optbench.planning.commands)."""

import shlex
import shutil

from conftest import REPO
from optbench.planning import commands

SCRIPTS = REPO / "workflow" / "scripts"


def test_a_job_follows_every_module_it_runs_and_no_other(tmp_path):
    """The cell summary's digest covers what summarize_cell.py imports, transitively
    (resolution.py, once missed by a hand-kept list), and nothing it does not run."""
    imported = commands.optbench_imports(SCRIPTS, "summarize_cell.py")
    assert "summarize_cell.py" in imported
    for module in ("reporting/cells.py", "reporting/runmetrics.py", "reporting/resolution.py"):
        assert f"optbench/{module}" in imported
    assert "optbench/runfiles.py" in imported
    assert not any("engines/" in name or "figures" in name for name in imported)
    copy = tmp_path / "scripts"
    shutil.copytree(SCRIPTS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = {s: commands.code_digest(copy, s) for s in ("summarize_cell.py", "plot.py")}
    resolution = copy / "optbench/reporting/resolution.py"
    resolution.write_text(resolution.read_text() + "\n# changed\n")
    after = {s: commands.code_digest(copy, s) for s in ("summarize_cell.py", "plot.py")}
    assert after["summarize_cell.py"] != before["summarize_cell.py"]
    figures = copy / "optbench/reporting/figures.py"
    figures.write_text(figures.read_text() + "\n# changed\n")
    assert commands.code_digest(copy, "summarize_cell.py") == after["summarize_cell.py"]
    assert commands.code_digest(copy, "plot.py") != after["plot.py"]


def test_the_training_digest_follows_the_builtin_problems_and_their_data_code(tmp_path):
    """A packed job reuses unchanged runs only while this digest holds (optbench.reuse):
    the built-in problems are loaded by name, so no import names them."""
    copy = tmp_path / "scripts"
    shutil.copytree(SCRIPTS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    digests = [commands.training_code_digest(copy)]
    for changed in ("optbench/problems/builtin/digits_cnn.py", "optbench/problems/datasets.py"):
        path = copy / changed
        path.write_text(path.read_text() + "\n# changed\n")
        digests.append(commands.training_code_digest(copy))
    assert len(set(digests)) == 3
    summary = copy / "optbench/reporting/figures.py"  # not training code
    summary.write_text(summary.read_text() + "\n# changed\n")
    assert commands.training_code_digest(copy) == digests[-1]


def test_commands_quote_paths_and_name_every_cell_field(tmp_path):
    scripts = tmp_path / "my scripts"
    made = commands.commands(
        "/opt/py 3/python",
        scripts,
        tmp_path / "problems",
        tmp_path / "my optimizers",
        "auto",
        "portable",
        "results/runs/{problem}/{loss}/{optimizer}/{variant}/seed{seed}.tsv",
        ("problem", "loss", "optimizer", "variant"),
        "results/run index",
    )
    words = shlex.split(made.train_packed.split(" > ")[0])
    assert words[:2] == ["/opt/py 3/python", str(scripts / "train.py")]
    assert "--engine" in words and words[words.index("--numerics") + 1] == "portable"
    assert "--manifest" in words and "--manifest" in made.train_one_seed
    assert words[words.index("--index") + 1] == "results/run index"
    assert words[words.index("--optimizers-dir") + 1] == str(tmp_path / "my optimizers")
    for field in ("problem", "loss", "optimizer", "variant"):
        assert f"--cell {field}={{wildcards.{field}:q}}" in made.summarize_cell
    # the run pattern's braces are doubled: Snakemake formats the command once more
    assert "{{problem}}" in made.summarize_cell and "tail -n 5" in made.train_one_seed
