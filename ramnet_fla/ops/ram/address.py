"""`ram_address`: the K most likely slots of the product softmax over M = d_p ** U slots.

An address is one digit a_u in [0, d_p) per factor u; its flat index is sum_u a_u * d_p ** u
(factor 0 least significant) and its log-probability sum_u log_softmax(logits[u*d_p:(u+1)*d_p])[a_u].
The backends find the Top-K exactly by a beam search over factors (see backends/torch/address.py).
"""

from __future__ import annotations

import torch

from ramnet_fla.ops.ram.backends import backend_for
from ramnet_fla.ops.ram.checks import check_address_args, check_logits


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
    check_logits(logits)
    check_address_args(logits.shape[-1], num_factors, topk)
    lead = logits.shape[:-1]
    indices, log_probs = backend_for(logits).address_topk(logits.reshape(-1, logits.shape[-1]), num_factors, topk)
    return indices.view(*lead, topk), log_probs.view(*lead, topk)
