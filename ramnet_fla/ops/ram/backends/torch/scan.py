"""Scans of many independent chains of affine maps, S_e = a_e * S_{e-1} + b_e, stored depth-major.

RAM-Net's write events, sorted by slot, form one chain per written slot (see chunk.py). Most chains
are short, so instead of a log-depth parallel scan (which touches the long-lived elements again and
again) the events are laid out depth by depth: first the first element of every chain, then the
second element of every chain that has one, and so on, with the chains ordered longest first in
every block. The chains that reach depth d are then a prefix of those that reach depth d - 1, so
step d of the scan is one fused multiply-add between two contiguous blocks of rows: every element
is read and written once, with no gathers, in L steps for a longest chain of L elements.

The L steps are Python-level. Pointer jumping would take log2(L) rounds, but every round gathers
and scatters all the rows of the long chains; with peaked addresses (L in the thousands) a switch
to it beyond some depth made the forward+backward several times slower than scanning every depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ChainLayout:
    """Where each element of chains given in chain-major order goes in the depth-major order.

    position: [E] int64, depth-major position of each chain-major element.
    widths: n_d, the number of chains with more than d elements, for d = 0 .. L-1 (n_0 = #chains).
    offsets: start of depth d's block, the prefix sums of `widths`.
    ends: [#chains] int64, depth-major position of every chain's last element (chains in chain-major
        order).
    """

    position: torch.Tensor
    widths: list[int]
    offsets: list[int]
    ends: torch.Tensor

    @property
    def depths(self) -> int:
        """L, the number of elements of the longest chain."""
        return len(self.widths)

    def blocks(self, depth: int) -> tuple[slice, slice]:
        """Rows of depth `depth` (>= 1) and of their predecessors at depth - 1, as slices."""
        width = self.widths[depth]
        start, previous = self.offsets[depth], self.offsets[depth - 1]
        return slice(start, start + width), slice(previous, previous + width)


def chain_layout(chain_start: torch.Tensor) -> ChainLayout:
    """The depth-major layout of chains given as runs. chain_start: [E] bool, True at each run's first
    element (chain_start[0] must be True)."""
    num_elements = chain_start.shape[0]
    device = chain_start.device
    index = torch.arange(num_elements, device=device)
    starts = chain_start.nonzero().squeeze(1)                                     # [C]
    lengths = torch.diff(starts, append=starts.new_tensor([num_elements]))         # [C]
    _, by_length = lengths.sort(descending=True, stable=True)
    rank = torch.empty_like(by_length).index_copy_(0, by_length, torch.arange(starts.shape[0], device=device))
    chain = torch.cumsum(chain_start, 0) - 1                                       # chain of each element
    depth = index - starts.index_select(0, chain)
    count = torch.bincount(lengths)                                                # chains of each length
    widths = (starts.shape[0] - torch.cumsum(count, 0)[:-1]).tolist()              # longer than d: n_d
    offsets = [0]
    for width in widths[:-1]:
        offsets.append(offsets[-1] + width)
    offset = torch.tensor(offsets, device=device)
    position = offset.index_select(0, depth) + rank.index_select(0, chain)
    ends = offset.index_select(0, lengths - 1) + rank
    return ChainLayout(position, widths, offsets, ends)


def chain_scan_(coefficient: torch.Tensor, h: torch.Tensor, layout: ChainLayout) -> torch.Tensor:
    """In place on h, depth-major: S_e = a_e * S_prev(e) + b_e (chain starts keep b_e).

    coefficient: [E] a_e (unused at chain starts); h: [E, D], b on entry, S on exit.
    """
    for depth in range(1, len(layout.widths)):
        rows, previous = layout.blocks(depth)
        h[rows].addcmul_(h[previous], coefficient[rows, None])
    return h


def chain_scan_reverse_(coefficient: torch.Tensor, g: torch.Tensor, layout: ChainLayout) -> torch.Tensor:
    """In place on g, depth-major: the adjoint of `chain_scan_`, G_e = g_e + a_next(e) * G_next(e).

    coefficient: [E] the forward scan's a_e; g: [E, D], direct gradients on entry, G on exit.
    """
    for depth in range(len(layout.widths) - 1, 0, -1):
        rows, previous = layout.blocks(depth)
        g[previous].addcmul_(g[rows], coefficient[rows, None])
    return g


def chain_previous_dot(g: torch.Tensor, h: torch.Tensor, layout: ChainLayout) -> torch.Tensor:
    """<g_e, h_prev(e)> for every element [E], 0 at chain starts. g, h: [E, D] depth-major."""
    out = g.new_zeros(g.shape[0])
    for depth in range(1, len(layout.widths)):
        rows, previous = layout.blocks(depth)
        torch.linalg.vecdot(g[rows], h[previous], out=out[rows])
    return out
