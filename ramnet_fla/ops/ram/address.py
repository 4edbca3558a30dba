"""K-hot addresses from factorised logits: product softmax and exact beam-search Top-K.

An address over M = d_p ** U slots is one digit a_u in [0, d_p) per factor u; its flat index is
sum_u a_u * d_p ** u (factor 0 least significant) and its log-probability is
sum_u log_softmax(logits[u*d_p:(u+1)*d_p])[a_u]. The K most likely addresses are found exactly,
without enumerating M, by a beam search over factors: keep the K best prefixes, extend each by
the d_p digits of the next factor, keep the best K. A prefix outside the best K cannot complete
into the Top-K, because the K better prefixes completed with its suffix beat it.
"""

from __future__ import annotations

import functools

import torch

from ramnet_fla.ops.ram.backend import select_backend
from ramnet_fla.ops.ram.common import check_address_args


def factor_log_probs(logits: torch.Tensor, num_factors: int) -> torch.Tensor:
    """Per-factor log-softmax. logits: [..., U*d_p] -> [..., U, d_p] in float32 (float64 stays)."""
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return logits.to(dtype).unflatten(-1, (num_factors, -1)).log_softmax(-1)


# below this many rows (e.g. decoding a few sequences) `beam_topk` ranks every candidate
PRUNE_MIN_ROWS = 256


@functools.lru_cache(maxsize=None)
def _dominance_pairs(beam_width: int, factor_dim: int, topk: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates (i, j) that can still reach the Top-K when beam and digits are sorted best first.

    Candidate (i, j) (i-th prefix, j-th best digit) is beaten or tied by every (i', j') with i' <= i
    and j' <= j, so it can only be among the K best if (i + 1) * (j + 1) <= K.
    """
    pairs = [(i, j) for i in range(beam_width) for j in range(factor_dim) if (i + 1) * (j + 1) <= topk]
    prefix = torch.tensor([i for i, _ in pairs], device=device)
    digit = torch.tensor([j for _, j in pairs], device=device)
    return prefix, digit


@torch.no_grad()
def beam_topk(log_probs: torch.Tensor, topk: int) -> torch.Tensor:
    """Flat indices [..., K] of the K most likely addresses, best first. log_probs: [..., U, d_p].

    With many rows (training), each factor's digits are sorted first so that candidates that cannot
    reach the Top-K are never formed (`_dominance_pairs`: 32 -> 16 per row for K=8, d_p=4); with few
    rows (decoding) the extra sort costs more than it saves, and all K*d_p candidates are ranked.
    """
    *lead, num_factors, factor_dim = log_probs.shape
    prune = log_probs[..., 0, 0].numel() >= PRUNE_MIN_ROWS
    if prune:
        factor_score, factor_digit = log_probs.sort(dim=-1, descending=True)             # [..., U, d_p]
    else:
        factor_score = log_probs
        factor_digit = torch.arange(factor_dim, device=log_probs.device).expand(log_probs.shape)
    beam_score = log_probs.new_zeros(*lead, 1)              # [..., b], b = beam width so far
    beam_index = torch.zeros(*lead, 1, dtype=torch.long, device=log_probs.device)
    for u in range(num_factors):
        width, scale = beam_score.shape[-1], factor_dim ** u
        if prune and width == 1:                            # one prefix: its best digits are the best candidates
            keep = min(topk, factor_dim)
            beam_score = beam_score + factor_score[..., u, :keep]
            beam_index = beam_index + factor_digit[..., u, :keep] * scale
            continue
        if prune and width * factor_dim > topk:             # beam and digits sorted: skip dominated candidates
            prefix, digit = _dominance_pairs(width, factor_dim, topk, log_probs.device)
            score = beam_score.index_select(-1, prefix) + factor_score[..., u, :].index_select(-1, digit)
            index = beam_index.index_select(-1, prefix) + factor_digit[..., u, :].index_select(-1, digit) * scale
        else:
            score = (beam_score[..., :, None] + factor_score[..., u, None, :]).flatten(-2)    # [..., b*d_p]
            index = (beam_index[..., :, None] + factor_digit[..., u, None, :] * scale).flatten(-2)
            if not prune and score.shape[-1] <= topk and u < num_factors - 1:
                beam_score, beam_index = score, index       # nothing to prune yet; order not needed
                continue
        beam_score, best = score.topk(min(topk, score.shape[-1]), dim=-1)   # sorted, best first
        beam_index = index.gather(-1, best)
    return beam_index


def gather_log_probs(log_probs: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """log w(a) for flat indices [..., K], summed factor by factor. log_probs: [..., U, d_p].

    One gather of every factor's digit (so one scatter in backward), then a left-to-right sum, the
    order the beam search used, so the values equal the beam's scores and stay sorted.
    """
    num_factors, factor_dim = log_probs.shape[-2:]
    columns = digit_columns(indices, num_factors, factor_dim)                              # [..., K*U]
    terms = log_probs.flatten(-2).gather(-1, columns).unflatten(-1, (indices.shape[-1], num_factors))
    total = terms[..., 0]
    for u in range(1, num_factors):
        total = total + terms[..., u]
    return total


def digit_columns(indices: torch.Tensor, num_factors: int, factor_dim: int) -> torch.Tensor:
    """Column u*d_p + a_u of every factor's digit, for flat indices [..., K] -> [..., K*U]."""
    factors = torch.arange(num_factors, device=indices.device)
    digits = torch.div(indices[..., None], factor_dim ** factors, rounding_mode='floor') % factor_dim
    return (digits + factors * factor_dim).flatten(-2)


class RAMAddressFunction(torch.autograd.Function):
    """Top-K addresses and their log-probabilities, with a hand-written backward to the logits.

    forward: logits [..., U*d_p] -> indices [..., K] (constant), log_probs [..., K].
    backward: each factor is a log-softmax read at the chosen digits, so
    d logits[u] = g_u - softmax[u] * sum(g_u), with g_u the log-prob gradients gathered per digit.
    """

    @staticmethod
    def forward(ctx, logits, num_factors, topk):
        log_probs = factor_log_probs(logits, num_factors)                  # [..., U, d_p]
        indices = beam_topk(log_probs, topk)
        ctx.save_for_backward(log_probs, indices)
        ctx.logits_dtype = logits.dtype
        ctx.mark_non_differentiable(indices)
        return indices, gather_log_probs(log_probs, indices)

    @staticmethod
    def backward(ctx, grad_indices, grad_log_probs):
        log_probs, indices = ctx.saved_tensors
        num_factors, factor_dim = log_probs.shape[-2:]
        columns = digit_columns(indices, num_factors, factor_dim)          # [..., K*U]
        spread = grad_log_probs.to(log_probs.dtype)[..., None].expand(*indices.shape, num_factors).flatten(-2)
        grad = torch.zeros_like(log_probs).flatten(-2).scatter_add_(-1, columns, spread).unflatten(
            -1, (num_factors, factor_dim))                                  # [..., U, d_p]
        grad = grad - log_probs.exp() * grad.sum(-1, keepdim=True)          # through each log-softmax
        return grad.flatten(-2).to(ctx.logits_dtype), None, None


def ram_address_torch(logits: torch.Tensor, num_factors: int, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The PyTorch path of `ram_address` (see there)."""
    return RAMAddressFunction.apply(logits, num_factors, topk)


def ram_address(logits: torch.Tensor, num_factors: int, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-K addresses of the product softmax over M = d_p ** U slots.

    Args:
        logits: [..., U*d_p] factor logits (any leading dims, e.g. [B, T, H, U*d_p]).
        num_factors: U.
        topk: K <= M.

    Returns:
        indices: [..., K] int64 flat slot indices, sorted by descending log-probability.
        log_probs: [..., K] float32 (float64 for float64 logits), differentiable w.r.t. `logits`.
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"`logits` must be a torch.Tensor [..., U*d_p], got {type(logits).__name__}")
    if logits.ndim < 1:
        raise ValueError("`logits` must have at least one dim [..., U*d_p]")
    if not logits.dtype.is_floating_point:
        raise TypeError(f"`logits` must be floating point, got {logits.dtype}")
    check_address_args(logits.shape[-1], num_factors, topk)
    if select_backend(logits) == 'triton':
        from ramnet_fla.ops.ram.triton.address import ram_address_triton
        return ram_address_triton(logits, num_factors, topk)
    return ram_address_torch(logits, num_factors, topk)
