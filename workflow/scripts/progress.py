"""How far a grid is: every training job's progress bar, then the grid's, from a second terminal.

Usage (from the repository root, while snakemake runs or after):

    python3 workflow/scripts/progress.py [--directory DIR] [--all] [FILE ...]

Reads the progress file each training job keeps beside its log
(``results/logs/train/**/*.log.progress.json``, optbench.progress) and prints,
per running job, a bar of its run-steps done of planned, its runs done of
planned, elapsed and estimated remaining time (the elapsed time scaled by the
steps still to do); ``--all`` lists finished and failed jobs too. The last
line is the grid's: run-steps done in every job that has started, of those
the config files FILE (default: DIR's config.yaml, merged as ``snakemake
--configfile`` merges them) plan. A job whose process has gone without
finishing is marked stalled. Reads files only; starts and stops nothing.
"""

import argparse
import sys
import time
from pathlib import Path

from optbench import progress
from optbench.planning import cost, settings

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
REPO = Path(__file__).resolve().parents[2]
BAR = 30


def bar(done: int, planned: int) -> str:
    filled = round(BAR * progress.share(done, planned))
    return "[" + "#" * filled + "." * (BAR - filled) + "]"


def planned_steps(directory: Path, files: list[str]) -> int | None:
    """The run-steps the config plans, or None when it cannot be read."""
    paths = files or ([directory / "config.yaml"] if (directory / "config.yaml").is_file() else [])
    if not paths:
        return None
    try:
        config = settings.load_config_files([str(path) for path in paths])
        experiment = settings.validate(
            config,
            SCHEMA,
            problems_dir=REPO / "problems",
            optimizers_dir=REPO / "optimizers",
            memory_bytes=None,
        )
    except settings.ConfigError as error:
        print(f"the config cannot be read, no grid total: {error}", file=sys.stderr)
        return None
    return cost.plan_for(experiment).run_steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directory", default=".", help="where snakemake runs (its --directory)")
    parser.add_argument("--all", action="store_true", help="list finished jobs too")
    parser.add_argument("files", nargs="*", help="the config files of the run")
    args = parser.parse_args(argv)
    directory = Path(args.directory)
    now = time.time()
    logs = directory / "results" / "logs" / "train"
    records = {}
    for path in sorted(logs.rglob(f"*{progress.SUFFIX}")):
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
    total = planned_steps(directory, args.files)
    if total is None:
        total = sum(r["steps_planned"] for r in records.values())
        scope = "of the jobs that have started"
    else:
        scope = "of the grid"
    if not records:
        print(f"no training job has started in {directory.resolve()} yet")
    print(
        f"{bar(min(done, total), total)} grid: {min(done, total):,} of {total:,} run-steps "
        f"{scope} ({progress.share(min(done, total), total):.0%}); {running} job(s) running, "
        f"{finished} finished"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
