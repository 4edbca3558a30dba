"""Parallel scan of a chain of affine maps, h_i = a_i * h_{i-1} + b_i, by pointer jumping.

Used for the per-slot write chains of RAM-Net: after sorting write events by slot, each slot's
history is a contiguous run whose recurrence is S_e = lambda_e * S_{e-1} + w_e * v_e. A run starts
where a_i == 0, so many independent chains are scanned at once with no segment ids, and no decay
is ever divided out (products of a only shrink towards 0).
"""

from __future__ import annotations

import torch


def affine_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Inclusive scan h_i = a_i * h_{i-1} + b_i with h_{-1} = 0.

    a: [E] coefficients (a_i == 0 starts a new chain); b: [E, D]. Returns h: [E, D].
    Takes ceil(log2(longest chain)) steps of O(E*D) work each (Hillis-Steele); stops as soon as
    every partial product of a is zero, i.e. every partial sum already spans its whole chain.
    """
    a = a.clone()
    h = b.clone()
    n = a.shape[0]
    offset = 1
    while offset < n and bool(a[offset:].any()):
        # compose each element with the one `offset` earlier: (a_i, h_i) o (a_j, h_j) = (a_i a_j, a_i h_j + h_i)
        h_new = h.clone()
        h_new[offset:].addcmul_(a[offset:, None], h[:-offset])
        a_new = a.clone()
        a_new[offset:].mul_(a[:-offset])
        a_new[:offset] = 0
        a, h = a_new, h_new
        offset *= 2
    return h


def reverse_affine_scan(c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Inclusive scan from the end, g_i = d_i + c_i * g_{i+1} with g_E = 0 (c_i == 0 ends a chain).

    c: [E]; d: [E, D]. Returns g: [E, D]. This is the adjoint of `affine_scan`.
    """
    return affine_scan(c.flip(0), d.flip(0)).flip(0)
