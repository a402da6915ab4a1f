"""The job command lines, conda environments and code digests the rules use.

The rules (workflow/rules/*.smk) only wire: they take these strings as their
``shell:`` commands. Each is a constant for one invocation, so Snakemake formats
it at run time with nothing late-bound, and a one-run job needs no Python call
to make its command. Braces that Snakemake must leave alone are doubled.
"""

from __future__ import annotations

import ast
import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path

from optbench.planning import disk_cache
from optbench.progress import SUFFIX as PROGRESS_SUFFIX
from optbench.run_layout import PER_JOB, PER_RUN

# Conda environments (under --use-conda), relative to the rule files. Training
# takes the CUDA or the CPU build of torch as config torch_build says.
TRAIN_ENVS = {"cuda": "../../envs/train-cuda.yaml", "cpu": "../../envs/train-cpu.yaml"}
ANALYSIS_ENV = "../../envs/analysis.yaml"


def _to_log(job: str) -> str:
    """The log takes everything; a failed job also shows its log's last lines in
    the console (why it failed), not only the log's path."""
    return (
        f" > {{log:q}} 2>&1 || {{{{ status=$?; echo '{job} job failed; the end of {{log}}:' >&2;"
        " tail -n 5 {log:q} >&2; exit $status; }}"
    )


_TO_LOG = _to_log("training")
_SUMMARY_TO_LOG = _to_log("summary")


@dataclass(frozen=True)
class Commands:
    # Every training job writes a manifest of its runs last (runfiles.write_manifest).
    train_one_seed: str  # job_scope cell, one seed per job
    train_packed: str  # a range of seeds of one cell or more per job
    summarize_cell: str  # one cell and seed role (job_scope cell)
    summarize_group: str  # several cells (packed layouts)


def commands(
    python: str,
    scripts: Path,
    problems_dir: Path,
    optimizers_dir: Path,
    engine: str,
    numerics: str,
    run_pattern: str,
    cell_fields,
    run_index: str,
    checkpoint_every: tuple[int, float] = (0, 120.0),
    run_files: str = PER_RUN,
) -> Commands:
    """Every job command for this invocation's interpreter, paths and config;
    ``run_index``: the folder of the run index all studies share (optbench.reuse);
    ``checkpoint_every``: (steps, seconds) between a job's checkpoints (0: off)."""
    steps, seconds = checkpoint_every
    train = (
        f"{shlex.quote(python)} {shlex.quote(str(Path(scripts) / 'train.py'))}"
        f" --problems-dir {shlex.quote(str(problems_dir))}"
        f" --optimizers-dir {shlex.quote(str(optimizers_dir))}"
        f" --engine {engine} --numerics {numerics} --threads {{threads}}"
        f" --index {shlex.quote(run_index)} --manifest {{output.manifest:q}}"
        f" --checkpoint-steps {int(steps)} --checkpoint-seconds {float(seconds)!r}"
        # Beside the log: workflow/scripts/progress.py reads it (optbench.progress).
        f" --progress {{log:q}}{PROGRESS_SUFFIX}"
    )
    # per_job (optbench.run_layout): the jobs write, and the summaries read, one run
    # file per training job; the default's commands stay as they were.
    per_job = run_files == PER_JOB
    train_files = " --run-files per_job" if per_job else ""
    summary_files = " --manifests {input:q}" if per_job else ""
    summarize = f"{shlex.quote(python)} {shlex.quote(str(Path(scripts) / 'summarize_cell.py'))}"
    # The cell's identity is passed to be checked against every run's path,
    # parsed with the run-path pattern (its braces doubled: formatted once more).
    pattern = shlex.quote(run_pattern).replace("{", "{{").replace("}", "}}")
    cell = " ".join(f"--cell {field}={{wildcards.{field}:q}}" for field in cell_fields)
    return Commands(
        train_one_seed=(
            f"{train} --spec {{params.spec:q}} --run {{wildcards.seed}} {{output.tsv:q}}"
            f" {{output.sidecar:q}}{_TO_LOG}"
        ),
        train_packed=f"{train} --job {{params.job:q}}{train_files}{_TO_LOG}",
        summarize_cell=(
            f"{summarize} --pattern {pattern} --steps {{params.steps}} {cell}"
            " --threshold {params.threshold:q} --heldout-target={params.heldout_target:q}"
            f" --out {{output:q}} {{input.runs:q}}{_SUMMARY_TO_LOG}"
        ),
        summarize_group=f"{summarize} --group {{params.group:q}}{summary_files}{_SUMMARY_TO_LOG}",
    )


def optbench_imports(scripts: Path, script: str) -> list[str]:
    """The files of ``script`` and every optbench module it imports, transitively
    (read from the source, nothing is imported), as paths relative to ``scripts``."""
    scripts = Path(scripts)
    found: list[str] = []
    pending = [script]
    new: dict[str, list[str]] = {}
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.append(name)
        for module in _imported_modules(scripts / name, new):
            if module.split(".")[0] != "optbench":
                continue
            path = Path(*module.split("."))
            for candidate in (path.with_suffix(".py"), path / "__init__.py"):
                if (scripts / candidate).is_file():
                    pending.append(str(candidate))
    disk_cache.add(_IMPORTS_CACHE, new)  # once per call: one write, not one per file
    return sorted(found)


# The imports of a module are a function of its bytes alone, so they are kept
# by the bytes' SHA-256: in this process, and on disk (disk_cache) for every
# later snakemake start and training job, each of which digests scripts that
# share most of their modules. An edited file has other bytes, so its imports
# are read again: a kept entry can never be stale. (Reading and hashing the
# files costs milliseconds; parsing them, a tenth of a second per start.)
_IMPORTS_CACHE = "imports.json"
_IMPORTS: dict[str, tuple[str, ...]] = {}
_IMPORTS_READ = False
# Statement fields that hold nested statements (if/for/while/with/try/def/class/match).
_NESTED = ("body", "orelse", "finalbody", "handlers", "cases")


def _parsed_imports(source: bytes) -> tuple[str, ...]:
    """Absolute module names an import statement of ``source`` names anywhere."""
    modules: list[str] = []
    # Imports are statements: walking statements only (not every expression
    # node, as ast.walk does) finds them all at a fraction of the cost.
    pending = list(ast.parse(source.decode("utf-8")).body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        for field in _NESTED:
            pending += getattr(node, field, None) or []
    return tuple(modules)


def _known_imports() -> dict[str, tuple[str, ...]]:
    """This process's imports by content digest, with the disk cache's read in once."""
    global _IMPORTS_READ
    if not _IMPORTS_READ:
        _IMPORTS_READ = True
        for key, modules in disk_cache.read(_IMPORTS_CACHE).items():
            if isinstance(modules, list) and all(isinstance(m, str) for m in modules):
                _IMPORTS.setdefault(key, tuple(modules))
    return _IMPORTS


def _imported_modules(path: Path, new: dict | None = None) -> tuple[str, ...]:
    """Absolute module names an import statement of ``path`` names anywhere (nested
    ones included): ``from a.b import c`` gives a.b and a.b.c. Imports worked out
    here (not found in a cache) are added to ``new``, by content digest."""
    source = Path(path).read_bytes()
    key = hashlib.sha256(source).hexdigest()
    known = _known_imports()
    if key not in known:
        known[key] = _parsed_imports(source)
        if new is not None:
            new[key] = list(known[key])
        else:
            disk_cache.add(_IMPORTS_CACHE, {key: list(known[key])})
    return known[key]


def code_digest(scripts: Path, script: str, *more: str) -> str:
    """A digest of ``script`` (and ``more`` scripts) and all the optbench code they
    run. Snakemake re-runs a job when its command or script changes, not when the
    library code does; given as a param, this makes the job follow that code
    ("Params have changed")."""
    names = sorted({name for start in (script, *more) for name in optbench_imports(scripts, start)})
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + (Path(scripts) / name).read_bytes())
    return digest.hexdigest()[:12]


def training_code_digest(scripts: Path) -> str:
    """The code a training job runs: train.py, what it imports, and the built-in
    problems (loaded by name at run time, so no import statement names them)."""
    builtin = sorted(Path(scripts, "optbench", "problems", "builtin").glob("*.py"))
    return code_digest(scripts, "train.py", *(str(p.relative_to(scripts)) for p in builtin))
