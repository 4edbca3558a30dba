"""Drop-in subclasses of fla's Triton-only modules that also run on the CPU.

Each keeps fla's parameters and state_dict keys, calls fla's kernels for accelerator tensors and
an exact PyTorch computation for CPU tensors. `make_cpu_capable(module)` switches the fla modules
inside an existing model (e.g. fla's GatedLinearAttention or DeltaNet layers) in place.
"""

from ramnet_fla.modules.activations import logsigmoid, sigmoid, swish
from ramnet_fla.modules.convolution import ShortConvolution, causal_conv1d_torch
from ramnet_fla.modules.cpu_capable import make_cpu_capable
from ramnet_fla.utils.backend import use_fla_kernels
from ramnet_fla.modules.mlp import GatedMLP, powglu_torch, swiglu_torch
from ramnet_fla.modules.norm import FusedRMSNormGated, RMSNorm, rms_norm_torch

__all__ = [
    'FusedRMSNormGated',
    'GatedMLP',
    'RMSNorm',
    'ShortConvolution',
    'causal_conv1d_torch',
    'logsigmoid',
    'make_cpu_capable',
    'powglu_torch',
    'rms_norm_torch',
    'sigmoid',
    'swiglu_torch',
    'swish',
    'use_fla_kernels',
]
