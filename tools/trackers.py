"""Export a study's runs to an experiment tracker: Weights & Biases offline (local
files for a later `wandb sync`) or TensorBoard event files.

    pip install -r requirements-trackers.txt
    python3 tools/trackers.py wandb results/ exports/wandb --project optbench
    wandb sync exports/wandb/wandb/offline-run-*      # later, on a machine online
    python3 tools/trackers.py tensorboard results/ exports/tb
    tensorboard --logdir exports/tb

One tracker run per training run: its settings as config, its per-step loss,
learning rate and loss evaluations, and its held-out curve. docs/outputs.md,
"Experiment trackers".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))
from optbench import trackers  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tracker", choices=("wandb", "tensorboard"))
    parser.add_argument("study", help="the study's folder: results/ or results/<study>/")
    parser.add_argument("out", help="the folder to write the tracker's files to")
    parser.add_argument("--project", default="optbench", help="W&B project (default %(default)s)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        runs = trackers.read_runs(args.study)
        if args.tracker == "wandb":
            folders = trackers.export_wandb(runs, args.out, args.project)
        else:
            folders = trackers.export_tensorboard(runs, args.out)
    except trackers.TrackerError as error:
        print(error, file=sys.stderr)
        return 1
    print(
        f"exported {len(folders)} runs of {args.study} to {args.tracker} under {args.out} "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
