"""fla on the CPU: PyTorch paths for fla's Triton-only ops, modules and layers, laid out like fla.

- `ops`: `torch_chunk_gla`, `torch_chunk_delta_rule`, `torch_chunk_gated_delta_rule` (fla's math,
  arguments and state layouts);
- `modules`: fla's ShortConvolution, RMSNorm, FusedRMSNormGated, GatedMLP and activations as
  subclasses with a CPU path, `apply_rotary`, and `make_cpu_capable` for an existing model;
- `layers`: fla's GatedLinearAttention, DeltaNet and GatedDeltaNet, same arguments and state_dict.

One rule decides the path (`dispatch.CPUDispatch`, via `ramnet_fla.utils.backend.use_fla_kernels`):
accelerator tensors run fla's own forward unchanged, CPU tensors the PyTorch one. Nothing here
depends on the rest of ramnet-fla but `ramnet_fla.utils` (argument checks and that rule).
"""

from ramnet_fla.fla_cpu.dispatch import CPUDispatch
from ramnet_fla.fla_cpu.layers import DeltaNet, GatedDeltaNet, GatedLinearAttention
from ramnet_fla.fla_cpu.modules import make_cpu_capable

__all__ = ['CPUDispatch', 'DeltaNet', 'GatedDeltaNet', 'GatedLinearAttention', 'make_cpu_capable']
