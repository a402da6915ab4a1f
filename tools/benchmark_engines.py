"""Benchmark: the batched engine against the per-run loop, side by side in one run.

Run by hand from the repository root (single-threaded, CPU by default):

    python3 tools/benchmark_engines.py                # every built-in problem, 10/100/1000 runs
    python3 tools/benchmark_engines.py --quick        # loop timed on at most 100 runs of a job
    python3 tools/benchmark_engines.py --problems linear --runs 100 1000
    python3 tools/benchmark_engines.py --device cuda  # where a GPU is present
    python3 tools/benchmark_engines.py --numerics native  # the host's own code paths

For each problem and job size (runs per job), the same runs are trained twice
on copies of the same instances, once by ``train_loop`` (the per-run loop) and
once by ``train_batched``, in alternating rounds (at least two; the fastest
of each engine counts); the time of each engine call (building the
instances excluded, everything else included: optimizer construction,
stacking, kernel calibration, copying the weights back) is divided by
runs x steps. The loop costs the same per run-step at any job size, so
``--quick`` times it on at most 100 runs of the job. The last column says
whether the two engines gave the same losses and final weights bit for bit.

Then the memory a job needs: each (problem, runs) job runs in a fresh process
that reports its peak resident memory; the growth from 10 to 1,000 runs,
divided by 990, is the peak memory per run (instances included). Linux only
(it reads VmHWM in /proc/self/status).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))

# One optimizer per problem: Adam, the article's settings on the reference
# problem. Adam's step is among the costlier element-wise ones.
PROBLEMS = {
    "linear": ("MSELoss", {"lr": 0.1, "betas": (0.9, 0.99), "eps": 1e-9}),
    "quadratic": ("MSELoss", {"lr": 0.01}),
    "noisy_quadratic": ("MSELoss", {"lr": 0.01}),
    "logistic": ("BCEWithLogitsLoss", {"lr": 0.01}),
    "digits_mlp": ("CrossEntropyLoss", {"lr": 0.01}),
    "rosenbrock": (None, {"lr": 0.001}),
}
GOALS = {("linear", 100): ">= 20x", ("linear", 1000): ">= 25x"}

MEMORY_JOB = """
import json, sys
sys.path.insert(0, {scripts!r})
import torch
torch.set_num_threads(1)
from optbench.engines import batched
from optbench import problems
problem, loss, kwargs, runs, steps, device = {args!r}
criterion = None if loss is None else getattr(torch.nn, loss)()
warm = [problems.build(problem, s, steps, {{}}) for s in range(2)]
batched.train_batched(warm, criterion, "Adam", kwargs, steps, device)
def peak_kib():  # VmHWM: this process's peak resident memory (ru_maxrss survives exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
before = peak_kib()
instances = [problems.build(problem, s, steps, {{}}) for s in range(runs)]
result = batched.train_batched(instances, criterion, "Adam", kwargs, steps, device)
peak = peak_kib()
gpu = torch.cuda.max_memory_allocated() if device.startswith("cuda") else 0
print(json.dumps({{"before_kib": before, "peak_kib": peak, "gpu_bytes": gpu,
                  "bytes_per_run": result.details.get("bytes_per_run")}}))
"""


def timed_engines(problem, runs, steps, device, loop_cap):
    """(loop s/run-step, batched s/run-step, identical?, note) for one job size."""
    import torch

    from optbench import problems
    from optbench.engines import batched

    loss, kwargs = PROBLEMS[problem]

    def criterion():
        return None if loss is None else getattr(torch.nn, loss)()

    instances = [problems.build(problem, seed, steps, {}) for seed in range(runs)]
    looped = min(runs, loop_cap) if loop_cap else runs

    def sync():
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()

    def timed(function, work):
        fresh = copy.deepcopy(work)  # one call: tensors shared by runs stay shared
        sync()
        started = time.perf_counter()
        outcome = function(fresh)
        sync()
        return time.perf_counter() - started, (outcome, fresh)

    # Alternating rounds, the fastest of each engine: on a shared machine a
    # burst of load then slows both alike rather than one of them.
    loop_times, batch_times = [], []
    while len(loop_times) < 2 or (sum(loop_times) < 1.0 and len(loop_times) < 5):
        seconds, (loop_runs, loop_instances) = timed(
            lambda fresh: batched.train_loop(fresh, criterion(), "Adam", kwargs, steps, device),
            instances[:looped],
        )
        loop_times.append(seconds)
        seconds, (result, batch_instances) = timed(
            lambda fresh: batched.train_batched(fresh, criterion(), "Adam", kwargs, steps, device),
            instances,
        )
        batch_times.append(seconds)
    loop_s, batch_s = min(loop_times), min(batch_times)
    assert result.engine == "batched", result.reason
    identical = all(
        a.losses == b.losses for a, b in zip(loop_runs, result.runs[:looped], strict=True)
    )
    weights = all(
        torch.equal(p, q)
        for a, b in zip(loop_instances, batch_instances[:looped], strict=True)
        for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True)
    )
    note = "identical" if identical else f"max rel {_largest_difference(loop_runs, result.runs)}"
    note += "; weights " + ("identical" if weights else "differ")
    return loop_s / (looped * steps), batch_s / (runs * steps), note


def _largest_difference(loop_runs, batch_runs) -> str:
    worst = 0.0
    for a, b in zip(loop_runs, batch_runs, strict=False):
        for x, y in zip(a.losses, b.losses, strict=True):
            if math.isfinite(x) and x:
                worst = max(worst, abs(x - y) / abs(x))
    return f"{worst:.1e}"


def memory(problem, runs, steps, device) -> dict:
    loss, kwargs = PROBLEMS[problem]
    code = MEMORY_JOB.format(
        scripts=str(REPO / "workflow" / "scripts"),
        args=(problem, loss, kwargs, runs, steps, device),
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--runs", nargs="+", type=int, default=[10, 100, 1000])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="time the loop on <= 100 runs")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory section")
    parser.add_argument(
        "--numerics",
        choices=("portable", "native"),
        default="portable",
        help="CPU code paths as in training jobs (config key numerics)",
    )
    parser.add_argument("--json", action="store_true", help="end with the rows as one JSON line")
    args = parser.parse_args()

    from optbench.engines import numerics

    numerics.pin(args.numerics)  # before torch is imported, as a training job does

    import torch

    from optbench import problems
    from optbench.engines import batched

    torch.set_num_threads(1)
    numerics.apply(args.numerics, torch, args.device)
    # Warm-up: the first optimizer imports torch._dynamo, the first vmap torch.func.
    for problem, (loss, kwargs) in PROBLEMS.items():
        criterion = None if loss is None else getattr(torch.nn, loss)()
        for engine in (batched.train_loop, batched.train_batched):
            warm = [problems.build(problem, s, 2, {}) for s in range(2)]
            engine(warm, criterion, "Adam", kwargs, 2, args.device)

    print(
        f"batched vs loop, training time per run-step, {args.steps} steps, Adam, "
        f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} thread, "
        f"numerics {args.numerics}" + ("; loop timed on <= 100 runs" if args.quick else "")
    )
    header = (
        f"{'problem':16} {'loss':18} {'runs':>5} {'loop us':>9} {'batched us':>11} "
        f"{'ratio':>7} {'goal':>7}  losses and weights, loop vs batched"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for problem in args.problems:
        loss = PROBLEMS[problem][0] or "(objective)"
        for runs in args.runs:
            loop, batch, note = timed_engines(
                problem, runs, args.steps, args.device, 100 if args.quick else 0
            )
            goal = GOALS.get((problem, runs), "-")
            print(
                f"{problem:16} {loss:18} {runs:>5} {loop * 1e6:>9.1f} {batch * 1e6:>11.2f} "
                f"{loop / batch:>6.1f}x {goal:>7}  {note}",
                flush=True,
            )
            rows.append({"problem": problem, "runs": runs, "loop_s": loop, "batched_s": batch})
    if args.json:
        print(json.dumps(rows))

    if args.no_memory:
        return
    print()
    print("peak memory of a batched job (fresh process each; growth from 10 to 1,000 runs)")
    header = (
        f"{'problem':16} {'job peak, 10 runs':>18} {'1,000 runs':>11} {'per run':>10} "
        f"{'engine state/run':>17}"
    )
    print(header)
    print("-" * len(header))
    for problem in args.problems:
        small = memory(problem, 10, args.steps, args.device)
        large = memory(problem, 1000, args.steps, args.device)
        per_run = (large["peak_kib"] - small["peak_kib"]) * 1024 / 990
        print(
            f"{problem:16} {small['peak_kib'] / 1024:>14.0f} MiB "
            f"{large['peak_kib'] / 1024:>7.0f} MiB "
            f"{per_run / 1024:>7.1f} KiB "
            f"{large['bytes_per_run'] / 1024:>13.1f} KiB"
            + (f"  (GPU peak {large['gpu_bytes'] / 2**20:.0f} MiB)" if large["gpu_bytes"] else ""),
            flush=True,
        )


if __name__ == "__main__":
    main()
