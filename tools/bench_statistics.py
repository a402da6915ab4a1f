"""Time the statistics library on a synthetic tuned-sweep-sized table.

Run by hand from the repository root (not by CI; a few seconds):

    python3 tools/bench_statistics.py

10 (problem, loss) blocks x 6 optimizers x 7 variants x 25 seeds (5 tuning,
20 evaluation) = 10,500 runs of 200 steps, 3 % of them diverging at step 150,
L-BFGS with 1-20 evaluations per step. Prints the seconds of each stage and
the peak resident memory.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))

from optbench.reporting import comparison, perfprofiles, runmetrics, selection, statistics  # noqa: E402

OPTIMIZERS = ["sgd", "momentum_sgd", "adam", "rmsprop", "adamw", "lbfgs"]
VARIANTS = ["base"] + [f"lr{v!r}" for v in (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)]
STEPS = 200


def synthetic(rng):
    blocks = [(f"problem{p}", loss) for p in range(5) for loss in ("mse", "l1")]
    seeds = [(s, "tuning") for s in range(100, 105)] + [(s, "evaluation") for s in range(20)]
    keys = pd.DataFrame(
        [
            (problem, loss, optimizer, variant, seed, role)
            for problem, loss in blocks
            for optimizer in OPTIMIZERS
            for variant in VARIANTS
            for seed, role in seeds
        ],
        columns=["problem", "loss", "optimizer", "variant", "seed", "role"],
    )
    runs = len(keys)
    rates = rng.lognormal(-3, 1, size=(runs, 1))
    noise = 1 + 0.1 * rng.standard_normal((runs, STEPS)) ** 2
    losses = np.exp(-rates * np.arange(STEPS)) * noise
    losses[rng.random(runs) < 0.03, 150:] = np.inf
    lbfgs = (keys["optimizer"] == "lbfgs").to_numpy()[:, None]
    evaluations = np.where(lbfgs, rng.integers(1, 21, size=(runs, STEPS)), 1)
    return keys, losses, evaluations


def main() -> None:
    keys, losses, evaluations = synthetic(np.random.default_rng(0))
    print(f"{len(keys):,} runs x {STEPS} steps")
    stages = []
    started = last = time.perf_counter()

    def stage(name):
        nonlocal last
        now = time.perf_counter()
        stages.append((name, now - last))
        last = now

    metrics = pd.concat([keys, runmetrics.run_metrics(losses, evaluations)], axis=1)
    stage("run_metrics")
    evaluation = (keys["role"] == "evaluation").to_numpy()
    cells = keys[evaluation].groupby(["problem", "loss", "optimizer", "variant"], sort=False)
    rows = np.flatnonzero(evaluation)
    for index in cells.indices.values():
        statistics.log_describe(losses[rows[index]])
    stage(f"log_describe per step ({cells.ngroups} cells)")
    chosen = selection.select_variants(metrics, order=VARIANTS)
    tuned = selection.tuned_evaluation_runs(metrics, chosen)
    selection.sensitivity_table(metrics)
    selection.tuning_curve(metrics, order=VARIANTS)
    selection.tuning_gain(metrics, chosen, "base")
    stage("selection, sensitivity, tuning curve and gain")
    pairs = comparison.pairwise_table(tuned)
    comparison.ranking_table(tuned, pairs)
    comparison.win_matrix(comparison.win_probabilities(tuned))
    comparison.friedman(tuned)
    stage(f"paired tests ({len(pairs)} pairs), ranking, wins, Friedman")
    ratios = perfprofiles.performance_ratios(perfprofiles.block_costs(tuned))
    perfprofiles.performance_profile(ratios)
    perfprofiles.profile_score(ratios)
    stage("performance profiles and scores")
    for name, seconds in stages:
        print(f"  {name}: {seconds:.3f} s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"total {time.perf_counter() - started:.2f} s, peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
