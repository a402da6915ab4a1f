"""How closely the batched L-BFGS follows torch.optim.LBFGS over whole runs.

For each built-in problem (with the loss the tests use for it), 5 seeds, 20
steps, with torch's default kwargs (lr 1, max_iter 20, history_size 100, no
line search) and with ``line_search_fn: strong_wolfe``: every seed trained by
the pipeline's per-run loop (training.train_instance, torch's own class) and
all seeds together by the batched L-BFGS (engines/batched_lbfgs.py, whatever
the history's size). Printed per problem and setting, as a Markdown table:

- the largest relative difference of a recorded loss from torch's,
  |batched - torch| / |torch|, over every step and seed (where both are finite);
- the largest absolute difference in units of the run's resolution floor
  (reporting/resolution.py: float32 epsilon^p x the initial loss, p = 2 for
  MSE and objectives, 1 for the likelihood losses): at or below 1 means the
  difference is rounding that the analysis already treats as a tie;
- the steps (of 100) whose loss-evaluation counts differ.

Run from the repository root (not by CI; about 10-20 minutes on one core,
digits_cnn and text_transformer most of it):

    python3 tools/lbfgs_agreement.py [--problems quadratic logistic] [--steps 20]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))

from optbench.engines import numerics  # noqa: E402

numerics.pin("portable")  # as the training jobs run, before torch is imported

import torch  # noqa: E402

from optbench import problems  # noqa: E402
from optbench.engines import batched, training  # noqa: E402
from optbench.reporting import resolution  # noqa: E402

LOSSES = {
    "linear": "MSELoss",
    "quadratic": "MSELoss",
    "logistic": "BCEWithLogitsLoss",
    "rosenbrock": None,
    "noisy_quadratic": "MSELoss",
    "breast_cancer_mlp": "BCEWithLogitsLoss",
    "digits_mlp": "CrossEntropyLoss",
    "digits_cnn": "CrossEntropyLoss",
    "text_transformer": "CrossEntropyLoss",
}
SETTINGS = {"torch's defaults": {}, "strong Wolfe": {"line_search_fn": "strong_wolfe"}}
SEEDS = (0, 1, 2, 3, 4)


def relative(reference: float, got: float) -> float:
    """|got - reference| / |reference|: torch's loss is the reference (0 where equal)."""
    if reference == got or not (math.isfinite(reference) and math.isfinite(got)):
        return 0.0
    return abs(got - reference) / abs(reference) if reference else math.inf


def compare(problem: str, kwargs: dict, steps: int) -> dict:
    loss_class = LOSSES[problem]
    criterion = None if loss_class is None else getattr(torch.nn, loss_class)()
    looped = []
    for seed in SEEDS:
        instance = problems.build(problem, seed, steps, {})
        optimizer = torch.optim.LBFGS(instance.model.parameters(), **kwargs)
        looped.append(training.train_instance(instance, criterion, optimizer, steps))
    instances = [problems.build(problem, seed, steps, {}) for seed in SEEDS]
    result = batched.train_batched(instances, criterion, "LBFGS", [kwargs] * len(SEEDS), steps)
    assert result.engine == "batched", result.reason
    worst_relative, worst_floors, counts = 0.0, 0.0, 0
    for loop, run in zip(looped, result.runs, strict=True):
        floor = float(resolution.floors([loop.losses[0]], loss_class)[0])
        for a, b in zip(loop.losses, run.losses, strict=True):
            worst_relative = max(worst_relative, relative(a, b))
            if math.isfinite(a) and math.isfinite(b) and floor > 0:
                worst_floors = max(worst_floors, abs(a - b) / floor)
        counts += sum(x != y for x, y in zip(loop.evaluations, run.evaluations, strict=True))
    return {"relative": worst_relative, "floors": worst_floors, "counts": counts}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    batched.LBFGS_BATCHED_HISTORY_MAX = math.inf  # batched whatever the history's size
    runs_steps = len(SEEDS) * args.steps
    print(
        f"| problem (loss) | setting | max relative difference | max difference / floor | "
        f"evaluation counts differing (of {runs_steps} steps) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for problem in args.problems:
        for setting, kwargs in SETTINGS.items():
            started = time.perf_counter()
            found = compare(problem, kwargs, args.steps)
            print(
                f"| {problem} ({LOSSES[problem] or 'objective'}) | {setting} | "
                f"{found['relative']:.2g} | {found['floors']:.2g} | {found['counts']} |",
                flush=True,
            )
            print(f"  ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
