"""fla's RMSNorm and FusedRMSNormGated with exact PyTorch paths for CPU tensors.

Both follow fla's kernels: the sum with the residual, the statistics and the affine map are
computed in float32, the output is cast to x's dtype, and `prenorm=True` also returns the
residual stream (x + residual) in the residual's dtype (float32 with `residual_in_fp32`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fla.modules import FusedRMSNormGated as FlaFusedRMSNormGated
from fla.modules import RMSNorm as FlaRMSNorm

from ramnet_fla.fla_cpu.dispatch import CPUDispatch

GATE_ACTIVATIONS = ('swish', 'silu', 'sigmoid')


def rms_norm_torch(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    eps: float = 1e-5,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
    gate: torch.Tensor | None = None,
    activation: str = 'swish',
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm over the last dimension, optionally times an activated gate.

    y = (x + residual) / sqrt(mean((x + residual)^2) + eps) * weight + bias, then with a gate
    y * swish(gate) ('swish'/'silu') or y * sigmoid(gate) ('sigmoid').

    Args:
        x, residual, gate: [..., D]; weight, bias: [D] or None.

    Returns:
        y in x's dtype; with prenorm, (y, x + residual).
    """
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"residual must have x's shape {tuple(x.shape)}, got {tuple(residual.shape)}")
    if gate is not None and gate.shape != x.shape:
        raise ValueError(f"gate must have x's shape {tuple(x.shape)}, got {tuple(gate.shape)}")
    dtype = torch.promote_types(x.dtype, torch.float32)          # float32, or float64 for float64 input
    stream = x.to(dtype)
    if residual is not None:
        stream = stream + residual.to(dtype)
    y = stream * torch.rsqrt(stream.square().mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.to(dtype)
    if bias is not None:
        y = y + bias.to(dtype)
    if gate is not None:
        if activation not in GATE_ACTIVATIONS:
            raise ValueError(f"activation must be one of {GATE_ACTIVATIONS}, got {activation!r}")
        gate = gate.to(dtype)
        y = y * (F.silu(gate) if activation in ('swish', 'silu') else torch.sigmoid(gate))
    y = y.to(x.dtype)
    if not prenorm:
        return y
    if residual is not None:
        return y, stream.to(residual.dtype)
    return y, (stream if residual_in_fp32 else x)


class RMSNorm(CPUDispatch, FlaRMSNorm):
    """fla's `RMSNorm` (same parameters and state_dict) that also runs on the CPU."""

    def forward_torch(self, x, residual=None, prenorm=False, residual_in_fp32=False):
        return rms_norm_torch(x, self.weight, self.bias, residual=residual, eps=self.eps, prenorm=prenorm,
                              residual_in_fp32=residual_in_fp32)


class FusedRMSNormGated(CPUDispatch, FlaFusedRMSNormGated):
    """fla's `FusedRMSNormGated` (RMSNorm(x) * act(g); same state_dict) that also runs on the CPU."""

    def forward_torch(self, x, g, residual=None, prenorm=False, residual_in_fp32=False):
        return rms_norm_torch(x, self.weight, self.bias, residual=residual, eps=self.eps, prenorm=prenorm,
                              residual_in_fp32=residual_in_fp32, gate=g, activation=self.activation)
