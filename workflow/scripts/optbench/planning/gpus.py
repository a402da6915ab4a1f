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
