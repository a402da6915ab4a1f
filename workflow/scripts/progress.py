"""How far a grid is: every training job's progress bar, then the grid's, from a second terminal.

Usage (from the repository root, while snakemake runs or after):

    python3 workflow/scripts/progress.py [--directory DIR] [--all] [FILE ...]

Reads the study that the config files FILE (default: DIR's config.yaml,
merged as ``snakemake --configfile`` merges them) describe: the progress file
each of its training jobs keeps beside its log
(``<study folder>/logs/train/**/*.log.progress.json``, optbench.progress;
the study folder is results/ for config.yaml, results/<study>/ otherwise) and
prints, per running job, a bar of its run-steps done of planned, its runs done
of planned, elapsed (until it ended, for a finished job) and estimated
remaining time (the elapsed time scaled by the steps still to do); ``--all``
lists finished and failed jobs too. The last line is the grid's: run-steps
done in the jobs the config plans, of those it plans; jobs of other studies,
and of this study's earlier grids (another seed range), are not counted. A
job whose process has gone without finishing is marked stalled. Reads files
only; starts and stops nothing.
"""

import argparse
import sys
import time
from pathlib import Path

from optbench import progress
from optbench.planning import cost, settings, studies

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
REPO = Path(__file__).resolve().parents[2]
BAR = 30


def bar(done: int, planned: int) -> str:
    filled = round(BAR * progress.share(done, planned))
    return "[" + "#" * filled + "." * (BAR - filled) + "]"


def read_plan(directory: Path, files: list[str]):
    """(study folder, planned run-steps, planned job logs) of the config; the
    steps and logs are None when the config cannot be read."""
    paths = files or ([directory / "config.yaml"] if (directory / "config.yaml").is_file() else [])
    root = studies.results_root(studies.study_name(None, files))
    if not paths:
        return root, None, None
    try:
        config = settings.load_config_files([str(path) for path in paths])
        root = studies.results_root(studies.study_name(config.get("study"), files))
        experiment = settings.validate(
            config,
            SCHEMA,
            problems_dir=REPO / "problems",
            optimizers_dir=REPO / "optimizers",
            memory_bytes=None,
        )
    except settings.ConfigError as error:
        print(f"the config cannot be read, no grid total: {error}", file=sys.stderr)
        return root, None, None
    logs = set(experiment.job_files(root, "logs", ".log"))
    return root, cost.plan_for(experiment).run_steps, logs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directory", default=".", help="where snakemake runs (its --directory)")
    parser.add_argument("--all", action="store_true", help="list finished jobs too")
    parser.add_argument("files", nargs="*", help="the config files of the run")
    args = parser.parse_args(argv)
    directory = Path(args.directory)
    now = time.time()
    root, total, planned_logs = read_plan(directory, args.files)
    logs = directory / root / "logs" / "train"
    records, earlier = {}, 0
    for path in sorted(logs.rglob(f"*{progress.SUFFIX}")):
        log = str(path.relative_to(directory)).removesuffix(progress.SUFFIX)
        if planned_logs is not None and log not in planned_logs:
            earlier += 1  # a job of an earlier grid of this study
            continue
        record = progress.read(path)
        if record is not None:
            records[str(path.relative_to(logs)).removesuffix(progress.SUFFIX)] = record
    shown = 0
    for name, record in records.items():
        state = "stalled" if progress.stalled(record, now) else record["state"]
        if state == progress.DONE and not args.all:
            continue
        done, planned = record["steps_done"], record["steps_planned"]
        print(
            f"{bar(done, planned)} {name}: {progress.describe(record, now)}"
            + (" (its process is gone)" if state == "stalled" else "")
        )
        shown += 1
    running = sum(r["state"] == progress.RUNNING for r in records.values())
    finished = sum(r["state"] == progress.DONE for r in records.values())
    done = sum(r["steps_done"] for r in records.values())
    if total is None:
        total = sum(r["steps_planned"] for r in records.values())
        scope = "of the jobs that have started"
    else:
        scope = "of the grid"
    if not records:
        print(f"no training job has started in {(directory / root).resolve()} yet")
    print(
        f"{bar(min(done, total), total)} grid: {min(done, total):,} of {total:,} run-steps "
        f"{scope} ({progress.share(min(done, total), total):.0%}); {running} job(s) running, "
        f"{finished} finished"
        + (f"; {earlier} job(s) of an earlier grid of this study not counted" if earlier else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
