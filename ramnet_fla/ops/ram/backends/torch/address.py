"""PyTorch `ram_address`: per-factor log-softmax and the exact beam Top-K, with its backward.

An address over M = d_p ** U slots is one digit a_u in [0, d_p) per factor u; its flat index is
sum_u a_u * d_p ** u (factor 0 least significant) and its log-probability is
sum_u log_softmax(logits[u*d_p:(u+1)*d_p])[a_u]. The K most likely addresses are found exactly,
without enumerating M, by a beam search over factors: keep the K best prefixes, extend each by
the d_p digits of the next factor, keep the best K. "Best" is the total order (score desc, flat
index asc), in every implementation (docs/op.md, "Ties and non-finite logits"). A prefix outside
the best K cannot complete into the Top-K, because the K better prefixes completed with its suffix
beat it: a common suffix keeps the order of two prefixes, scores and indices alike.

Two implementations of that search: `merge_beam_topk` (sorting networks over packed keys, for many
float32 rows) and `ranked_beam_topk` (one Top-K per factor, for everything else; in NumPy for
float32 CPU rows, where a decoding step's few rows make PyTorch's per-operation dispatch the cost).
"""

from __future__ import annotations

import numpy as np
import torch


def factor_log_probs(logits: torch.Tensor, num_factors: int) -> torch.Tensor:
    """Per-factor log-softmax, rows last: logits [..., U*d_p] -> [U, d_p, R] with R = prod(...).

    float32 (float64 stays float64). Rows last keeps every later step a contiguous, vectorised
    operation over R, whereas the tiny d_p and K dims would otherwise be the innermost loops.
    """
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    factor_dim = logits.shape[-1] // num_factors
    return logits.reshape(-1, num_factors, factor_dim).to(dtype).permute(1, 2, 0).contiguous().log_softmax(1)


# The fast beam search orders candidates by one float64 key: the float32 score in the high bits and
# the flat index in the 29 low bits, which a float32 widened to float64 leaves zero.
_INDEX_BITS = 29
_INDEX_MASK = (1 << _INDEX_BITS) - 1
_SCORE_MIN, _SCORE_MAX = -torch.finfo(torch.float32).max, -torch.finfo(torch.float32).tiny
# below this many rows (e.g. decoding a few sequences) the few operations of `ranked_beam_topk` are
# faster than the many elementwise rounds of `merge_beam_topk` (measured on one core, U=5, d_p=4, K=8)
MERGE_MIN_ROWS = 512


def _pack(score: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """float32 scores and int64 indices (< 2**29) -> float64 keys ordered by score, then lower index
    (for negative keys, more index bits make a larger magnitude: a smaller key).

    Scores are kept in [-float32 max, -float32 tiny] (log-probabilities are <= 0): no key is an
    infinity, NaN or subnormal, so comparisons stay exact with flush-to-zero.
    """
    bits = score.clamp(_SCORE_MIN, _SCORE_MAX).to(torch.float64).view(torch.int64)
    return (bits | index).view(torch.float64)


def _unpack(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 keys -> (float32 scores, int64 indices), exactly as packed."""
    bits = key.view(torch.int64)
    return (bits & ~_INDEX_MASK).view(torch.float64).to(torch.float32), bits & _INDEX_MASK


def _unclamp(score: torch.Tensor) -> torch.Tensor:
    """Undo `_pack`'s clamp on final scores: -float32 max back to -inf (an impossible address, whose
    sums stay pinned there), -float32 tiny back to 0 (a saturated address)."""
    return torch.where(score <= _SCORE_MIN, float('-inf'), torch.where(score >= _SCORE_MAX, 0.0, score))


def _sort_bitonic(x: torch.Tensor) -> torch.Tensor:
    """Sort bitonic runs descending along dim -2. x: [..., n, R], n a power of two (a half-cleaner
    cascade: log2(n) rounds of compare-exchange at distance n/2, n/4, ..., 1)."""
    n = x.shape[-2]
    half = n // 2
    while half >= 1:
        pairs = x.unflatten(-2, (n // (2 * half), 2, half))
        first, second = pairs.select(-3, 0), pairs.select(-3, 1)
        x = torch.stack((torch.maximum(first, second), torch.minimum(first, second)), dim=-3).flatten(-4, -2)
        half //= 2
    return x


def _merge_pairs(lists: torch.Tensor, limit: int) -> torch.Tensor:
    """Merge sorted lists pairwise: [L, n, R] (descending along n) -> [L/2, min(2n, limit), R].

    A list followed by its partner reversed is bitonic; when 2n > limit (then n == limit), the
    elementwise max of the two holds the best `limit` of the union, also as a bitonic run.
    """
    first, second = lists[0::2], lists[1::2].flip(-2)
    if 2 * lists.shape[-2] <= limit:
        return _sort_bitonic(torch.cat((first, second), dim=-2))
    return _sort_bitonic(torch.maximum(first, second))


def merge_beam_topk(log_probs: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The beam search as sorting networks: the fast path for many float32 rows, d_p a power of two.

    log_probs: [U, d_p, R] float32. Returns (indices [K, R] int64, scores [K, R] float32), best first.
    Each factor extends the sorted beam by each digit (d_p sorted lists, since adding a digit's score
    keeps the beam's order) and merges the lists pairwise, keeping the best 2**ceil(log2 K); only
    elementwise max/min over R are used, which cost far less than a Top-K per row.
    """
    num_factors, factor_dim, rows = log_probs.shape
    limit = 1 << (topk - 1).bit_length()                    # K rounded up to a power of two
    digits = torch.arange(factor_dim, device=log_probs.device)
    beam = None
    for u in range(num_factors):
        offset = (digits * factor_dim ** u)[:, None, None]                           # [d_p, 1, 1]
        if beam is None:
            score, index = log_probs[u][:, None, :], offset.expand(factor_dim, 1, rows)
        else:
            beam_score, beam_index = _unpack(beam)                                    # [w, R]
            score, index = beam_score + log_probs[u][:, None, :], beam_index + offset   # [d_p, w, R]
        lists = _pack(score, index)
        while lists.shape[0] > 1:
            lists = _merge_pairs(lists, limit)
        beam = lists[0]
    score, index = _unpack(beam[:topk])
    return index, _unclamp(score)


def ranked_beam_topk(log_probs: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The beam search with one Top-K per factor over all K*d_p candidates: any dtype and d_p.

    log_probs: [U, d_p, R]. Returns (indices [K, R] int64, scores [K, R]), best first, ties to the
    lower flat index; the scores are sums over factors in factor order, in log_probs' dtype.
    float32 with M <= 2**29 selects on the packed keys of `merge_beam_topk` (distinct keys: `topk`
    has no ties to break, and both regimes give the same bits); other cases use a stable sort.
    """
    num_factors, factor_dim, rows = log_probs.shape
    if log_probs.dtype == torch.float32 and factor_dim ** num_factors <= _INDEX_MASK + 1:
        if log_probs.device.type == 'cpu' and not log_probs.requires_grad:
            return _packed_beam_topk_numpy(log_probs, topk)
        return _packed_beam_topk(log_probs, topk)
    return _sorted_beam_topk(log_probs, topk)


def _digit_offsets(num_factors: int, factor_dim: int, device: torch.device) -> torch.Tensor:
    """[U, d_p, 1, 1] int64: digit a of factor u adds a * d_p**u to the flat index."""
    place = torch.tensor([factor_dim ** u for u in range(num_factors)], device=device)
    return (torch.arange(factor_dim, device=device) * place[:, None])[:, :, None, None]


def _packed_beam_topk(log_probs: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`ranked_beam_topk` for float32, M <= 2**29: the beam's scores are clamped at every factor as
    `_pack` does in `merge_beam_topk`, so that both compute the same sums; each Top-K runs on keys."""
    num_factors, factor_dim, rows = log_probs.shape
    offsets = _digit_offsets(num_factors, factor_dim, log_probs.device)
    score, index = log_probs[0].clamp(_SCORE_MIN, _SCORE_MAX), offsets[0, :, 0].expand(factor_dim, rows)
    for u in range(1, num_factors + 1):
        if score.shape[0] > topk or u == num_factors:
            key = (score.to(torch.float64).view(torch.int64) | index).view(torch.float64)   # as `_pack`
            bits = key.topk(min(topk, score.shape[0]), dim=0).values.view(torch.int64)     # best first
            index = bits & _INDEX_MASK
            score = (bits ^ index).view(torch.float64).to(torch.float32)
        if u == num_factors:
            break
        score = (log_probs[u][:, None, :] + score).flatten(0, 1).clamp_(_SCORE_MIN, _SCORE_MAX)   # [d_p*b, R]
        index = (index + offsets[u]).flatten(0, 1)
    return index, _unclamp(score)


def _packed_beam_topk_numpy(log_probs: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`_packed_beam_topk` on CPU, in NumPy: the same float32 sums, clamps and packed keys, hence the
    same bits. A decoding step has a few rows, where each of the ~10 operations per factor costs
    PyTorch's dispatch (several microseconds) and NumPy's about one: the search's cost grows far
    less with U. Rows first ([R, width]), so that each Top-K sorts a contiguous row.

    Only the lower clamp is applied after the first factor: a beam score is <= -float32 tiny and a
    log-probability <= 0, so their rounded sum is <= -float32 tiny already (rounding is monotone).
    """
    num_factors, factor_dim, rows = log_probs.shape
    lp = np.ascontiguousarray(log_probs.numpy().transpose(0, 2, 1))                        # [U, R, d_p]
    offsets = np.arange(factor_dim, dtype=np.int64)[None, :, None] * (
        np.int64(factor_dim) ** np.arange(num_factors, dtype=np.int64))[:, None, None]        # [U, d_p, 1]
    score = np.clip(lp[0], _SCORE_MIN, _SCORE_MAX)                                         # [R, b]
    index = np.broadcast_to(offsets[0, :, 0], (rows, factor_dim))
    for u in range(1, num_factors + 1):
        if score.shape[1] > topk or u == num_factors:
            key = score.astype(np.float64).view(np.int64)
            key |= index                                                                    # as `_pack`
            key.view(np.float64).sort(axis=1)                  # distinct keys (NaN rows are replaced later)
            bits = key[:, ::-1][:, :min(topk, key.shape[1])]                                # best first
            index = bits & _INDEX_MASK
            score = (bits & ~_INDEX_MASK).view(np.float64).astype(np.float32)
        if u == num_factors:
            break
        width = factor_dim * score.shape[1]
        score = np.add(lp[u][:, :, None], score[:, None, :]).reshape(rows, width)           # [R, d_p*b]
        np.maximum(score, _SCORE_MIN, out=score)
        index = np.add(index[:, None, :], offsets[u]).reshape(rows, width)
    return torch.from_numpy(index.T.copy()), _unclamp(torch.from_numpy(score.T.copy()))


def _sorted_beam_topk(log_probs: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`ranked_beam_topk` for any dtype and M: between factors the beam is kept in ascending index
    order, so the candidates (digit-major: digit * d_p**u + prefix, prefix < d_p**u) are in ascending
    index order too, and a stable sort by descending score orders them by (score, lower index)."""
    num_factors, factor_dim, rows = log_probs.shape
    offsets = _digit_offsets(num_factors, factor_dim, log_probs.device)
    score = log_probs.new_zeros(1, rows)                    # [b, R], b = beam width so far
    index = torch.zeros(1, rows, dtype=torch.long, device=log_probs.device)
    for u in range(num_factors):
        last = u == num_factors - 1
        score = (log_probs[u][:, None, :] + score).flatten(0, 1)                        # [d_p*b, R]
        index = (index + offsets[u]).flatten(0, 1)
        if score.shape[0] <= topk and not last:
            continue
        width = min(topk, score.shape[0])
        score, best = score.sort(dim=0, descending=True, stable=True)
        score, index = score[:width], index.gather(0, best[:width])
        if not last:                                        # the beam back in ascending index order
            index, order = index.sort(dim=0)
            score = score.gather(0, order)
    return index, score


def non_finite_rows(log_probs: torch.Tensor) -> torch.Tensor:
    """[R] bool: rows with a factor whose log-softmax is not a number (a NaN or +inf logit, or a
    factor of only -inf logits). log_probs: [U, d_p, R]."""
    return log_probs.sum((0, 1)).isnan()                   # log-probs are <= 0: only a NaN sums to NaN


@torch.no_grad()
def beam_topk(log_probs: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The K most likely addresses: (flat indices [K, R], log-probabilities [K, R]), best first.

    log_probs: [U, d_p, R] from `factor_log_probs`. Many float32 rows with d_p a power of two take
    `merge_beam_topk`; the rest (decoding, float64, other d_p, M > 2**29) `ranked_beam_topk`.
    Both are exact and order ties by the lower flat index. A non-finite row (`non_finite_rows`)
    gets NaN scores and the indices 0..K-1 (elementwise: no host sync).
    """
    num_factors, factor_dim, rows = log_probs.shape
    if (rows >= MERGE_MIN_ROWS and log_probs.dtype == torch.float32 and factor_dim & (factor_dim - 1) == 0
            and factor_dim ** num_factors <= _INDEX_MASK + 1):
        index, score = merge_beam_topk(log_probs, topk)
    else:
        index, score = ranked_beam_topk(log_probs, topk)
    bad = non_finite_rows(log_probs)                                                       # [R]
    index = torch.where(bad, torch.arange(topk, device=index.device)[:, None], index)
    score = torch.where(bad, float('nan'), score)
    return index, score


class TorchRAMAddressFunction(torch.autograd.Function):
    """Top-K addresses and their log-probabilities, with a hand-written backward to the logits.

    forward: logits [R, U*d_p] -> indices [R, K] (constant), log_probs [R, K] (float32, or float64).
    backward: each factor is a log-softmax read at the chosen digits, so
    d logits[u] = g_u - softmax[u] * sum(g_u), with g_u the log-prob gradients summed per digit.
    """

    @staticmethod
    def forward(ctx, logits, num_factors, topk):
        log_probs = factor_log_probs(logits, num_factors)                  # [U, d_p, R]
        indices, scores = beam_topk(log_probs, topk)                       # [K, R]
        ctx.save_for_backward(log_probs, indices)
        ctx.logits_dtype = logits.dtype
        ctx.mark_non_differentiable(indices)
        return indices.t().contiguous(), scores.t().contiguous()

    @staticmethod
    def backward(ctx, grad_indices, grad_log_probs):
        log_probs, indices = ctx.saved_tensors                             # [U, d_p, R], [K, R]
        return address_bwd(log_probs, indices, grad_log_probs).to(ctx.logits_dtype), None, None


def address_bwd(log_probs: torch.Tensor, indices: torch.Tensor, grad_log_probs: torch.Tensor) -> torch.Tensor:
    """Gradient [R, U*d_p] of sum(grad_log_probs * log_probs of the chosen addresses), indices fixed.

    log_probs: [U, d_p, R] from `factor_log_probs`; indices: [K, R]; grad_log_probs: [R, K].
    """
    num_factors, factor_dim, rows = log_probs.shape
    scales = factor_dim ** torch.arange(num_factors, device=indices.device)
    digits = torch.div(indices, scales[:, None, None], rounding_mode='floor') % factor_dim       # [U, K, R]
    upstream = grad_log_probs.t().to(log_probs.dtype)                                             # [K, R]
    grad = log_probs.new_zeros(num_factors, factor_dim, rows).scatter_add_(
        1, digits, upstream.expand(num_factors, -1, -1))                                         # [U, d_p, R]
    grad = grad - log_probs.exp() * grad.sum(1, keepdim=True)          # through each log-softmax
    return grad.permute(2, 0, 1).reshape(rows, num_factors * factor_dim)


def address_topk(logits: torch.Tensor, num_factors: int, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [R, U*d_p] -> (index [R, K] int64, log_prob [R, K]), differentiable in log_prob."""
    return TorchRAMAddressFunction.apply(logits, num_factors, topk)
