"""Where a module runs: fla's Triton kernels for accelerator tensors, exact PyTorch on the CPU.

`RAMNET_FLA_BACKEND=torch|triton` (the variable the RAM op reads, see ops/ram/backend.py) forces
one path; forcing `triton` on CPU tensors runs fla's kernels under `TRITON_INTERPRET=1`.
"""

from __future__ import annotations

import os

import torch

from ramnet_fla.ops.ram.backend import BACKENDS, ENV_VAR


def use_fla_kernels(x: torch.Tensor) -> bool:
    """True when `x` should go through fla's Triton kernels, False for the PyTorch path."""
    forced = os.environ.get(ENV_VAR, '').strip().lower()
    if forced:
        if forced not in BACKENDS:
            raise ValueError(f"{ENV_VAR} must be one of {BACKENDS}, got {forced!r}")
        return forced == 'triton'
    return x.device.type != 'cpu'
