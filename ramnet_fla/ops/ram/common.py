"""What every fast path of the RAM-Net op shares: the op's constants, the compute-dtype rule, the
PDMA decay and the prologue of a call (checked sizes, CAPE heads, initial state, token positions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ramnet_fla.ops.ram.checks import RAMShape, check_ram_inputs
from ramnet_fla.ops.ram.state import RAMState

# PDMA clamps write weights below 1 so that log1p(-w) stays finite.
WEIGHT_CLAMP = 1.0 - 1e-6
# Added to the mass before a read divides by it.
READ_EPS = 1e-6


class cached_property:  # noqa: N801 (named after functools')
    """functools.cached_property without the lock Python 3.11 takes in it, which torch.compile cannot
    trace: computed on first access, then kept in the instance's __dict__ (frozen dataclasses too)."""

    def __init__(self, method):
        self.method, self.name, self.__doc__ = method, method.__name__, method.__doc__

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        cache = instance.__dict__
        if self.name not in cache:
            cache[self.name] = self.method(instance)
        return cache[self.name]


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """The dtype every path computes and keeps states in: float64 when any input is float64 (for
    gradcheck), float32 otherwise."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def pdma_decay(weight: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """PDMA retention of a written slot: lambda = exp(gamma * log1p(-min(w, 1 - 1e-6)))."""
    return torch.exp(gamma * torch.log1p(-weight.clamp(max=WEIGHT_CLAMP)))


@dataclass(frozen=True)
class RAMCall:
    """One checked call of the op, shared by the public ops and their backends.

    shape: the sizes; cape_heads: [H] bool; initial_state: the checked RAMState or None;
    cu_seqlens: [N+1] int64 or None; dtype: the compute dtype (`compute_dtype`).
    """

    shape: RAMShape
    cape_heads: torch.Tensor
    initial_state: RAMState | None
    cu_seqlens: torch.Tensor | None
    dtype: torch.dtype
    device: torch.device

    @cached_property
    def start(self) -> torch.Tensor:
        """[N] int64: tokens each sequence consumed before this call."""
        if self.initial_state is not None:
            return self.initial_state.position.long().clone()
        return torch.zeros(self.shape.num_sequences, dtype=torch.long, device=self.device)

    @cached_property
    def lengths(self) -> torch.Tensor:
        """[N] int64: tokens of each sequence in this call."""
        if self.cu_seqlens is None:
            return torch.full((self.shape.num_sequences,), self.shape.seq_len, dtype=torch.long, device=self.device)
        return self.cu_seqlens[1:] - self.cu_seqlens[:-1]

    @cached_property
    def sequence_ids(self) -> torch.Tensor:
        """[B*T] int64: the sequence of every token, flattened over B*T (empty packed sequences allowed,
        which fla's `prepare_sequence_ids` does not)."""
        B, T = self.shape.batch, self.shape.seq_len
        if self.cu_seqlens is None:
            return torch.arange(B, device=self.device).repeat_interleave(T)
        return torch.repeat_interleave(torch.arange(self.shape.num_sequences, device=self.device), self.lengths,
                                       output_size=B * T)

    @cached_property
    def positions(self) -> torch.Tensor:
        """[B*T] int64: the absolute position of every token in its sequence (drives CAPE)."""
        B, T = self.shape.batch, self.shape.seq_len
        if self.cu_seqlens is None:
            offset = torch.arange(T, device=self.device).repeat(B)
        else:
            offset = torch.arange(B * T, device=self.device) - self.cu_seqlens[:-1][self.sequence_ids]
        return offset + self.start[self.sequence_ids]

    @property
    def final_position(self) -> torch.Tensor:
        """[N] int64: the position of every sequence after this call."""
        return self.start + self.lengths

    def writable_state(self) -> RAMState:
        """The state a decoding step advances in place, as a whole or not at all.

        The initial state itself when its memory and mass are contiguous in the compute dtype and its
        position is int64 (all on the inputs' device, as checked); otherwise converted copies of all
        three, so that the caller's tensors stay untouched; a zero state when there is none.
        """
        shape, state = self.shape, self.initial_state
        if state is None:
            return RAMState.zeros(shape.num_sequences, shape.num_heads, shape.num_slots, shape.value_dim,
                                  device=self.device, dtype=self.dtype)
        memory, mass, position = state
        if (memory.dtype == mass.dtype == self.dtype and memory.is_contiguous() and mass.is_contiguous()
                and position.dtype == torch.long):
            return RAMState(memory, mass, position)
        return RAMState(memory.to(self.dtype, copy=True).contiguous(), mass.to(self.dtype, copy=True).contiguous(),
                        position.to(torch.long, copy=True))


def prepare_call(q, k, v, gamma, num_factors, topk, cape, initial_state, cu_seqlens) -> RAMCall:
    """Check the arguments of `chunk_ram` / `fused_recurrent_ram` and gather what every path needs."""
    shape, cape_heads, state = check_ram_inputs(q, k, v, gamma, num_factors, topk, cape, initial_state, cu_seqlens)
    dtype = compute_dtype(q, k, v, gamma, *(state or ()))
    cu_seqlens = cu_seqlens.to(device=q.device, dtype=torch.long).contiguous() if cu_seqlens is not None else None
    return RAMCall(shape, cape_heads, state, cu_seqlens, dtype, q.device)
