"""fla's GatedMLP with an exact PyTorch path for CPU tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fla.modules import GatedMLP as FlaGatedMLP

from ramnet_fla.fla_cpu.dispatch import CPUDispatch


def swiglu_torch(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """swish(gate) * up, computed in float32 like fla's kernel, in gate's dtype."""
    dtype = torch.promote_types(gate.dtype, torch.float32)
    return (F.silu(gate.to(dtype)) * up.to(dtype)).to(gate.dtype)


def powglu_torch(gate: torch.Tensor, up: torch.Tensor, power: float) -> torch.Tensor:
    """fla's PowGLU: gate^(power / (sqrt(gate) + 1)) * sigmoid(gate) * up for gate > 0, swish otherwise."""
    gate32 = gate.to(torch.promote_types(gate.dtype, torch.float32))
    positive = gate32 > 0
    base = torch.where(positive, gate32, torch.ones_like(gate32))        # keeps log() finite off the branch
    powered = torch.exp(power / (base.sqrt() + 1) * base.log())
    activated = torch.where(positive, powered, gate32) * torch.sigmoid(gate32)
    return (activated * up.to(activated.dtype)).to(gate.dtype)


class GatedMLP(CPUDispatch, FlaGatedMLP):
    """fla's `GatedMLP` (same parameters and state_dict) that also runs on the CPU."""

    def forward_torch(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """x: [..., hidden_size] -> [..., hidden_size]."""
        gate, up = self.gate_proj(x), self.up_proj(x)
        if self.hidden_act == 'powlu':
            return self.down_proj(powglu_torch(gate, up, self.powglu_power))
        return self.down_proj(swiglu_torch(gate, up))
