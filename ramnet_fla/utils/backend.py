"""Which implementation runs: Triton kernels for accelerator tensors, PyTorch otherwise (RAM ops and
the CPU-capable fla modules alike).

`RAMNET_FLA_BACKEND=torch` or `=triton` forces one (read at every call, so tests can switch it).
Forcing `triton` on CPU tensors runs the kernels under `TRITON_INTERPRET=1`.
"""

from __future__ import annotations

import os

import torch

BACKENDS = ('torch', 'triton')
ENV_VAR = 'RAMNET_FLA_BACKEND'


def forced_backend() -> str | None:
    """The backend `RAMNET_FLA_BACKEND` forces ('torch' or 'triton'), or None when it is unset."""
    forced = os.environ.get(ENV_VAR, '').strip().lower()
    if not forced:
        return None
    if forced not in BACKENDS:
        raise ValueError(f"{ENV_VAR} must be one of {BACKENDS}, got {forced!r}")
    return forced


def select_backend(x: torch.Tensor) -> str:
    """'triton' or 'torch' for an op whose inputs live where `x` lives."""
    return forced_backend() or ('triton' if x.is_cuda else 'torch')


def use_fla_kernels(x: torch.Tensor) -> bool:
    """True when a module whose input is `x` should run fla's Triton kernels, False for PyTorch.

    The rule the RAM ops follow too: accelerator tensors take the kernels, CPU tensors the exact
    PyTorch path, unless `RAMNET_FLA_BACKEND` forces one.
    """
    forced = forced_backend()
    if forced:
        return forced == 'triton'
    return x.device.type != 'cpu'
