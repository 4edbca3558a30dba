"""Parallel scan of chains of affine maps, h_i = a_i * h_{i-1} + b_i, by pointer jumping.

Used for the per-slot write chains of RAM-Net: after sorting write events by slot, each slot's
history is a contiguous run whose recurrence is S_e = lambda_e * S_{e-1} + w_e * v_e. A run starts
where a_i == 0, so many independent chains are scanned at once with no segment ids, and no decay
is ever divided out (products of a only shrink towards 0).

Each step composes every element with the one `offset` before it (Hillis-Steele), but only the
elements whose composite does not yet reach back to their chain start take part: an element at
depth d of its chain is touched ceil(log2(d + 1)) times, so short chains (the common case with
diffuse addresses) cost almost nothing, and the longest chain bounds the number of steps.
"""

from __future__ import annotations

import torch


def affine_scan_(a: torch.Tensor, h: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """In place on h: h_i = a_i * h_{i-1} + h_i with h_{-1} = 0 (a_i == 0 starts a chain).

    a: [E] coefficients (not modified); h: [E, D], holds b on entry and the scan on exit.
    With `reverse=True` the chains run backwards: h_i = a_i * h_{i+1} + h_i (a_i == 0 ends a chain),
    which is the adjoint of the forward scan with the coefficients shifted by one.
    """
    n = a.shape[0]
    coefficient = a.clone()
    active = coefficient.nonzero().squeeze(1)          # elements whose composite is still open
    offset = 1
    while active.numel() > 0:
        source = active + offset if reverse else active - offset
        inside = (source < n) if reverse else (source >= 0)
        if not bool(inside.all()):                      # nothing beyond the ends: those are complete
            coefficient[active[~inside]] = 0
            active, source = active[inside], source[inside]
        scale = coefficient[active]
        # compose with the element `offset` away: (a_i, h_i) o (a_j, h_j) = (a_i a_j, a_i h_j + h_i);
        # both right-hand sides are gathered before anything is written, as Hillis-Steele requires
        h.index_put_((active,), torch.addcmul(h.index_select(0, active), scale[:, None], h.index_select(0, source)))
        scale = scale * coefficient[source]
        coefficient[active] = scale
        active = active[scale != 0]
        offset *= 2
    return h


def affine_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h_i = a_i * h_{i-1} + b_i with h_{-1} = 0, as a new tensor. a: [E]; b: [E, D] -> [E, D]."""
    return affine_scan_(a, b.clone())


def reverse_affine_scan(c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """g_i = d_i + c_i * g_{i+1} with g_E = 0 (c_i == 0 ends a chain), as a new tensor."""
    return affine_scan_(c, d.clone(), reverse=True)
