"""Checks config files before Snakemake reads them, with every problem at once.

Usage (from the repository root):

    python3 workflow/scripts/check_config.py [FILE ...]

The files are merged in order, as ``snakemake --configfile FILE ...`` merges
them, and keys they leave out take the schema's defaults; with no file,
config.yaml is checked. Exits 0 and prints the grid's size when the
configuration is usable, else 1 with one line per problem.

Unlike Snakemake, which copies every mapping of a config file while it loads
it, this reads each file with YAML aliases still shared and measures its size
first, so a config file that expands to millions of values is refused in well
under a second. Run it on a config file you did not write.
"""

import argparse
import sys
from pathlib import Path

from optbench import settings

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", default=["config.yaml"], help="config files")
    args = parser.parse_args(argv)
    try:
        experiment = settings.validate(settings.load_config_files(args.files), SCHEMA)
    except settings.ConfigError as error:
        count = len(error.problems)
        print(f"{count} problem{'s' if count > 1 else ''}:\n{error}", file=sys.stderr)
        return 1
    print(
        f"ok: {experiment.n_runs} runs ({len(experiment.losses)} losses x "
        f"{len(experiment.optimizers)} optimizers x {len(experiment.seeds)} seeds)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
