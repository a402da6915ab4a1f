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


def test_imports_are_found_at_any_depth_as_a_full_walk_of_the_tree_finds_them(tmp_path):
    """The digest's import scan walks statements only; a walk of every node
    (ast.walk) is the reference, over every module of the library and a file
    that hides imports in functions, classes, try/except, with, match and loops."""
    import ast

    def reference(path):
        found = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                found += [alias.name for alias in node.names]
        return sorted(found)

    hidden = tmp_path / "hidden.py"
    hidden.write_text(
        "import a\n"
        "def f():\n    import b.c\n    class K:\n        from d import e\n"
        "try:\n    import g\nexcept ImportError:\n    import h\nelse:\n    import i\n"
        "finally:\n    import j\n"
        "with open(x):\n    for k in y:\n        while z:\n            import m\n"
        "        else:\n            import n\n"
        "match v:\n    case 1:\n        import o as p\n"
        "if q:\n    pass\nelif r:\n    from s import (t,\n        u)\n"
        "from . import relative\n"
    )
    files = [hidden, *SCRIPTS.rglob("*.py")]
    for path in files:
        assert sorted(commands._imported_modules(path)) == reference(path), path
    assert len(commands._imported_modules(hidden)) == 14  # a, b.c, d, d.e, g ... s, s.t, s.u
    # an edit is seen: the cache is keyed by the file's bytes (tests/test_start_caches.py)
    hidden.write_text(hidden.read_text() + "import w\n")
    assert "w" in commands._imported_modules(hidden)
