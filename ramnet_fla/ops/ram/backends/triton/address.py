"""Triton kernels for RAM-Net addresses: fused per-factor log-softmax and exact beam Top-K.

Forward: one program per row of U*d_p logits (a token and head) computes the K most likely flat
slot indices and their log-probabilities (see `utils.beam_topk_row`). Backward: the log-probability
of an address is a sum of per-factor log-softmax entries, so for factor u
    d logits_u = sum_k g_k * (onehot(digit_u(a_k)) - softmax_u),
one program per row again; nothing is accumulated across programs (deterministic).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from fla.utils import autocast_custom_bwd, autocast_custom_fwd, autotune_cache_kwargs, input_guard

from ramnet_fla.ops.ram.backends.triton.utils import address_blocks, beam_topk_row, factor_log_softmax, tl_dtype
from ramnet_fla.ops.ram.common import compute_dtype


@triton.autotune(
    configs=[triton.Config({}, num_warps=num_warps) for num_warps in [1, 2, 4]],
    key=['U', 'DP', 'K'],
    **autotune_cache_kwargs,
)
@triton.jit(do_not_specialize=['R'])
def ram_address_fwd_kernel(
    x,
    index,
    log_prob,
    R,
    U: tl.constexpr,
    DP: tl.constexpr,
    K: tl.constexpr,
    BD: tl.constexpr,
    BK: tl.constexpr,
    ACC: tl.constexpr,
):
    i_r = tl.program_id(0).to(tl.int64)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    b_index, b_log_prob = beam_topk_row(x + i_r * (U * DP), U, DP, K, BD, BK, ACC)
    tl.store(index + i_r * K + o_k, b_index, mask=m_k)
    tl.store(log_prob + i_r * K + o_k, b_log_prob.to(log_prob.dtype.element_ty), mask=m_k)


@triton.autotune(
    configs=[triton.Config({}, num_warps=num_warps) for num_warps in [1, 2, 4]],
    key=['U', 'DP', 'K'],
    **autotune_cache_kwargs,
)
@triton.jit(do_not_specialize=['R'])
def ram_address_bwd_kernel(
    x,
    index,
    dlog_prob,
    dx,
    R,
    U: tl.constexpr,
    DP: tl.constexpr,
    K: tl.constexpr,
    BD: tl.constexpr,
    BK: tl.constexpr,
    ACC: tl.constexpr,
):
    i_r = tl.program_id(0).to(tl.int64)
    o_k = tl.arange(0, BK)
    o_d = tl.arange(0, BD)
    m_k, m_d = o_k < K, o_d < DP
    b_index = tl.load(index + i_r * K + o_k, mask=m_k, other=0)
    b_g = tl.load(dlog_prob + i_r * K + o_k, mask=m_k, other=0).to(ACC)             # [BK]
    b_g_sum = tl.sum(b_g, 0)
    place = 1
    for u in tl.static_range(U):
        b_p = tl.exp(factor_log_softmax(x + i_r * (U * DP) + u * DP, o_d, m_d, ACC))   # [BD]
        b_digit = (b_index // place) % DP                                                 # [BK]
        b_onehot = tl.sum(tl.where(b_digit[:, None] == o_d[None, :], b_g[:, None], 0), 0)
        b_dx = b_onehot - b_g_sum * b_p
        tl.store(dx + i_r * (U * DP) + u * DP + o_d, b_dx.to(dx.dtype.element_ty), mask=m_d)
        place = place * DP


def ram_address_fwd(logits: torch.Tensor, num_factors: int, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logits: [R, U*d_p] contiguous -> (index [R, K] int64, log_prob [R, K] float32/float64)."""
    R, width = logits.shape
    factor_dim = width // num_factors
    BD, BK = address_blocks(factor_dim, topk)
    dtype = compute_dtype(logits)
    index = torch.empty(R, topk, dtype=torch.long, device=logits.device)
    log_prob = torch.empty(R, topk, dtype=dtype, device=logits.device)
    if R > 0:
        ram_address_fwd_kernel[(R,)](
            logits, index, log_prob, R,
            U=num_factors, DP=factor_dim, K=topk, BD=BD, BK=BK, ACC=tl_dtype(dtype),
        )
    return index, log_prob


def ram_address_bwd(logits: torch.Tensor, index: torch.Tensor, dlog_prob: torch.Tensor, num_factors: int) -> torch.Tensor:
    """Gradient [R, U*d_p] (logits' dtype) of sum(dlog_prob * log_prob) with the indices held fixed."""
    R, width = logits.shape
    topk = index.shape[-1]
    factor_dim = width // num_factors
    BD, BK = address_blocks(factor_dim, topk)
    dlogits = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
    if R > 0:
        ram_address_bwd_kernel[(R,)](
            logits, index, dlog_prob.contiguous(), dlogits, R,
            U=num_factors, DP=factor_dim, K=topk, BD=BD, BK=BK, ACC=tl_dtype(compute_dtype(logits)),
        )
    return dlogits


class TritonRAMAddressFunction(torch.autograd.Function):
    """(logits [R, U*d_p]) -> (index [R, K] int64, log_prob [R, K]); differentiable in log_prob."""

    @staticmethod
    @input_guard
    @autocast_custom_fwd
    def forward(ctx, logits, num_factors, topk):
        index, log_prob = ram_address_fwd(logits, num_factors, topk)
        ctx.save_for_backward(logits, index)
        ctx.num_factors = num_factors
        ctx.mark_non_differentiable(index)
        return index, log_prob

    @staticmethod
    @input_guard
    @autocast_custom_bwd
    def backward(ctx, dindex, dlog_prob):
        logits, index = ctx.saved_tensors
        if dlog_prob is None:
            return None, None, None
        return ram_address_bwd(logits, index, dlog_prob, ctx.num_factors), None, None


def address_topk(logits: torch.Tensor, num_factors: int, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [R, U*d_p] -> (index [R, K] int64, log_prob [R, K] float32, or float64 for float64
    logits), differentiable in log_prob."""
    return TritonRAMAddressFunction.apply(logits, num_factors, topk)
