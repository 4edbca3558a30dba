"""Device functions and launch helpers shared by the RAM-Net Triton kernels."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ramnet_fla.ops.ram.common import READ_EPS, WEIGHT_CLAMP


def tl_dtype(dtype: torch.dtype):
    """The Triton dtype matching a torch compute dtype (float32 or float64, see `compute_dtype`)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


# The most elements one Triton block may hold (triton.language's TRITON_MAX_TENSOR_NUMEL, 2**20).
MAX_BLOCK_NUMEL = 2 ** 20


def check_block(name: str, numel: int, what: str) -> None:
    """Reject a launch whose largest block exceeds Triton's limit, naming the sizes behind it."""
    if numel > MAX_BLOCK_NUMEL:
        raise ValueError(
            f"the Triton kernels cannot hold {what} = {numel} elements in one block (at most 2**20): "
            f"reduce {name}, or use the PyTorch backend (RAMNET_FLA_BACKEND=torch)"
        )


def address_blocks(factor_dim: int, topk: int) -> tuple[int, int]:
    """Power-of-two block sizes (BD, BK) covering d_p digits and K beam entries. Flat indices are
    int64 in every kernel, which the op's checks keep below 2**63 (M = d_p ** U < 2**63)."""
    BD, BK = triton.next_power_of_2(factor_dim), triton.next_power_of_2(topk)
    check_block('`topk` or the factor width d_p', BK * BD,
                f"the beam's candidates next_pow2(topk={topk}) x next_pow2(d_p={factor_dim})")
    return BD, BK


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
def select_topk_by_rank(b_cand, b_cand_index, b_cand_valid, K: tl.constexpr, BK: tl.constexpr, NC: tl.constexpr):
    """The K first of NC candidates [NC] in the beam's order, in one shot: a candidate's rank is the
    number of candidates before it. The order: valid candidates first, then higher score, then lower
    flat index (distinct among valid candidates), then lower position (padding only). O(NC^2) work,
    no loop: for small beams (padded K * d_p <= 128). b_cand_valid: [NC] int32 (1 = a real
    candidate). Returns (score [BK], index [BK], valid [BK] int32); entries from K on are padding."""
    o_c = tl.arange(0, NC)
    s_j, s_i = b_cand[None, :], b_cand[:, None]
    x_j, x_i = b_cand_index[None, :], b_cand_index[:, None]
    v_j, v_i = b_cand_valid[None, :], b_cand_valid[:, None]
    later_key = (x_j < x_i) | ((x_j == x_i) & (o_c[None, :] < o_c[:, None]))
    beats = (v_j > v_i) | ((v_j == v_i) & ((s_j > s_i) | ((s_j == s_i) & later_key)))   # j before i
    b_rank = tl.sum(beats.to(tl.int32), 1)                                           # [NC], a permutation
    m_slot = b_rank[None, :] == tl.arange(0, BK)[:, None]                            # [BK, NC]
    m_slot = m_slot & (tl.arange(0, BK)[:, None] < K)
    b_score = tl.max(tl.where(m_slot, b_cand[None, :], float('-inf')), 1)
    b_index = tl.sum(tl.where(m_slot, b_cand_index[None, :], 0), 1)
    b_valid = tl.max(tl.where(m_slot, b_cand_valid[None, :], 0), 1)
    return b_score, b_index, b_valid


@triton.jit
def select_topk_by_max(b_cand, b_cand_index, b_cand_valid, K: tl.constexpr, BK: tl.constexpr, NC: tl.constexpr):
    """`select_topk_by_rank` by K rounds of (pick the first, take it, mask it out): for large beams
    where an NC x NC comparison would not fit. Same order, same results."""
    o_c = tl.arange(0, NC)
    o_k = tl.arange(0, BK)
    b_score = tl.full([BK], float('-inf'), dtype=b_cand.dtype)
    b_index = tl.zeros([BK], dtype=tl.int64)
    b_valid = tl.zeros([BK], dtype=tl.int32)
    b_live = tl.full([NC], 1, dtype=tl.int32)
    for i in range(K):
        b_any_valid = tl.max(b_live * b_cand_valid, 0)
        m_pool = (b_live > 0) & (b_cand_valid == b_any_valid)         # the valid ones while any is left
        b_best = tl.max(tl.where(m_pool, b_cand, float('-inf')), 0)
        m_pool = m_pool & (b_cand == b_best)
        b_best_index = tl.min(tl.where(m_pool, b_cand_index, 0x7FFFFFFFFFFFFFFF), 0)
        m_pool = m_pool & (b_cand_index == b_best_index)
        b_pick = tl.min(tl.where(m_pool, o_c, NC), 0)
        m_pick = o_c == b_pick
        b_score = tl.where(o_k == i, b_best, b_score)
        b_index = tl.where(o_k == i, b_best_index, b_index)
        b_valid = tl.where(o_k == i, b_any_valid, b_valid)
        b_live = tl.where(m_pick, 0, b_live)
    return b_score, b_index, b_valid


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
    digits of the next factor, keep the K best of the K*d_p candidates, ties to the lower flat index
    (as every path does). Beam entries and digits that are padding are flagged invalid, so they rank
    after every real candidate, -inf ones included. A row with a factor whose log-softmax is not a
    number gets NaN log-probabilities and the indices 0..K-1. Returns (index [BK] int64 flat slot
    indices, sorted by descending log-probability; log_prob [BK] in ACC); entries from K on are padding.
    """
    o_d = tl.arange(0, BD)
    o_k = tl.arange(0, BK)
    m_d = o_d < DP
    # one live prefix (the empty one, log-prob 0) before the first factor
    b_score = tl.zeros([BK], dtype=ACC)
    b_index = tl.zeros([BK], dtype=tl.int64)
    b_valid = (o_k == 0).to(tl.int32)
    b_nan = tl.zeros([BD], dtype=tl.int32)
    place = 1
    for u in tl.static_range(U):
        b_lp = factor_log_softmax(p_x + u * DP, o_d, m_d, ACC)
        b_nan = b_nan | ((b_lp != b_lp) & m_d).to(tl.int32)
        b_lp = tl.where(b_lp != b_lp, 0., b_lp)                     # such a row's result is replaced below
        # candidate (beam entry i, digit d) sits at position i * BD + d
        b_cand = tl.reshape(b_score[:, None] + b_lp[None, :], [BK * BD])
        b_cand_index = tl.reshape(b_index[:, None] + o_d[None, :].to(tl.int64) * place, [BK * BD])
        b_cand_valid = tl.reshape(b_valid[:, None] * m_d[None, :].to(tl.int32), [BK * BD])
        if BK * BD <= 128:
            b_score, b_index, b_valid = select_topk_by_rank(b_cand, b_cand_index, b_cand_valid, K, BK, BK * BD)
        else:
            b_score, b_index, b_valid = select_topk_by_max(b_cand, b_cand_index, b_cand_valid, K, BK, BK * BD)
        place = place * DP
    b_bad = tl.max(b_nan, 0) > 0
    b_index = tl.where(b_bad, o_k.to(tl.int64), b_index)
    b_score = tl.where(b_bad, float('nan'), b_score)
    return b_index, b_score
