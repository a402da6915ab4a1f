"""Whether this machine has a GPU for device: auto, without importing torch.

Snakemake decides each training job's `gpu` resource from the config when it
starts (workflow/rules/common.smk); importing torch there would slow every dry
run, so this looks for the NVIDIA driver's device entries instead.
"""

from __future__ import annotations

import os
from pathlib import Path

HIDDEN = ("", "-1", "none", "NoDevFiles")


def local_gpu_visible(environ=None, proc=Path("/proc/driver/nvidia/gpus"), dev=Path("/dev")):
    """True when an NVIDIA GPU is present and CUDA_VISIBLE_DEVICES does not hide it."""
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in HIDDEN:
        return False
    return any(proc.glob("*")) or any(dev.glob("nvidia[0-9]*"))


# The executor decides: a resource function asks it when jobs are placed.
DECIDED_BY_EXECUTOR = "executor"


def training_gpus(device: str, cluster_run: bool, local_visible: bool) -> int | str:
    """GPUs per training job (Snakemake resource ``gpu``, the executor plugin's own
    name: on SLURM ``sbatch --gpus=N``; locally profiles/default caps the sum).

    cpu asks for none, cuda/cuda:N for one, auto for one where a GPU can be had:
    on a cluster, or here when an NVIDIA GPU is visible (so a CPU-only machine
    never serialises its jobs). DECIDED_BY_EXECUTOR: a cluster profile without
    local-cores, known only once the executor runs."""
    if device == "cpu":
        return 0
    if device != "auto" or cluster_run or local_visible:
        return 1
    return DECIDED_BY_EXECUTOR


def device_refusal(device: str, cluster_run: bool, local_visible: bool) -> str | None:
    """Why a CUDA device cannot be used where the jobs run (here, no GPU visible),
    or None. On a cluster the GPU is on the compute node: nothing is known here."""
    if not device.startswith("cuda") or cluster_run or local_visible:
        return None
    return (
        f"config key device: {device} asks for a CUDA GPU, but none is visible on this "
        "machine (no NVIDIA device, or CUDA_VISIBLE_DEVICES hides it), and the jobs run "
        "here. Fix: use device auto (CUDA where there is one, else the CPU) or cpu, or "
        "submit to a cluster with a GPU (--profile profiles/slurm)."
    )
