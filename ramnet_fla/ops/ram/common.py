"""Argument checking and token layout shared by every RAM-Net path (reference, PyTorch, Triton).

Each public op calls `check_ram_inputs` first, so every path accepts and rejects exactly the same
inputs and reports a bad one with an error that names the argument and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ramnet_fla.utils.checks import check_cu_seqlens, check_tensor
from ramnet_fla.ops.ram.state import RAMState

# PDMA clamps write weights below 1 so that log1p(-w) stays finite.
WEIGHT_CLAMP = 1.0 - 1e-6
# Added to the mass before a read divides by it.
READ_EPS = 1e-6


@dataclass(frozen=True)
class RAMShape:
    """Sizes of one call, after checking.

    batch: B of the inputs; num_sequences: N (B, or the number of packed sequences).
    seq_len: T of the inputs; num_heads: H; num_factors: U; factor_dim: d_p; num_slots: M = d_p ** U;
    topk: K; value_dim: V.
    """

    batch: int
    num_sequences: int
    seq_len: int
    num_heads: int
    num_factors: int
    factor_dim: int
    num_slots: int
    topk: int
    value_dim: int


def _require_int(name: str, x, minimum: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"`{name}` must be an int, got {type(x).__name__}")
    if x < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {x}")
    return x


def check_address_args(width: int, num_factors, topk, logits_name: str = 'logits') -> tuple[int, int, int]:
    """Check U and K against a logit width of U*d_p; return (U, d_p, M)."""
    num_factors = _require_int('num_factors', num_factors, 1)
    topk = _require_int('topk', topk, 1)
    if width % num_factors != 0:
        raise ValueError(
            f"the last dim of `{logits_name}` ({width}) must be num_factors * factor_dim, "
            f"but num_factors={num_factors} does not divide it"
        )
    factor_dim = width // num_factors
    if factor_dim < 2:
        raise ValueError(
            f"factor_dim = {logits_name}.shape[-1] // num_factors must be >= 2, got {factor_dim} "
            f"(width {width}, num_factors {num_factors})"
        )
    num_slots = factor_dim ** num_factors
    if topk > num_slots:
        raise ValueError(f"`topk` must be <= the number of slots M = {factor_dim}**{num_factors} = {num_slots}, got {topk}")
    return num_factors, factor_dim, num_slots


def normalize_cape(cape, num_heads: int, device: torch.device) -> torch.Tensor:
    """`cape` as a bool tensor [H]: a bool applies to every head, a sequence gives one per head."""
    if isinstance(cape, bool):
        return torch.full((num_heads,), cape, dtype=torch.bool, device=device)
    if isinstance(cape, torch.Tensor):
        values = cape.detach().to('cpu').reshape(-1).tolist()
    elif isinstance(cape, Sequence):
        values = list(cape)
    else:
        raise TypeError(f"`cape` must be a bool or one bool per head ({num_heads}), got {type(cape).__name__}")
    if len(values) != num_heads:
        raise ValueError(f"`cape` must give one bool per head ({num_heads}), got {len(values)} values")
    if not all(isinstance(c, bool) or c in (0, 1) for c in values):
        raise TypeError(f"`cape` must contain bools, got {values}")
    return torch.tensor([bool(c) for c in values], dtype=torch.bool, device=device)


def check_initial_state(initial_state, shape: RAMShape, device: torch.device) -> RAMState:
    if not isinstance(initial_state, tuple) or len(initial_state) != 3:
        raise TypeError(
            "`initial_state` must be a RAMState(memory, mass, position) (or a 3-tuple), "
            f"got {type(initial_state).__name__}"
        )
    memory, mass, position = initial_state
    N, H, M, V = shape.num_sequences, shape.num_heads, shape.num_slots, shape.value_dim
    expected = {'memory': (N, H, M, V), 'mass': (N, H, M), 'position': (N,)}
    for name, x in zip(('memory', 'mass', 'position'), (memory, mass, position)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"`initial_state.{name}` must be a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape) != expected[name]:
            raise ValueError(
                f"`initial_state.{name}` must have shape {expected[name]} ([N, H, M, V] / [N, H, M] / [N] with "
                f"N={N} sequences, H={H}, M={M}, V={V}), got {tuple(x.shape)}"
            )
        if x.device != device:
            raise ValueError(f"`initial_state.{name}` must be on the inputs' device {device}, got {x.device}")
    if not memory.dtype.is_floating_point or not mass.dtype.is_floating_point:
        raise TypeError(f"`initial_state.memory` and `.mass` must be floating point, got {memory.dtype}, {mass.dtype}")
    if position.dtype.is_floating_point or position.dtype == torch.bool:
        raise TypeError(f"`initial_state.position` must be an integer tensor, got {position.dtype}")
    return RAMState(memory, mass, position)


def check_ram_inputs(
    q, k, v, gamma, num_factors, topk, cape, initial_state, cu_seqlens,
) -> tuple[RAMShape, torch.Tensor, RAMState | None]:
    """Validate the arguments shared by all three op paths.

    Returns the sizes, `cape` as a bool tensor [H], and the initial state as a RAMState (or None).
    """
    check_tensor('q', q, 4, '[B, T, H, U*d_p]')
    check_tensor('k', k, 4, '[B, T, H, U*d_p]')
    check_tensor('v', v, 4, '[B, T, H, V]')
    check_tensor('gamma', gamma, 3, '[B, T, H]')
    for name, x in (('q', q), ('k', k), ('v', v), ('gamma', gamma)):
        if not x.dtype.is_floating_point:
            raise TypeError(f"`{name}` must be floating point, got {x.dtype}")
    if q.shape != k.shape:
        raise ValueError(f"`q` and `k` must have the same shape [B, T, H, U*d_p], got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"`v` must be [B, T, H, V] with B, T, H of `q` {tuple(q.shape[:3])}, got {tuple(v.shape)}")
    if gamma.shape != q.shape[:3]:
        raise ValueError(f"`gamma` must be [B, T, H] = {tuple(q.shape[:3])}, got {tuple(gamma.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"`q`, `k` and `v` must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    device = q.device
    for name, x in (('k', k), ('v', v), ('gamma', gamma)):
        if x.device != device:
            raise ValueError(f"`{name}` must be on the same device as `q` ({device}), got {x.device}")
    if gamma.numel() > 0 and bool((gamma < 0).any()):
        raise ValueError(f"`gamma` (the PDMA decay exponent) must be >= 0, got a minimum of {gamma.min().item():.4g}")
    if not torch.isfinite(gamma).all():
        raise ValueError("`gamma` must be finite")

    U, d_p, M = check_address_args(q.shape[-1], num_factors, topk, logits_name='q')
    B, T, H, V = v.shape
    if V < 1:
        raise ValueError("`v` must have a value width V >= 1")
    if cu_seqlens is not None:
        check_cu_seqlens(cu_seqlens, B, T, device)
        N = cu_seqlens.numel() - 1
    else:
        N = B
    shape = RAMShape(batch=B, num_sequences=N, seq_len=T, num_heads=H, num_factors=U, factor_dim=d_p,
                     num_slots=M, topk=topk, value_dim=V)
    cape_heads = normalize_cape(cape, H, device)
    state = None if initial_state is None else check_initial_state(initial_state, shape, device)
    return shape, cape_heads, state


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 when any input is float64 (for gradcheck), float32 otherwise."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def token_layout(shape: RAMShape, cu_seqlens: torch.Tensor | None, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence id and 0-based position within the sequence of every token, flattened over [B*T].

    Returns (sequence_ids [B*T] int64, positions [B*T] int64). Empty packed sequences are allowed.
    """
    B, T = shape.batch, shape.seq_len
    if cu_seqlens is None:
        sequence_ids = torch.arange(B, device=device).repeat_interleave(T)
        positions = torch.arange(T, device=device).repeat(B)
        return sequence_ids, positions
    cu = cu_seqlens.to(device=device, dtype=torch.long)
    lengths = cu[1:] - cu[:-1]
    sequence_ids = torch.repeat_interleave(torch.arange(lengths.numel(), device=device), lengths, output_size=T)
    positions = torch.arange(T, device=device) - cu[:-1][sequence_ids]
    return sequence_ids, positions


def cape_shift(indices: torch.Tensor, positions: torch.Tensor, cape_heads: torch.Tensor, num_slots: int) -> torch.Tensor:
    """Apply CAPE: slot i of a CAPE head at absolute position p becomes (i + p) mod M.

    indices: [..., H, K] int64; positions: broadcastable to [..., H, K] after adding two dims ([...]);
    cape_heads: [H] bool.
    """
    if not bool(cape_heads.any()):
        return indices
    shift = positions[..., None, None] * cape_heads[:, None].long()
    return torch.remainder(indices + shift, num_slots)


def pdma_decay(weight: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """PDMA retention of a written slot: lambda = exp(gamma * log1p(-min(w, 1 - 1e-6)))."""
    return torch.exp(gamma * torch.log1p(-weight.clamp(max=WEIGHT_CLAMP)))


def final_positions(shape: RAMShape, cu_seqlens: torch.Tensor | None, start: torch.Tensor) -> torch.Tensor:
    """Per-sequence position after this call: start + tokens consumed. start: [N] int64."""
    if cu_seqlens is None:
        return start + shape.seq_len
    cu = cu_seqlens.to(device=start.device, dtype=torch.long)
    return start + (cu[1:] - cu[:-1])

