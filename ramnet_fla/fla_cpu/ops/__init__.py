"""PyTorch versions of fla ops that fla ships only as Triton kernels (fla's `fla.ops`, same math).

Same arguments, layouts and state conventions as fla's kernels (`[B, T, H, D]`, `cu_seqlens` with
B == 1, float32 states in `[N, H, K, V]` or, with `state_v_first`, `[N, H, V, K]`):

- `torch_chunk_gla`: gated linear attention with a per-key-channel decay (fla's `chunk_gla`).
- `torch_chunk_delta_rule`: the delta rule (fla's `chunk_delta_rule`).
- `torch_chunk_gated_delta_rule`: the gated delta rule (fla's `chunk_gated_delta_rule`).

All are chunked: a chunk of C tokens is a few small matrix products and one triangular solve, and
only the C-token boundaries are visited one after another. Every decay is applied as exp of a
non-positive log-decay difference, never divided out, so long or strongly decaying inputs stay finite.
"""

from ramnet_fla.fla_cpu.ops.delta_rule import torch_chunk_delta_rule
from ramnet_fla.fla_cpu.ops.gated_delta_rule import torch_chunk_gated_delta_rule
from ramnet_fla.fla_cpu.ops.gla import torch_chunk_gla

__all__ = ['torch_chunk_delta_rule', 'torch_chunk_gated_delta_rule', 'torch_chunk_gla']
