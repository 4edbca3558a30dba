"""Triton `fused_recurrent_ram` (decoding): one program per (sequence, head) updates its K slots in place.

Each program walks the tokens of its sequence (one token when decoding, or a short run) and, per
token, computes both addresses itself (per-factor log-softmax and the exact beam Top-K, the same
device function as the address kernel), applies CAPE with the sequence's own position, gathers the
K written rows of the state, updates them (PDMA) and scatters them back, then reads its K read rows
after the write. Only 2*K rows of M are touched per token: O(U*K*d_p + K*V) work, no copy of the
M x V table.

A program covers the whole value width: the mass z of a slot is shared by all value columns, so
splitting V over programs would race on it. With B*H programs (e.g. 64 x 16) the GPU is full.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from fla.utils import autotune_cache_kwargs, input_guard

from ramnet_fla.ops.ram.backends.triton.utils import (
    EPS,
    address_blocks,
    beam_topk_row,
    check_block,
    pdma_retain,
    tl_dtype,
)
from ramnet_fla.ops.ram.common import RAMCall
from ramnet_fla.ops.ram.state import RAMState


@triton.heuristics({
    'IS_VARLEN': lambda args: args['cu_seqlens'] is not None,
})
@triton.autotune(
    configs=[triton.Config({}, num_warps=num_warps) for num_warps in [1, 2, 4, 8]],
    key=['U', 'DP', 'K', 'BV'],
    # the kernel updates the state in place: autotuning's trial runs must not advance it
    restore_value=['memory', 'mass'],
    **autotune_cache_kwargs,
)
@triton.jit(do_not_specialize=['T'])
def fused_recurrent_ram_fwd_kernel(
    q,
    k,
    v,
    gamma,
    o,
    memory,
    mass,
    position,
    cape_heads,
    cu_seqlens,
    T,
    H: tl.constexpr,
    U: tl.constexpr,
    DP: tl.constexpr,
    M: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BD: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    ACC: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """q, k: [B*T, H, U*d_p]; v: [B*T, H, V]; gamma: [B*T, H]; o: [B*T, H, V];
    memory: [N, H, M, V] and mass: [N, H, M], updated in place; position: [N] (before this call);
    cape_heads: [H] int32; cu_seqlens: [N+1] or None."""
    i_nh = tl.program_id(0).to(tl.int64)
    i_n, i_h = i_nh // H, i_nh % H
    if IS_VARLEN:
        bos, eos = tl.load(cu_seqlens + i_n).to(tl.int64), tl.load(cu_seqlens + i_n + 1).to(tl.int64)
    else:
        bos, eos = i_n * T, i_n * T + T

    o_k = tl.arange(0, BK)
    o_v = tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    b_cape = tl.load(cape_heads + i_h).to(tl.int64)
    b_start = tl.load(position + i_n).to(tl.int64)
    row0 = i_nh * M                                        # first row of this (sequence, head) in [N*H*M]

    for i_t in range(bos, eos):
        i_th = i_t * H + i_h
        # CAPE: slot i at absolute position p becomes (i + p) mod M
        b_shift = ((b_start + i_t - bos) * b_cape) % M

        # write the K slots of k_t: S <- lambda S + w v, z <- lambda z + w
        b_index, b_log_prob = beam_topk_row(k + i_th * (U * DP), U, DP, K, BD, BK, ACC)
        b_row = row0 + (b_index + b_shift) % M
        b_w = tl.where(m_k, tl.exp(b_log_prob), 0)
        b_lam = pdma_retain(b_w, tl.load(gamma + i_th).to(ACC))
        b_v = tl.load(v + i_th * V + o_v, mask=m_v, other=0).to(ACC)
        p_s = memory + b_row[:, None] * V + o_v[None, :]
        b_s = tl.load(p_s, mask=m_kv, other=0).to(ACC)
        b_z = tl.load(mass + b_row, mask=m_k, other=0).to(ACC)
        # every thread holding a copy of a row has loaded it before any thread overwrites it
        tl.debug_barrier()
        tl.store(p_s, (b_lam[:, None] * b_s + b_w[:, None] * b_v[None, :]).to(p_s.dtype.element_ty), mask=m_kv)
        tl.store(mass + b_row, (b_lam * b_z + b_w).to(mass.dtype.element_ty), mask=m_k)
        # the reads below see this token's writes
        tl.debug_barrier()

        # read the K slots of q_t after the write: o = sum_k r_k S_k / (z_k + eps)
        b_index, b_log_prob = beam_topk_row(q + i_th * (U * DP), U, DP, K, BD, BK, ACC)
        b_row = row0 + (b_index + b_shift) % M
        b_r = tl.where(m_k, tl.exp(b_log_prob), 0)
        b_s = tl.load(memory + b_row[:, None] * V + o_v[None, :], mask=m_kv, other=0).to(ACC)
        b_z = tl.load(mass + b_row, mask=m_k, other=0).to(ACC)
        b_o = tl.sum((b_r / (b_z + EPS))[:, None] * b_s, 0)
        tl.store(o + i_th * V + o_v, b_o.to(o.dtype.element_ty), mask=m_v)
        # the next token's writes must not overtake this token's reads
        tl.debug_barrier()


@torch.no_grad()
@input_guard(no_guard_contiguous=['state'])
def fused_recurrent_inplace(q, k, v, gamma, call: RAMCall, state: RAMState) -> torch.Tensor:
    """Run the decoding kernel on checked arguments.

    q, k: [B, T, H, U*d_p]; v: [B, T, H, V]; gamma: [B, T, H]; state: contiguous, in the compute
    dtype, its memory and mass advanced in place (its position, the tokens before this call, is
    read, not advanced). Returns o [B, T, H, V] in v's dtype.
    """
    shape = call.shape
    B, T, H, V, N = shape.batch, shape.seq_len, shape.num_heads, shape.value_dim, shape.num_sequences
    BD, BK = address_blocks(shape.factor_dim, shape.topk)
    check_block('`topk` or the value width V of `v`', BK * triton.next_power_of_2(V),
                f"the K rows of a step next_pow2(topk={shape.topk}) x next_pow2(V={V})")
    o = torch.empty(B, T, H, V, dtype=v.dtype, device=v.device)
    if B * T > 0 and N * H > 0:
        fused_recurrent_ram_fwd_kernel[(N * H,)](
            q, k, v, gamma, o, state.memory, state.mass, state.position, call.cape_heads.to(torch.int32),
            call.cu_seqlens, T,
            H=H, U=shape.num_factors, DP=shape.factor_dim, M=shape.num_slots, K=shape.topk, V=V,
            BD=BD, BK=BK, BV=triton.next_power_of_2(V), ACC=tl_dtype(state.memory.dtype),
        )
    return o
