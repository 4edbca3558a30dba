"""Argument checks of the RAM-Net op, shared by every path (reference, PyTorch, Triton).

Each public op checks its arguments here first, so every path accepts and rejects exactly the same
inputs and reports a bad one with an error that names the argument and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ramnet_fla.ops.ram.cape import cape_flags
from ramnet_fla.ops.ram.state import RAMState
from ramnet_fla.utils.checks import check_cu_seqlens, check_int, check_tensor
from ramnet_fla.utils.compile import reject_under_compile


# Flat slot indices are int64: M = d_p ** U must stay below 2**63.
MAX_SLOTS = 2 ** 63
# Positions (tokens consumed per sequence) stay below 2**62: position + T and index + position fit int64.
MAX_POSITION = 2 ** 62


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


def check_address_args(width: int, num_factors, topk, logits_name: str = 'logits') -> tuple[int, int, int]:
    """Check U and K against a logit width of U*d_p; return (U, d_p, M)."""
    num_factors = check_int('num_factors', num_factors, minimum=1)
    topk = check_int('topk', topk, minimum=1)
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
    num_slots = factor_dim ** num_factors                     # a Python int: exact, however large
    if num_slots >= MAX_SLOTS:
        raise ValueError(
            f"the address space M = factor_dim ** num_factors = {factor_dim}**{num_factors} must be < 2**63 "
            f"(flat slot indices are int64), got num_factors={num_factors} with factor width d_p={factor_dim}: "
            f"use fewer factors or narrower ones"
        )
    if topk > num_slots:
        raise ValueError(f"`topk` must be <= the number of slots M = {factor_dim}**{num_factors} = {num_slots}, got {topk}")
    return num_factors, factor_dim, num_slots


def check_logits(logits) -> None:
    """`logits` must be a floating-point tensor [..., U*d_p]."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"`logits` must be a torch.Tensor [..., U*d_p], got {type(logits).__name__}")
    if logits.ndim < 1:
        raise ValueError("`logits` must have at least one dim [..., U*d_p]")
    if not logits.dtype.is_floating_point:
        raise TypeError(f"`logits` must be floating point, got {logits.dtype}")


def check_initial_state(initial_state, shape: RAMShape, device: torch.device) -> RAMState:
    """`initial_state` as a RAMState of the call's sizes ([N, H, M, V], [N, H, M], [N]) on `device`."""
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
    if position.dtype.is_floating_point or position.dtype.is_complex or position.dtype == torch.bool:
        raise TypeError(f"`initial_state.position` must be an integer tensor, got {position.dtype}")
    wide = position.long()                                  # int32 would wrap the 2**62 bound
    # a host sync, so eager only: torch.compile cannot trace a data-dependent branch
    if not torch.compiler.is_compiling() and position.numel() > 0 and bool(((wide < 0) | (wide >= MAX_POSITION)).any()):
        raise ValueError(
            "`initial_state.position` (tokens consumed per sequence) must be in [0, 2**62), so that "
            f"positions and CAPE shifts stay within int64, got values in [{int(wide.min())}, {int(wide.max())}]"
        )
    return RAMState(memory, mass, position)


def check_gamma_values(gamma: torch.Tensor) -> None:
    """gamma must be finite and >= 0. A value check, so a host sync: `check_ram_inputs` runs it before
    any work in eager mode; under torch.compile, where a sync cannot be traced, the op's custom op
    runs it instead when its kernel is called (`check_gamma=True`, backends/*/library.py)."""
    if gamma.numel() > 0 and bool((gamma < 0).any()):
        raise ValueError(f"`gamma` (the PDMA decay exponent) must be >= 0, got a minimum of {gamma.min().item():.4g}")
    if not torch.isfinite(gamma).all():
        raise ValueError("`gamma` must be finite")


def check_ram_inputs(
    q, k, v, gamma, num_factors, topk, cape, initial_state, cu_seqlens,
) -> tuple[RAMShape, torch.Tensor, RAMState | None]:
    """Validate the arguments shared by all three op paths.

    Returns the sizes, `cape` as a bool tensor [H] on q's device, and the initial state as a
    RAMState (or None).
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
    if not torch.compiler.is_compiling():      # compiled: the op checks inside its kernel call
        check_gamma_values(gamma)

    U, d_p, M = check_address_args(q.shape[-1], num_factors, topk, logits_name='q')
    B, T, H, V = v.shape
    if V < 1:
        raise ValueError("`v` must have a value width V >= 1")
    if cu_seqlens is not None:
        if torch.compiler.is_compiling():
            reject_under_compile('cu_seqlens')
        check_cu_seqlens(cu_seqlens, B, T, device)
        N = cu_seqlens.numel() - 1
    else:
        N = B
    shape = RAMShape(batch=B, num_sequences=N, seq_len=T, num_heads=H, num_factors=U, factor_dim=d_p,
                     num_slots=M, topk=topk, value_dim=V)
    cape_heads = torch.tensor(cape_flags(cape, H), dtype=torch.bool, device=device)
    state = None if initial_state is None else check_initial_state(initial_state, shape, device)
    return shape, cape_heads, state
