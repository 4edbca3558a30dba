"""fla's layers that also run on the CPU (fla's `fla.layers`, same names, arguments and state_dict)."""

from ramnet_fla.fla_cpu.layers.base import CPUCapableLayer
from ramnet_fla.fla_cpu.layers.delta_net import DeltaNet
from ramnet_fla.fla_cpu.layers.gated_deltanet import GatedDeltaNet
from ramnet_fla.fla_cpu.layers.gla import GatedLinearAttention

__all__ = ['CPUCapableLayer', 'DeltaNet', 'GatedDeltaNet', 'GatedLinearAttention']
