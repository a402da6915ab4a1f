"""Studies: each configuration's outputs in a folder of their own, and the record
that says which configuration made them.

A study is named by config key ``study``, by default the stem of its config
file (``--configfile configs/mine.yaml``: ``mine``; several files: their
stems joined by ``+``). The default configuration, ``config.yaml``, is the
study ``config`` and keeps the documented paths under ``results/``; every
other study writes everything (runs, manifests, summaries, figures, logs,
benchmarks, progress files) under ``results/<study>/``. A study's name
therefore may not be one of the default study's own folders.

When a study's figures and tables are made, its last job writes
``<root>/study.json``: the study, its config files and the SHA-256 of what it
was configured to compute (``config_digest``). ``snakemake --report`` reads
the study the config given to it names, and is refused while that record is
missing or names another digest: the report would mix results and a
description of different grids.

Standard library only (parsed in every snakemake invocation).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

RESULTS = "results"
DEFAULT_CONFIG = "config.yaml"
DEFAULT_STUDY = Path(DEFAULT_CONFIG).stem
# Shared by every study: settings digest -> where such a run's files are
# (optbench.reuse), so that no study trains a run another one already holds.
RUN_INDEX = f"{RESULTS}/run-index"
# The default study's own folders under results/ (and the shared index): a
# study of that name would write into them.
# (columnar: the Parquet tables; merge: what tools/bundle.py's merge records;
# the shared run-index last.)
RESERVED = ("runs", "manifests", "summary", "figures", "logs", "benchmarks", "columnar", "merge")
RESERVED += ("run-index",)
RECORD = "study.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def study_name(configured: str | None, config_files) -> str:
    """Config key ``study`` if set, else the stems of the config files (``+``-joined);
    no config file given: the default study."""
    if configured:
        return str(configured)
    files = [Path(str(path)) for path in config_files] or [Path(DEFAULT_CONFIG)]
    return "+".join(path.stem for path in files)


def name_problems(name: str) -> list[str]:
    """Why ``name`` cannot name a study's folder ([] when it can)."""
    if not _NAME.fullmatch(name) or name.endswith(".") or ".." in name:
        return [
            f"config key study (by default the config file's stem): {name!r} cannot name "
            f"a folder under {RESULTS}/. Fix: use "
            "letters, digits, '.', '_', '-' or '+', starting with a letter or digit "
            "(study: my-study)."
        ]
    if name in RESERVED:
        return [
            f"config key study (by default the config file's stem): {name!r} is a folder "
            "of the default study "
            f"({RESULTS}/{name}/), so this study's outputs would mix with it. Fix: set "
            f"study to another name (study: {name}-study), or rename the config file "
            "(the study defaults to its stem)."
        ]
    return []


def results_root(study: str) -> str:
    """Where the study writes: results/ for the default study, results/<study>/ otherwise."""
    return RESULTS if study == DEFAULT_STUDY else f"{RESULTS}/{study}"


def config_digest(config: dict, run_specs) -> str:
    """SHA-256 of what a study computes: its config as Snakemake merged it (files
    and --config) and each run's settings (which hold the digests of users'
    optimizer files, so editing one changes the study too)."""
    text = json.dumps(
        {"config": config, "runs": sorted(map(str, run_specs))}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()


def write_record(path, study: str, config_files, digest: str) -> None:
    from optbench import runfiles

    record = {
        "study": study,
        "config_files": [str(f) for f in config_files],
        "config_sha256": digest,
    }
    runfiles.write_text_atomic(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def _shown(path) -> str:
    """A config file as a user would type it: relative where it is under the current folder."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _command(config_files, report: bool) -> str:
    files = [_shown(f) for f in config_files]
    given = f" --configfile {' '.join(files)}" if files else ""
    return f"snakemake {'--report report.html' if report else '--cores all'}{given}"


def report_refusal(root: str, study: str, config_files, digest: str) -> str | None:
    """Why a report of the study at ``root`` must not be built with this config
    (None: its results were made by this config, to the end)."""
    record_path = Path(root, RECORD)
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    run = _command(config_files, report=False)
    if not isinstance(record, dict):
        return (
            f"Cannot build the report of study {study!r}: {record_path} is missing, so "
            f"{root}/ holds no finished results of this configuration (the workflow has not "
            f"run to its end with it). Fix: run `{run}` first, then build the report."
        )
    if record.get("config_sha256") == digest:
        return None
    made_by = record.get("config_files") or [DEFAULT_CONFIG]
    return (
        f"Cannot build the report of study {study!r}: its results in {root}/ were made "
        f"with another configuration (config files {', '.join(map(_shown, made_by))}; "
        f"SHA-256 {str(record.get('config_sha256'))[:12]}, this one {digest[:12]}), so "
        "the report would describe one grid and show the tables of another. Fix: run "
        f"`{run}` (with the same --config options, if any) to bring the results up to "
        f"date, or build the report with the config that made them: "
        f"`{_command(made_by, report=True)}`."
    )
