"""Seconds per training step, measured fairly: one run alone, in the per-run loop, warm.

A training job times each (problem, loss, optimizer) it trains once, before
training it: one run (seed 0's draw, the variant's settings) trains ``WARM``
steps untimed, then ``TIMED`` steps whose durations are read one by one; the
median is the step time, with the loss evaluations a step made (L-BFGS's line
search evaluates several times). The job runs on its threads (one by
default), so the figure is that of one core of the host; the sidecar records
it with the CPU model and thread count. Time to a target is then the steps to
the target times this step time: evaluation and the engine's batching are
left out, so optimizers are compared by what one of their steps costs.
"""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import torch

WARM, TIMED = 5, 20


def cpu_model() -> str:
    """The host CPU's model name (Linux's /proc/cpuinfo; else the platform's)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def step_time(spec: dict, device: torch.device) -> dict:
    """The median seconds per step of one run of ``spec`` alone in the loop (warm)."""
    from optbench.engines import training

    timed = {**spec, "steps": WARM + TIMED, "eval_every": 0}
    criterion = None if spec["loss"] is None else training.build_loss(spec["loss"])
    instance = training.build_instance(timed, 0).to(device)
    optimizer = training.build_optimizer(
        spec["optimizer"], instance.model.parameters(), spec.get("optimizers_dir")
    )
    stamps = []

    def stamp(_count, device=device):
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # a step's kernels, not their launch
        stamps.append(time.perf_counter())

    looped = training.train_instance(
        instance,
        criterion,
        optimizer,
        WARM + TIMED,
        schedule=spec["optimizer"].get("schedule"),
        on_step=stamp,
    )
    durations = [b - a for a, b in zip(stamps[WARM - 1 : -1], stamps[WARM:], strict=True)]
    return {
        "seconds_per_step": statistics.median(durations),
        "evaluations_per_step": statistics.median(looped.evaluations[WARM:]),
        "timed_steps": TIMED,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "device": str(device),
    }
