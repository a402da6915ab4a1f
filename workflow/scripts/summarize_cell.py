"""Rule summarize_cell: one grid cell's runs -> its per-step statistics and per-run finals.

Called as a plain command, not through ``script:``: one job per cell runs on
the submitting host, and this way a job imports numpy only
(no Snakemake, pandas or scipy). Usage:

    python summarize_cell.py \
        --pattern 'results/runs/{problem}/{loss}/{optimizer}/{variant}/seed{seed}.tsv' \
        --steps 40 --cell problem=linear --cell loss=mse --cell optimizer=sgd \
        --cell variant=base --threshold relative:0.001 --out CELL.json RUN.tsv [RUN.tsv ...]

The cell's identity is checked against every run's path (fields of the pattern);
each run's sidecar (``seed{N}.json`` beside its TSV) is read for held-out values.
"""

import argparse
import sys

from optbench import cells, runfiles


def field_value(text: str) -> tuple[str, str]:
    field, equals, value = text.partition("=")
    if not (field and equals and value):
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, found {text!r}")
    return field, value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pattern", required=True, help="the run-path pattern, {field} per field")
    parser.add_argument("--steps", type=int, required=True, help="steps every run must have")
    parser.add_argument(
        "--cell",
        action="append",
        required=True,
        type=field_value,
        metavar="FIELD=VALUE",
        help="the cell, one field each",
    )
    parser.add_argument(
        "--threshold",
        default="relative:0.001",
        help="steps-to-threshold level: relative:X (X times the initial loss) or absolute:X",
    )
    parser.add_argument("--out", required=True, help="the cell summary (JSON) to write")
    parser.add_argument("runs", nargs="+", help="the cell's run TSVs")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    identity = dict(args.cell)
    try:
        threshold = cells.Threshold.parse(args.threshold)
        cell = cells.read_cell(args.runs, args.pattern, identity, args.steps)
        summary = cells.cell_summary(cell, threshold)
    except (cells.CellError, runfiles.RunFileError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    runfiles.write_text_atomic(args.out, cells.format_cell_summary(summary))
    print(f"{len(cell.seeds)} runs of {cell.identity} -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
