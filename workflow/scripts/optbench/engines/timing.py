"""Seconds per training step, measured fairly: one run alone, in the per-run loop, warm.

A training job times every (problem, loss, optimizer) it trains before
training any: one run of each (seed 0's draw, the first variant's settings)
is built and warmed up (``WARM`` steps), then the runs take turns, ``ROUNDS``
rounds of ``BURST`` steps each, every step's duration read on its own; a
group's step time is the median of its ``ROUNDS x BURST`` durations. Taking
turns spreads any change of the machine's load (other jobs starting or
ending) over all the optimizers of the job alike, so their ratios stay
fair where the absolute figures drift. The job runs on its threads (one by
default), so the figure is that of one core of the host; the sidecar records
it with the CPU model and thread count. Time to a target is then the steps to
the target times this step time: evaluation and the engine's batching are
left out, so optimizers are compared by what one of their steps costs.
"""

import platform
import statistics
import time
from pathlib import Path

import torch

WARM, ROUNDS, BURST = 5, 4, 5
TIMED = ROUNDS * BURST


def cpu_model() -> str:
    """The host CPU's model name (Linux's /proc/cpuinfo; else the platform's)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def step_times(specs: list[dict], device: torch.device) -> list[dict]:
    """The median seconds per step of one run of each spec alone in the loop (warm,
    taking turns with the others; module docstring), in the order given."""
    from optbench.engines import training

    prepared = []
    for spec in specs:
        try:
            criterion = None if spec["loss"] is None else training.build_loss(spec["loss"])
            instance = training.build_instance({**spec, "steps": BURST}, 0).to(device)
            optimizer = training.build_optimizer(
                spec["optimizer"], instance.model.parameters(), spec.get("optimizers_dir")
            )
            prepared.append((instance, criterion, optimizer))
        except Exception:
            # Not timed: its training reports what is wrong, naming the entry.
            prepared.append(None)
    durations = [[] for _ in specs]
    evaluations = [[] for _ in specs]

    def burst(index: int, steps: int, keep: bool) -> None:
        if prepared[index] is None:
            return
        instance, criterion, optimizer = prepared[index]
        stamps = [time.perf_counter()]

        def stamp(_count):
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # a step's kernels, not their launch
            stamps.append(time.perf_counter())

        try:
            looped = training.train_instance(instance, criterion, optimizer, steps, on_step=stamp)
        except Exception:  # a value torch refuses in use: the training says which
            prepared[index] = None
            durations[index] = []
            return
        if keep:
            durations[index] += [b - a for a, b in zip(stamps[:-1], stamps[1:], strict=True)]
            evaluations[index] += looped.evaluations

    for index in range(len(specs)):
        burst(index, WARM, keep=False)
    for _ in range(ROUNDS):
        for index in range(len(specs)):
            burst(index, BURST, keep=True)
    return [
        None
        if prepared[index] is None or not durations[index]
        else {
            "seconds_per_step": statistics.median(durations[index]),
            "evaluations_per_step": statistics.median(evaluations[index]),
            "timed_steps": TIMED,
            "threads": torch.get_num_threads(),
            "cpu": cpu_model(),
            "device": str(device),
        }
        for index in range(len(specs))
    ]
