"""fla's Triton-only modules with a PyTorch path for CPU tensors (fla's `fla.modules`, same names).

Each subclass keeps fla's parameters and state_dict keys and routes through `CPUDispatch`.
`make_cpu_capable(module)` switches the fla modules inside an existing model in place.
"""

from ramnet_fla.fla_cpu.modules.activations import elu_p1, logsigmoid, sigmoid, swish
from ramnet_fla.fla_cpu.modules.convolution import ShortConvolution, causal_conv1d_torch
from ramnet_fla.fla_cpu.modules.cpu_capable import make_cpu_capable
from ramnet_fla.fla_cpu.modules.mlp import GatedMLP, powglu_torch, swiglu_torch
from ramnet_fla.fla_cpu.modules.norm import FusedRMSNormGated, RMSNorm, rms_norm_torch
from ramnet_fla.fla_cpu.modules.rotary import apply_rotary

__all__ = [
    'FusedRMSNormGated',
    'GatedMLP',
    'RMSNorm',
    'ShortConvolution',
    'apply_rotary',
    'causal_conv1d_torch',
    'elu_p1',
    'logsigmoid',
    'make_cpu_capable',
    'powglu_torch',
    'rms_norm_torch',
    'sigmoid',
    'swiglu_torch',
    'swish',
]
