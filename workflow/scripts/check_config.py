"""Checks config files before Snakemake reads them, with every problem at once.

Usage (from the repository root):

    python3 workflow/scripts/check_config.py [FILE ...]

The files are merged in order, as ``snakemake --configfile FILE ...`` merges
them, and keys they leave out take the schema's defaults; with no file,
config.yaml is checked. Exits 0 and prints the grid's size when the
configuration is usable, else 1 with one line per problem. The size comes
with the plan (runs, memory, time) and the power of the planned tests: per
family of tests, the smallest p-value these evaluation seeds can give after
the multiplicity correction, and the seeds needed where no difference could
be significant.

Unlike Snakemake, which copies every mapping of a config file while it loads
it, this reads each file with YAML aliases still shared and measures its size
first, so a config file that expands to millions of values is refused in well
under a second. Run it on a config file you did not write.
"""

import argparse
import sys
from pathlib import Path

from optbench.planning import cost, settings
from optbench.reporting import analysis_context

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
# The repository's folders of user problems and optimizers, as the workflow's.
PROBLEMS_DIR = Path(__file__).resolve().parents[2] / "problems"
OPTIMIZERS_DIR = Path(__file__).resolve().parents[2] / "optimizers"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", default=["config.yaml"], help="config files")
    args = parser.parse_args(argv)
    try:
        config = settings.load_config_files(args.files)
        experiment = settings.validate(
            config, SCHEMA, problems_dir=PROBLEMS_DIR, optimizers_dir=OPTIMIZERS_DIR
        )
    except settings.ConfigError as error:
        count = len(error.problems)
        print(f"{count} problem{'s' if count > 1 else ''}:\n{error}", file=sys.stderr)
        return 1
    print(f"ok: {describe(experiment)}")
    print(cost.plan_for(experiment).describe(cost.machine_bytes()))
    for line in analysis_context.power_lines(experiment):
        print(line)
    return 0


def describe(experiment) -> str:
    """The grid's size in the terms that multiply: cells (each problem's losses x
    optimizer variants) times seeds of both roles."""
    cells = experiment.cells()
    pairs = len({(cell.problem, cell.loss) for cell in cells})
    variants = sum(len(optimizer.variants) for optimizer in experiment.optimizers.values())
    seeds = len(experiment.all_seeds)
    return (
        f"{experiment.n_runs} runs = {len(cells)} cells x {seeds} seeds "
        f"({len(experiment.seeds)} evaluation, {len(experiment.tuning_seeds)} tuning); cells: "
        f"{pairs} (problem, loss) pairs of {len(experiment.problems)} problem(s) x "
        f"{variants} optimizer variants of {len(experiment.optimizers)} optimizer(s)"
    )


if __name__ == "__main__":
    sys.exit(main())
