"""Which code paths torch's numerical libraries take on the CPU: pinned (portable) or not.

MKL, ATen and oneDNN choose kernels by the CPU they find (SSE, AVX2,
AVX-512, AMX; Intel or AMD), and kernels with other vector widths sum in
other orders, so the same seeded run gives other bits on another machine.
``numerics: portable`` (the default) pins, before torch is imported:

- MKL's conditional numerical reproducibility, branch COMPATIBLE in strict
  mode (``MKL_CBWR=COMPATIBLE,STRICT``): the one branch Intel documents as
  giving the same results on Intel and non-Intel x86-64 CPUs alike
  (``MKL_CBWR=AVX2`` falls back to MKL's own dispatch on AMD), and in strict
  mode whatever the alignment of the arrays;
- ATen's vectorised kernels at AVX2 (``ATEN_CPU_CAPABILITY=avx2``), so an
  AVX-512 server runs the kernels an AVX2 laptop runs;
- oneDNN's instruction set capped at AVX2, and oneDNN switched off for the
  operators torch would send to it (convolutions then use ATen's own
  kernels and MKL under the pin above);
- one thread (OpenMP, MKL and torch's intra-op pool), since a reduction split
  over threads sums in another order.

On a CUDA device the portable mode also asks torch for deterministic
algorithms (``torch.use_deterministic_algorithms``) with the cuBLAS
workspace setting that needs (``CUBLAS_WORKSPACE_CONFIG``); bits there are
the same from run to run on one GPU model and software stack, not across them.

``numerics: native`` sets nothing: each library takes the fastest path of
the host, and the sidecar says that the bits are machine-specific.

This module is torch-free, so that ``pin`` can run before the first
``import torch``; ``apply`` and ``record`` take torch once it is imported.
"""

from __future__ import annotations

import os
import platform
import sys

MODES = ("portable", "native")
DEFAULT_MODE = "portable"

# Environment variables the portable mode sets, read by the libraries when
# torch is first imported (MKL, OpenMP, oneDNN) or first dispatches (ATen).
PORTABLE_ENVIRONMENT = {
    "MKL_CBWR": "COMPATIBLE,STRICT",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",  # oneDNN's name before version 2
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MKL_DYNAMIC": "FALSE",
    # Read by cuBLAS only: what deterministic CUDA matrix products need.
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
}

# The variables a user (or a test standing in for another CPU) may set to
# steer the libraries; the sidecar records their values as the job found them.
STEERING_VARIABLES = (*PORTABLE_ENVIRONMENT, "MKL_ENABLE_INSTRUCTIONS")

# What the portable mode promises, and on which hosts it holds.
PORTABLE_PROMISE = (
    "the same bits on any x86-64 CPU with AVX2 (Intel or AMD) for the same torch build, "
    "config and seed"
)
NATIVE_PROMISE = (
    "bits specific to this machine's CPU and libraries: another CPU generation may differ "
    "in the last bits, which can grow over the steps"
)


class NumericsError(RuntimeError):
    """The pins cannot be set: torch was imported with other settings."""


def pin(mode: str, environ=None, torch_imported: bool | None = None) -> dict:
    """Set ``mode``'s environment before torch is imported; returns what the job found.

    The returned mapping (variable -> value before pinning, None when unset)
    goes into the job's log and sidecar. Where torch is already imported (a
    test or tool that pinned earlier in the same process), the environment
    must already hold the pins, else the libraries have read other values.
    ``environ`` defaults to ``os.environ``; ``torch_imported`` to whether
    torch is in ``sys.modules``.
    """
    if mode not in MODES:
        raise ValueError(f"numerics must be one of {', '.join(MODES)}, got {mode!r}")
    environ = os.environ if environ is None else environ
    found = {name: environ.get(name) for name in STEERING_VARIABLES}
    if mode == "native":
        return found
    if torch_imported is None:
        torch_imported = "torch" in sys.modules
    if torch_imported:
        differing = {
            name: environ.get(name)
            for name, value in PORTABLE_ENVIRONMENT.items()
            if environ.get(name) != value
        }
        if differing:
            raise NumericsError(
                "numerics portable: torch was imported before its code paths were pinned "
                f"(differing: {differing}). Fix: call optbench.engines.numerics.pin('portable') "
                "before the first import of torch"
            )
        return found
    environ.update(PORTABLE_ENVIRONMENT)
    return found


def mode_from_argv(argv: list[str]) -> str:
    """The value of ``--numerics`` in a command line (the default when absent)."""
    for position, argument in enumerate(argv):
        if argument == "--numerics" and position + 1 < len(argv):
            return argv[position + 1]
        if argument.startswith("--numerics="):
            return argument.split("=", 1)[1]
    return DEFAULT_MODE


def apply(mode: str, torch, device=None) -> None:
    """The pins that are torch calls, once torch is imported (threads, oneDNN, CUDA)."""
    if mode != "portable":
        return
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False
    if device is not None and torch.device(device).type == "cuda":
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def host_instruction_sets(cpuinfo: str | None = None) -> list[str]:
    """The vector instruction sets the CPU offers, from /proc/cpuinfo's flags (Linux).

    An empty list where the flags cannot be read (another OS, or not x86).
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
                cpuinfo = handle.read()
        except OSError:
            return []
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    wanted = ("sse2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "amx_tile")
    return [flag for flag in wanted if flag in flags]


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name (Linux), else what the platform module says."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
                cpuinfo = handle.read()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def promise_holds(mode: str, machine: str, instruction_sets: list[str]) -> tuple[bool, str]:
    """Whether the portable promise covers this host, and why not."""
    if mode != "portable":
        return False, "numerics native: the bits are this machine's"
    if machine.lower() not in ("x86_64", "amd64"):
        return False, (
            f"a {machine} host: its BLAS and vector kernels are not the x86-64 ones, so its "
            "bits are its own (the same on every host of its kind and build)"
        )
    if "avx2" not in instruction_sets:
        return False, "the CPU lacks AVX2, so ATen falls back to its default kernels"
    return True, PORTABLE_PROMISE


def record(mode: str, found: dict, torch, device=None) -> dict:
    """What the sidecar says about the numerics of a run: mode, pins and host."""
    machine = platform.machine()
    instruction_sets = host_instruction_sets()
    holds, why = promise_holds(mode, machine, instruction_sets)
    on_cuda = device is not None and torch.device(device).type == "cuda"
    return {
        "mode": mode,
        "pinned": dict(PORTABLE_ENVIRONMENT) if mode == "portable" else {},
        "environment_found": {name: value for name, value in found.items() if value is not None},
        "threads": torch.get_num_threads(),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn_enabled": torch.backends.mkldnn.enabled,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cuda_deterministic": on_cuda and mode == "portable",
        "host_machine": machine,
        "host_cpu": cpu_model(),
        "host_instruction_sets": instruction_sets,
        "portable_promise_holds": holds,
        "promise": NATIVE_PROMISE if mode == "native" else why,
    }


def describe(numerics: dict) -> str:
    """One log line: what was pinned and what the host offers."""
    pins = " ".join(f"{k}={v}" for k, v in sorted(numerics["pinned"].items())) or "nothing pinned"
    found = numerics["environment_found"]
    overridden = {
        name: value
        for name, value in found.items()
        if name in numerics["pinned"] and numerics["pinned"][name] != value
    }
    return (
        f"numerics {numerics['mode']}: {pins}; ATen kernels {numerics['aten_cpu_capability']}, "
        f"{numerics['threads']} thread(s); host {numerics['host_machine']} "
        f"{numerics['host_cpu']!r} offers {', '.join(numerics['host_instruction_sets']) or '?'}"
        + (f"; overrode {overridden}" if overridden else "")
        + f"; {numerics['promise']}"
    )
