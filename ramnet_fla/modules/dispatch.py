"""Where a module runs: fla's Triton kernels for accelerator tensors, exact PyTorch on the CPU.

`RAMNET_FLA_BACKEND=torch|triton` (the variable the RAM op reads, see ops/ram/backend.py) forces
one path; forcing `triton` on CPU tensors runs fla's kernels under `TRITON_INTERPRET=1`.
"""

from __future__ import annotations

import torch

from ramnet_fla.ops.ram.backend import forced_backend


def use_fla_kernels(x: torch.Tensor) -> bool:
    """True when `x` should go through fla's Triton kernels, False for the PyTorch path."""
    forced = forced_backend()
    if forced:
        return forced == 'triton'
    return x.device.type != 'cpu'
