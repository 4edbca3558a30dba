"""PyTorch `chunk_ram` (training and prefill): write events scanned as one chain per slot.

Every write event (token t, head h, j-th of K) touches one slot, and a slot's history only depends
on the writes to that slot ("segment batching" in the paper). So the write events are sorted by
(sequence, head, slot, time); each slot's writes become one contiguous chain
S_e = lambda_e * S_{e-1} + w_e * [v_e, 1] (the mass z rides along as value column V). The chains
are stored depth-major (scan.py), so that one fused multiply-add per depth scans them all while
each element is read and written once. A read (t, h, k) finds its slot's latest write at or before
t by binary search and reads that chain element, or the initial state when the slot was not
written yet. Work and activations are O(B*T*H*K*V) and independent of M; the M x V table is touched
only to read an initial state or build a final one.

The backward pass runs the adjoint chain scan in reverse; no decay is ever divided out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ramnet_fla.ops.ram.backends.torch.scan import (
    ChainLayout,
    chain_layout,
    chain_previous_dot,
    chain_scan_,
    chain_scan_reverse_,
)
from ramnet_fla.ops.ram.common import READ_EPS, WEIGHT_CLAMP, pdma_decay


def _gather_rows(memory: torch.Tensor, mass: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Rows of the slot table with the mass as an extra column: [n, V+1]. memory: [R, V]; mass: [R]."""
    return torch.cat([memory.index_select(0, rows), mass.index_select(0, rows)[:, None]], dim=1)


def _copy_rows_(memory: torch.Tensor, mass: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
    """memory[rows], mass[rows] = values[:, :V], values[:, V] in place. values: [n, V+1]."""
    memory.index_copy_(0, rows, values[:, :-1])
    mass.index_copy_(0, rows, values[:, -1])


@dataclass(frozen=True)
class WriteChains:
    """The write events of a call sorted into one chain per written table row, laid out depth-major.

    sorted_key: [E] the sort keys ((head * M + slot) * Ntok + token), ascending, chain-major order;
    sorted_row: [E] the table row ((sequence * H + head) * M + slot) of each, chain-major order;
    layout: where each chain-major event goes depth-major (scan.py);
    event: [E] flat write event id (t * H + h) * K + j of each depth-major element;
    in_token_order: [E] depth-major position of each flat event id (the inverse of `event`);
    row: [E] table row of each depth-major element.
    The chain starts are the first `layout.widths[0]` depth-major elements. The backward rebuilds it
    from the saved tensors with the fields only the forward reads (sorted_*, event) left None.
    """

    sorted_key: torch.Tensor | None
    sorted_row: torch.Tensor | None
    layout: ChainLayout
    event: torch.Tensor | None
    in_token_order: torch.Tensor
    row: torch.Tensor

    @property
    def num_chains(self) -> int:
        return self.layout.widths[0]


def sort_write_chains(write_slot: torch.Tensor, sequence_ids: torch.Tensor, num_slots: int) -> WriteChains:
    """Sort the write events by (head, slot, time) and lay the chains out depth-major.

    write_slot: [Ntok, H, K] int64 (after CAPE); sequence_ids: [Ntok]. Data-dependent: the number of
    chains and their depths (`layout.widths`) are Python ints.
    """
    num_tokens, H, K = write_slot.shape
    M, device = num_slots, write_slot.device
    if H * M * max(num_tokens, 1) >= 2 ** 62:
        raise ValueError(f"too many tokens x heads x slots for 64-bit event keys: {num_tokens} x {H} x {M}")
    token = torch.arange(num_tokens, device=device)[:, None, None]
    head = torch.arange(H, device=device)[None, :, None]
    sorted_key, order = ((head * M + write_slot) * num_tokens + token).flatten().sort()     # [E]
    slot_key = torch.div(sorted_key, num_tokens, rounding_mode='floor')                    # head * M + slot
    token_of = torch.div(order, H * K, rounding_mode='floor')
    sorted_row = sequence_ids.index_select(0, token_of) * (H * M) + slot_key               # row of [N*H*M]
    chain_start = torch.ones_like(order, dtype=torch.bool)
    chain_start[1:] = sorted_row[1:] != sorted_row[:-1]
    layout = chain_layout(chain_start)
    event = torch.empty_like(order).index_copy_(0, layout.position, order)
    in_token_order = torch.empty_like(order).index_copy_(0, order, layout.position)
    row = torch.empty_like(sorted_row).index_copy_(0, layout.position, sorted_row)
    return WriteChains(sorted_key, sorted_row, layout, event, in_token_order, row)


def scan_write_chains(write_weight, v, gamma, table0, chains: WriteChains) -> tuple[torch.Tensor, torch.Tensor]:
    """The slot state [S, z] after every write event, depth-major: (retain [E], chained [E, V+1]).

    write_weight: [Ntok, H, K]; v: [Ntok, H, V]; gamma: [Ntok, H]; table0: (memory0 [N*H*M, V],
    mass0 [N*H*M]) or None (a zero initial state).
    """
    num_tokens, H, V = v.shape
    K = write_weight.shape[-1]
    token_head = torch.div(chains.event, K, rounding_mode='floor')                         # t * H + h
    weight = write_weight.flatten().index_select(0, chains.event)
    retain = pdma_decay(weight, gamma.flatten().index_select(0, token_head))
    # increments w * [v, 1]: one gather of the token rows [v, 1], scaled in place
    chained = torch.cat([v.reshape(-1, V), v.new_ones(num_tokens * H, 1)], dim=1).index_select(0, token_head)
    chained.mul_(weight[:, None])                                                          # [E, V+1]
    if table0 is not None:
        C = chains.num_chains
        chained[:C].addcmul_(_gather_rows(*table0, chains.row[:C]), retain[:C, None])
    chain_scan_(retain, chained, chains.layout)
    return retain, chained


def find_reads(read_slot, sequence_ids, chains: WriteChains, num_slots: int):
    """For every read event, its slot's latest write at or before its token.

    read_slot: [Ntok, H, K]. Returns (hit [E] depth-major chain element, found [E] bool, read_row [E]
    table row); where `found` is False the read sees the initial state (hit is then meaningless).
    """
    num_tokens, H, K = read_slot.shape
    M, device = num_slots, read_slot.device
    token = torch.arange(num_tokens, device=device)[:, None, None]
    head = torch.arange(H, device=device)[None, :, None]
    read_key = ((head * M + read_slot) * num_tokens + token).flatten()                    # [E]
    read_row = sequence_ids[:, None, None].expand(num_tokens, H, K).flatten() * (H * M) + torch.div(
        read_key, num_tokens, rounding_mode='floor')
    read_sorted, read_order = read_key.sort()                                              # sorted queries search faster
    hit = torch.empty_like(read_key).index_copy_(
        0, read_order, torch.searchsorted(chains.sorted_key, read_sorted, right=True)) - 1
    hit_safe = hit.clamp(min=0)
    found = (hit >= 0) & (chains.sorted_row.index_select(0, hit_safe) == read_row)
    return chains.layout.position.index_select(0, hit_safe), found, read_row


def read_slots(read_weight, chained, hit, found, read_row, table0) -> tuple[torch.Tensor, torch.Tensor]:
    """o = sum_k r_k S_k / (z_k + eps) after this token's writes: (o [Ntok, H, V], read_value [E, V+1])."""
    num_tokens, H, K = read_weight.shape
    V = chained.shape[1] - 1
    read_value = chained.index_select(0, hit)
    missed = (~found).nonzero().squeeze(1)
    read_value.index_copy_(0, missed, _gather_rows(*table0, read_row[missed]) if table0 is not None
                           else read_value.new_zeros(missed.shape[0], V + 1))
    scale = read_weight.flatten() / (read_value[:, V] + READ_EPS)                          # r / (z + eps)
    o = torch.bmm(scale.view(-1, 1, K), read_value.view(-1, K, V + 1)[..., :V]).view(num_tokens, H, V)
    return o, read_value


def final_table(memory0, mass0, chained, chains: WriteChains, shape: tuple[int, int, int, int]):
    """The state after the call: (memory [N, H, M, V], mass [N, H, M]), two new contiguous tensors (so
    that decoding can update them in place). Untouched rows keep their initial value."""
    N, H, M, V = shape
    memory = memory0.clone() if memory0 is not None else chained.new_zeros(N, H, M, V)
    mass = mass0.clone() if mass0 is not None else chained.new_zeros(N, H, M)
    ends = chains.layout.ends
    _copy_rows_(memory.view(-1, V), mass.view(-1), chains.row[ends], chained.index_select(0, ends))
    return memory, mass


def grad_through_reads(grad_o, read_weight, read_value) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward of `read_slots`: (grad_read_weight [Ntok, H, K], grad_read_value [E, V+1])."""
    num_tokens, H, K = read_weight.shape
    V = read_value.shape[1] - 1
    r = read_weight.flatten()
    denominator = read_value[:, V] + READ_EPS
    dot = torch.bmm(grad_o.view(-1, 1, V), read_value.view(-1, K, V + 1)[..., :V].transpose(1, 2)).flatten()
    grad_read_weight = (dot / denominator).view(num_tokens, H, K)
    grad_read_value = read_value.new_empty(num_tokens, H, K, V + 1)
    torch.mul(grad_o[:, :, None, :], (r / denominator).view(num_tokens, H, K, 1), out=grad_read_value[..., :V])
    grad_read_value[..., V] = (-r * dot / denominator ** 2).view(num_tokens, H, K)
    return grad_read_weight, grad_read_value.view(-1, V + 1)


def grad_chain_states(grad_read_value, grad_memory, grad_mass, retain, chained, hit, found, chains: WriteChains):
    """Gradient [E, V+1] of every chain element: its reads, the final state at chain ends, then the
    reverse scan. grad_memory [N, H, M, V] / grad_mass [N, H, M] (or None): of the final state."""
    num_events, width = chained.shape
    # reads that found no write in this call go to a spare last row (the initial state's business)
    grad_chained = chained.new_zeros(num_events + 1, width)
    grad_chained.index_add_(0, hit.masked_fill(~found, num_events), grad_read_value)
    grad_chained = grad_chained[:-1]
    if grad_memory is not None or grad_mass is not None:
        N, H, M = (grad_memory if grad_memory is not None else grad_mass).shape[:3]
        grad_memory = grad_memory if grad_memory is not None else chained.new_zeros(N, H, M, width - 1)
        grad_mass = grad_mass if grad_mass is not None else chained.new_zeros(N, H, M)
        ends = chains.layout.ends
        grad_chained.index_add_(0, ends, _gather_rows(grad_memory.reshape(-1, width - 1).to(chained.dtype),
                                                      grad_mass.reshape(-1).to(chained.dtype), chains.row[ends]))
    return chain_scan_reverse_(retain, grad_chained, chains.layout)


def grad_writes(grad_chained, grad_event_buffer, write_weight, v, gamma, retain, chained, table0, chains: WriteChains):
    """Backward of `scan_write_chains` to the write weights, values and decays:
    (grad_write_weight [Ntok, H, K], grad_v [Ntok, H, V], grad_gamma [Ntok, H]).

    grad_event_buffer: a free [E, V+1] buffer (a fresh one would cost as much in page faults as the
    gather into it).
    """
    num_tokens, H, V = v.shape
    K = write_weight.shape[-1]
    # d lambda_e = <grad S_e, S before write e>: the previous chain element, or the initial state
    grad_retain = chain_previous_dot(grad_chained, chained, chains.layout)
    if table0 is not None:
        C = chains.num_chains
        grad_retain[:C] = torch.linalg.vecdot(grad_chained[:C], _gather_rows(*table0, chains.row[:C]))
    # back to token order [Ntok*H, K]: one gather of the chain gradients, then small batched products
    grad_event = torch.index_select(grad_chained, 0, chains.in_token_order, out=grad_event_buffer).view(-1, K, V + 1)
    grad_retain = grad_retain.index_select(0, chains.in_token_order).view(-1, K)
    retain = retain.index_select(0, chains.in_token_order).view(-1, K)
    weight, gamma = write_weight.reshape(-1, K), gamma.reshape(-1, 1)
    grad_v = torch.bmm(weight[:, None, :], grad_event[..., :V])                            # sum_k w_k grad S_k
    grad_weight = torch.bmm(v.reshape(-1, 1, V), grad_event[..., :V].transpose(1, 2)).squeeze(1) + grad_event[..., V]
    clamped = weight.clamp(max=WEIGHT_CLAMP)
    grad_weight -= torch.where(weight < WEIGHT_CLAMP, grad_retain * retain * gamma / (1 - clamped), 0.0)
    grad_gamma = (grad_retain * retain * torch.log1p(-clamped)).sum(1)
    return grad_weight.view(num_tokens, H, K), grad_v.view(num_tokens, H, V), grad_gamma.view(num_tokens, H)


def grad_initial_state(grad_memory, grad_mass, grad_chained, missed_rows, missed_grad, retain, chains: WriteChains,
                       shape: tuple[int, int, int, int]):
    """Gradient of the initial state: (grad_memory0 [N, H, M, V], grad_mass0 [N, H, M]).

    Untouched slots pass the final state's gradient straight through; written slots get it from
    their chain's first element instead; reads that found no write (rows `missed_rows`, gradients
    `missed_grad` [n, V+1]) read the initial state directly.
    """
    N, H, M, V = shape
    dtype = grad_chained.dtype
    grad_memory0 = grad_memory.to(dtype).clone() if grad_memory is not None else grad_chained.new_zeros(N, H, M, V)
    grad_mass0 = grad_mass.to(dtype).clone() if grad_mass is not None else grad_chained.new_zeros(N, H, M)
    memory_rows, mass_rows = grad_memory0.view(-1, V), grad_mass0.view(-1)
    C = chains.num_chains
    _copy_rows_(memory_rows, mass_rows, chains.row[:C], retain[:C, None] * grad_chained[:C])
    memory_rows.index_add_(0, missed_rows, missed_grad[:, :V])
    mass_rows.index_add_(0, missed_rows, missed_grad[:, V])
    return grad_memory0, grad_mass0


class TorchChunkRAMFunction(torch.autograd.Function):
    """Sparse read/write with PDMA over flattened tokens, given the chosen slots.

    Differentiable inputs (compute dtype, tokens flattened to Ntok = B*T):
        read_weight, write_weight: [Ntok, H, K]; v: [Ntok, H, V]; gamma: [Ntok, H];
        memory0: [N, H, M, V] or None; mass0: [N, H, M] or None.
    Constant inputs: read_slot, write_slot [Ntok, H, K] int64 (after CAPE); sequence_ids [Ntok].
    Returns o [Ntok, H, V] and, if asked, the final memory [N, H, M, V] and mass [N, H, M].
    """

    @staticmethod
    def forward(ctx, read_weight, write_weight, v, gamma, memory0, mass0,
                read_slot, write_slot, sequence_ids, num_sequences, num_slots, output_final_state):
        shape = (num_sequences, v.shape[1], num_slots, v.shape[2])                          # N, H, M, V
        table0 = None if memory0 is None else (memory0.reshape(-1, shape[3]), mass0.reshape(-1))
        chains = sort_write_chains(write_slot, sequence_ids, num_slots)
        retain, chained = scan_write_chains(write_weight, v, gamma, table0, chains)
        hit, found, read_row = find_reads(read_slot, sequence_ids, chains, num_slots)
        o, read_value = read_slots(read_weight, chained, hit, found, read_row, table0)
        memory = mass = None
        if output_final_state:
            memory, mass = final_table(memory0, mass0, chained, chains, shape)

        ctx.save_for_backward(read_weight, write_weight, v, gamma, memory0, mass0, chains.in_token_order, chains.row,
                              retain, chained, hit, found, read_row, read_value)
        ctx.layout, ctx.shape = chains.layout, shape
        return o, memory, mass

    @staticmethod
    def backward(ctx, grad_o, grad_memory, grad_mass):
        (read_weight, write_weight, v, gamma, memory0, mass0, in_token_order, row,
         retain, chained, hit, found, read_row, read_value) = ctx.saved_tensors
        chains = WriteChains(None, None, ctx.layout, None, in_token_order, row)
        table0 = None if memory0 is None else (memory0.reshape(-1, ctx.shape[3]), mass0.reshape(-1))

        grad_o = grad_o.to(chained.dtype).contiguous()             # e.g. the expanded gradient of o.sum()
        grad_read_weight, grad_read_value = grad_through_reads(grad_o, read_weight, read_value)
        grad_chained = grad_chain_states(grad_read_value, grad_memory, grad_mass, retain, chained, hit, found, chains)
        if table0 is not None:                             # read before grad_writes reuses the buffer
            missed = (~found).nonzero().squeeze(1)
            missed_grad = grad_read_value.index_select(0, missed)
        grad_write_weight, grad_v, grad_gamma = grad_writes(
            grad_chained, grad_read_value, write_weight, v, gamma, retain, chained, table0, chains)
        grad_memory0 = grad_mass0 = None
        if table0 is not None:
            grad_memory0, grad_mass0 = grad_initial_state(grad_memory, grad_mass, grad_chained, read_row[missed],
                                                          missed_grad, retain, chains, ctx.shape)
        return (grad_read_weight, grad_write_weight, grad_v, grad_gamma, grad_memory0, grad_mass0,
                None, None, None, None, None, None)


def chunk_final_rows(read_weight, write_weight, v, gamma, table0, read_slot, write_slot, num_slots: int,
                     read_tokens: int = 4096):
    """The forward of `chunk_read_write` for one sequence without autograd, for the slot stores:
    the outputs and only the written rows of the final table, never the table itself.

    read_weight, write_weight: [Ntok, H, K] in the compute dtype; v: [Ntok, H, V]; gamma: [Ntok, H];
    table0: (memory0 [H*M, V], mass0 [H*M]) or None. Returns (o [Ntok, H, V] in v's dtype, rows [C]
    the written table rows (head * M + slot) ascending, final [C, V+1] their rows [S | z]).
    Peak memory: the chain states [E, V+1] plus the final rows; the reads are gathered
    `read_tokens` tokens at a time (the same arithmetic per token as `read_slots` on all of them).
    """
    dtype = read_weight.dtype
    v, gamma = v.to(dtype), gamma.to(dtype)
    sequence_ids = torch.zeros(v.shape[0], dtype=torch.long, device=v.device)
    chains = sort_write_chains(write_slot, sequence_ids, num_slots)
    chained = scan_write_chains(write_weight, v, gamma, table0, chains)[1]
    hit, found, read_row = find_reads(read_slot, sequence_ids, chains, num_slots)
    num_tokens, H, K = read_weight.shape
    o = chained.new_empty(num_tokens, H, v.shape[2])
    for start in range(0, num_tokens, read_tokens):
        stop = min(start + read_tokens, num_tokens)
        events = slice(start * H * K, stop * H * K)
        o[start:stop] = read_slots(read_weight[start:stop], chained, hit[events], found[events], read_row[events],
                                   table0)[0]
    ends = chains.layout.ends
    rows = chains.row[ends]
    del hit, found, read_row, chains                     # only the chain states stay for the gather
    return o.to(v.dtype), rows, chained.index_select(0, ends)


def chunk_read_write(read_weight, write_weight, v, gamma, memory0, mass0, read_slot, write_slot, sequence_ids,
                     num_sequences: int, num_slots: int, output_final_state: bool):
    """The PyTorch read/write of `chunk_ram` (see `TorchChunkRAMFunction`); v and gamma in any float
    dtype, cast to the weights' compute dtype. Returns o [Ntok, H, V] in v's dtype, memory, mass."""
    dtype = read_weight.dtype
    o, memory, mass = TorchChunkRAMFunction.apply(
        read_weight, write_weight, v.to(dtype), gamma.to(dtype), memory0, mass0,
        read_slot, write_slot, sequence_ids, num_sequences, num_slots, output_final_state)
    return o.to(v.dtype), memory, mass
