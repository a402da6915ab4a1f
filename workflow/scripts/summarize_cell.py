"""Rules summarize_*: grid cells' runs -> each cell's per-step statistics and per-run metrics.

Called as a plain command, not through ``script:``: one job per cell runs on
the submitting host, and this way a job imports numpy only
(no Snakemake, pandas or scipy). Usage:

    python summarize_cell.py \
        --pattern 'results/runs/{problem}/{loss}/{optimizer}/{variant}/seed{seed}.tsv' \
        --steps 40 --cell problem=linear --cell loss=mse --cell optimizer=sgd \
        --cell variant=base --threshold relative:0.001 [--heldout-target accuracy:0.9] \
        --out CELL.json RUN.tsv [RUN.tsv ...]

or, for a job summarising several cells (packed layouts: one job per training
job's group of cells, so a large grid is not hundreds of tiny jobs):

    python summarize_cell.py --group JSON

where JSON is ``jobs.summary_argument``'s (cells, seeds and path patterns).
The cell's identity is checked against every run's path (fields of the pattern);
each run's sidecar (``seed{N}.json`` beside its TSV) is read for held-out values.
"""

import argparse
import sys

from optbench import runfiles
from optbench.planning import jobs
from optbench.reporting import cells, job_cells


def field_value(text: str) -> tuple[str, str]:
    field, equals, value = text.partition("=")
    if not (field and equals and value):
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, found {text!r}")
    return field, value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", help="several cells at once (jobs.summary_argument's JSON)")
    parser.add_argument("--pattern", help="the run-path pattern, {field} per field")
    parser.add_argument("--steps", type=int, help="steps every run must have")
    parser.add_argument(
        "--cell",
        action="append",
        type=field_value,
        metavar="FIELD=VALUE",
        help="the cell, one field each",
    )
    parser.add_argument(
        "--threshold",
        default="relative:0.001",
        help="steps-to-threshold level: relative:X (X times the initial loss) or absolute:X",
    )
    parser.add_argument(
        "--heldout-target",
        default="",
        help="held-out level: loss:X (at most X) or accuracy:X (at least X); empty: none",
    )
    parser.add_argument(
        "--manifests",
        nargs="+",
        help="with --group, run_files per_job: the training jobs' manifests, whose run "
        "files hold the runs (optbench.jobfiles)",
    )
    parser.add_argument("--out", help="the cell summary (JSON) to write")
    parser.add_argument("runs", nargs="*", help="the cell's run TSVs")
    args = parser.parse_args(argv)
    single = (args.pattern, args.steps, args.cell, args.out, args.runs or None)
    if args.group is None and None in single:
        parser.error("give --group, or --pattern, --steps, --cell, --out and the run TSVs")
    if args.manifests and args.group is None:
        parser.error("--manifests goes with --group")
    if args.group is not None and any(value is not None for value in single):
        parser.error("--group names its cells, runs and outputs itself; give nothing else")
    return args


def tasks(args) -> tuple[str, list[jobs.SummaryTask]]:
    """The run-path pattern and the cells to summarise."""
    if args.group is not None:
        return jobs.expand_summary(args.group)
    return args.pattern, [
        jobs.SummaryTask(
            dict(args.cell), args.steps, args.threshold, args.runs, args.out, args.heldout_target
        )
    ]


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        pattern, todo = tasks(args)
        if args.manifests:  # run_files per_job: one cell at a time from the run files
            locations = job_cells.run_locations(args.manifests)
            cache = job_cells.RunFileCache()
            fields = [name for name in cells.path_regex(pattern).groupindex if name != "seed"]
        for task in todo:
            if args.manifests:
                identity = {name: task.identity[name] for name in fields}
                cell = job_cells.read_cell(task.runs, locations, identity, task.steps, cache)
            else:
                cell = cells.read_cell(task.runs, pattern, task.identity, task.steps)
            summary = cells.cell_summary(
                cell,
                cells.Threshold.parse(task.threshold),
                cells.HeldoutTarget.parse(task.heldout_target),
            )
            runfiles.write_text_atomic(task.out, cells.format_cell_summary(summary))
            print(f"{len(cell.seeds)} runs of {cell.identity} -> {task.out}", file=sys.stderr)
    except (cells.CellError, runfiles.RunFileError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
