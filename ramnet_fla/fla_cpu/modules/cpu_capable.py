"""`make_cpu_capable`: let a tree of fla modules run on the CPU without touching its weights."""

from __future__ import annotations

import torch.nn as nn
from fla.modules import FusedRMSNormGated as FlaFusedRMSNormGated
from fla.modules import GatedMLP as FlaGatedMLP
from fla.modules import RMSNorm as FlaRMSNorm
from fla.modules import ShortConvolution as FlaShortConvolution

from ramnet_fla.fla_cpu.modules.activations import CPU_CAPABLE_ACTIVATIONS
from ramnet_fla.fla_cpu.modules.convolution import ShortConvolution
from ramnet_fla.fla_cpu.modules.mlp import GatedMLP
from ramnet_fla.fla_cpu.modules.norm import FusedRMSNormGated, RMSNorm

# fla class -> our subclass with the same parameters and a CPU path.
CPU_CAPABLE_CLASSES = {
    FlaShortConvolution: ShortConvolution,
    FlaRMSNorm: RMSNorm,
    FlaFusedRMSNormGated: FusedRMSNormGated,
    FlaGatedMLP: GatedMLP,
}


def _replacement_class(module: nn.Module) -> type | None:
    """Our class for an fla module whose forward is fla's own (subclasses with their own forward are left)."""
    for fla_class, ours in CPU_CAPABLE_CLASSES.items():
        if isinstance(module, fla_class) and not isinstance(module, ours):
            return ours if type(module).forward is fla_class.forward else None
    return None


def _replacement_activation(value):
    try:
        return CPU_CAPABLE_ACTIVATIONS.get(value)
    except TypeError:                               # unhashable attribute value
        return None


def make_cpu_capable(module: nn.Module) -> nn.Module:
    """Switch, in place, every fla ShortConvolution, RMSNorm, FusedRMSNormGated and GatedMLP in
    `module` (itself included) to the subclass in `ramnet_fla.fla_cpu.modules`, and every fla Triton
    activation held as an attribute (e.g. GatedLinearAttention's `gate_fn`) to a dispatching one.

    Parameters, buffers and state_dict keys are unchanged; on accelerators the same fla kernels run,
    on the CPU an exact PyTorch path does. Returns `module`.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    for submodule in module.modules():
        replacement = _replacement_class(submodule)
        if replacement is not None:
            submodule.__class__ = replacement
        for name, value in list(vars(submodule).items()):
            if name.startswith('_') or isinstance(value, (nn.Module, nn.Parameter)):
                continue
            activation = _replacement_activation(value)
            if activation is not None:
                setattr(submodule, name, activation)
    return module
