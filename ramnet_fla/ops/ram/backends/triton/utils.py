"""Device functions and launch helpers shared by the RAM-Net Triton kernels."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ramnet_fla.ops.ram.common import READ_EPS, WEIGHT_CLAMP


def tl_dtype(dtype: torch.dtype):
    """The Triton dtype matching a torch compute dtype (float32 or float64, see `compute_dtype`)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def address_blocks(factor_dim: int, topk: int) -> tuple[int, int]:
    """Power-of-two block sizes (BD, BK) covering d_p digits and K beam entries."""
    return triton.next_power_of_2(factor_dim), triton.next_power_of_2(topk)


# The op's constants (see common.py), as compile-time constants for the kernels.
CLAMP = tl.constexpr(WEIGHT_CLAMP)
EPS = tl.constexpr(READ_EPS)


@triton.jit
def log1p(x):
    """log(1 + x), accurate for small x (Kahan's trick).

    Compatibility: Triton 3.9's interpreter has no libdevice.log1p, so the kernels use this instead.
    """
    b_u = 1 + x
    return tl.where(b_u == 1, x, tl.log(b_u) * (x / tl.where(b_u == 1, 1, b_u - 1)))


@triton.jit
def pdma_retain(b_w, b_gamma):
    """PDMA retention lambda = exp(gamma * log1p(-min(w, CLAMP))) of a slot written with weight w."""
    return tl.exp(b_gamma * log1p(-tl.minimum(b_w, CLAMP)))


@triton.jit
def factor_log_softmax(p_x, o_d, m_d, ACC: tl.constexpr):
    """log_softmax of the d_p logits at p_x + o_d (masked digits get -inf). Returns [BD] in ACC."""
    b_x = tl.load(p_x + o_d, mask=m_d, other=float('-inf')).to(ACC)
    b_x = b_x - tl.max(b_x, 0)
    return b_x - tl.log(tl.sum(tl.exp(b_x), 0))


@triton.jit
def select_topk_by_rank(b_cand, b_cand_index, K: tl.constexpr, BK: tl.constexpr, NC: tl.constexpr):
    """The K largest of NC candidates [NC], best first, in one shot: a candidate's rank is the number
    of candidates that beat it (a larger score, or an equal one at a lower position). O(NC^2) work,
    no loop: for small beams (padded K * d_p <= 128). Returns (score [BK], index [BK]); padding is -inf."""
    o_c = tl.arange(0, NC)
    beats = (b_cand[None, :] > b_cand[:, None]) | ((b_cand[None, :] == b_cand[:, None]) & (o_c[None, :] < o_c[:, None]))
    b_rank = tl.sum(beats.to(tl.int32), 1)                                           # [NC], a permutation
    m_slot = b_rank[None, :] == tl.arange(0, BK)[:, None]                            # [BK, NC]
    m_slot = m_slot & (tl.arange(0, BK)[:, None] < K)
    b_score = tl.max(tl.where(m_slot, b_cand[None, :], float('-inf')), 1)
    b_index = tl.sum(tl.where(m_slot, b_cand_index[None, :], 0), 1)
    return b_score, b_index


@triton.jit
def select_topk_by_max(b_cand, b_cand_index, K: tl.constexpr, BK: tl.constexpr, NC: tl.constexpr):
    """The K largest of NC candidates [NC], best first, by K rounds of (max, take, mask out): for
    large beams where an NC x NC comparison would not fit. Ties go to the lower position."""
    o_c = tl.arange(0, NC)
    o_k = tl.arange(0, BK)
    b_score = tl.full([BK], float('-inf'), dtype=b_cand.dtype)
    b_index = tl.zeros([BK], dtype=tl.int64)
    for i in range(K):
        b_best = tl.max(b_cand, 0)
        b_pick = tl.min(tl.where(b_cand == b_best, o_c, NC), 0)
        m_pick = o_c == b_pick
        b_score = tl.where(o_k == i, b_best, b_score)
        b_index = tl.where(o_k == i, tl.sum(tl.where(m_pick, b_cand_index, 0), 0), b_index)
        b_cand = tl.where(m_pick, float('-inf'), b_cand)
    return b_score, b_index


@triton.jit
def beam_topk_row(
    p_x,
    U: tl.constexpr,
    DP: tl.constexpr,
    K: tl.constexpr,
    BD: tl.constexpr,
    BK: tl.constexpr,
    ACC: tl.constexpr,
):
    """Exact Top-K of the product softmax of one row of U*d_p logits starting at pointer p_x.

    A beam search over factors in the log domain: keep the K best prefixes, extend each by the d_p
    digits of the next factor, keep the K best of the K*d_p candidates (ties go to the lower beam
    rank, then the lower digit). Returns (index [BK] int64 flat slot indices, sorted by descending
    log-probability; log_prob [BK] in ACC); entries from K on are padding (-inf).
    """
    o_d = tl.arange(0, BD)
    o_k = tl.arange(0, BK)
    m_d = o_d < DP
    # one live prefix (the empty one, log-prob 0) before the first factor
    b_score = tl.where(o_k == 0, 0., float('-inf')).to(ACC)
    b_index = tl.zeros([BK], dtype=tl.int64)
    place = 1
    for u in tl.static_range(U):
        b_lp = factor_log_softmax(p_x + u * DP, o_d, m_d, ACC)
        # candidate (beam entry i, digit d) sits at position i * BD + d
        b_cand = tl.reshape(b_score[:, None] + b_lp[None, :], [BK * BD])
        b_cand_index = tl.reshape(b_index[:, None] + o_d[None, :].to(tl.int64) * place, [BK * BD])
        if BK * BD <= 128:
            b_score, b_index = select_topk_by_rank(b_cand, b_cand_index, K, BK, BK * BD)
        else:
            b_score, b_index = select_topk_by_max(b_cand, b_cand_index, K, BK, BK * BD)
        place = place * DP
    return b_index, b_score
