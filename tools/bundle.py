"""Results across machines: export a study's runs with their provenance into one
bundle file, and merge bundles from several hosts into one study folder.

    python3 tools/bundle.py export results/mine mine-laptop.tar.gz --host laptop
    python3 tools/bundle.py merge --into results/mine mine-laptop.tar.gz mine-server.tar.gz
    python3 -m snakemake --cores 4 --configfile configs/mine.yaml   # the analysis

The merge compares the runs that several bundles hold byte for byte, writes
merge/reproducibility.tsv (runs compared, identical, differing, per pair of
hosts), merge/runs.tsv and merge/timing.tsv, and refuses differing runs with
their names and the fix (--prefer HOST keeps one host's files). It lists each
run in results/run-index, so the pipeline on the merged study reuses the runs
instead of training them. docs/outputs.md, "Results from several machines".
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))
from optbench import bundles  # noqa: E402
from optbench.planning import commands, studies  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    out = sub.add_parser("export", help="a study folder -> one bundle file")
    out.add_argument("study", help="the study's folder: results/ or results/<study>/")
    out.add_argument("bundle", help="the bundle file to write (.tar.gz)")
    out.add_argument("--host", default=platform.node(), help="this machine's name in the merge")
    into = sub.add_parser("merge", help="bundles -> one new study folder")
    into.add_argument("bundles", nargs="+", help="bundle files; the first listed gives timings")
    into.add_argument("--into", required=True, help="the new study folder, results/<study>")
    into.add_argument(
        "--index",
        default=studies.RUN_INDEX,
        help="the run index to list the merged runs in (default %(default)s; '' for none)",
    )
    into.add_argument("--prefer", help="keep this host's files where hosts' runs differ")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        if args.command == "export":
            code = commands.training_code_digest(REPO / "workflow" / "scripts")
            manifest = bundles.export(args.study, args.bundle, args.host, code)
            print(
                f"exported {len(manifest['runs'])} runs of {args.study} ({args.host}) to "
                f"{args.bundle} in {time.perf_counter() - started:.1f} s"
            )
        else:
            comparison = bundles.merge(args.bundles, args.into, args.index or None, args.prefer)
            print(
                f"merged {len(comparison.kept)} runs from {len(args.bundles)} bundles into "
                f"{args.into} in {time.perf_counter() - started:.1f} s"
            )
            for (a, b), (compared, identical, differing) in comparison.pairs.items():
                print(
                    f"  {a} vs {b}: {compared} compared, {identical} identical, {differing} differ"
                )
            for line in bundles.mixed_timing(comparison):
                print(line)
    except bundles.BundleError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
