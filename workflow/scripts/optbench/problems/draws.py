"""Seeded draws shared by the built-in problems (imports torch).

Everything here draws on an explicit ``torch.Generator`` and never on torch's
global one, so building a problem leaves the global random state alone and a
problem's draws depend on its seed only.
"""

from __future__ import annotations

import math

import torch


def generator(seed: int) -> torch.Generator:
    """A fresh CPU generator seeded with ``seed``."""
    return torch.Generator(device="cpu").manual_seed(seed)


def uniform_(tensor: torch.Tensor, bound: float, generator: torch.Generator) -> torch.Tensor:
    """Fill ``tensor`` in place from U(-bound, bound) drawn on ``generator``; returns it."""
    with torch.no_grad():
        tensor.uniform_(-bound, bound, generator=generator)
    return tensor


def linear_init_(layer: torch.nn.Linear, generator: torch.Generator) -> torch.nn.Linear:
    """nn.Linear's default distribution, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the
    weight and then the bias, drawn on ``generator`` instead of the global one."""
    bound = 1.0 / math.sqrt(layer.in_features)
    uniform_(layer.weight, bound, generator)
    if layer.bias is not None:
        uniform_(layer.bias, bound, generator)
    return layer


def new_linear(inputs: int, outputs: int, bias: bool, generator: torch.Generator):
    """An nn.Linear initialised from ``generator``; the global generator is not touched."""
    layer = torch.nn.utils.skip_init(torch.nn.Linear, inputs, outputs, bias=bias)
    return linear_init_(layer, generator)


def orthonormal(rows: int, columns: int, generator: torch.Generator) -> torch.Tensor:
    """A float64 ``[rows, columns]`` matrix with orthonormal columns (rows >= columns):
    the Q factor of a Gaussian matrix drawn on ``generator``.

    Float64 keeps the factorisation's rounding far below float32 resolution,
    so the float32 data built from it do not depend on the LAPACK build.
    """
    gaussian = torch.randn(rows, columns, generator=generator, dtype=torch.float64)
    return torch.linalg.qr(gaussian).Q


def spectrum(size: int, condition_number: float) -> torch.Tensor:
    """``size`` float64 values log-spaced from 1 down to 1 / condition_number."""
    if size == 1:
        return torch.ones(1, dtype=torch.float64)
    exponents = torch.arange(size, dtype=torch.float64) / (size - 1)
    return torch.tensor(condition_number, dtype=torch.float64) ** -exponents
