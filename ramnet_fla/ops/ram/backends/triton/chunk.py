"""Triton `chunk_ram` (training and prefill): slot chains walked by Triton programs.

The algorithm mirrors the PyTorch backend (`backends/torch/chunk.py`, "segment batching" in the
paper). A slot's history only depends on the events at that slot, so every write event (token t,
head h, j-th of K) and every read event becomes one entry keyed by (table row, t, read-after-write),
where the table row is (sequence, head, slot). One `torch.sort` of these unique int64 keys puts each
row's events into one contiguous segment, in time order, writes before reads of the same token.

- `chunk_ram_fwd_chain_kernel`: one program per (group of consecutive segments, V-block) walks
  each segment from the initial state of its row: a write applies S <- lambda S + w v,
  z <- lambda z + w; a read records the slot's (S, z). It saves the state before each write and at
  each read, O(E*V) activations with E = B*T*H*K events, and writes the row of the final state.
  A group spans about EVENTS_PER_PROGRAM events, so a large M with many one-event segments does
  not cost one program per touched slot, while a long segment gets a program of its own.
- `chunk_ram_fwd_o_kernel`: o = sum_k r_k S_k / (z_k + eps), one program per (token, head, V-block).
- `chunk_ram_bwd_chain_kernel`: the same segments walked backwards with the adjoint (dS, dz) of the
  slot, producing the gradients of every read weight, write weight, gamma and value, and the
  gradient of the initial row. Scalar gradients are reduced over V, so each V-block program writes
  its partial sum to its own buffer and the host adds the NV partials: no atomics, deterministic.

Nothing of size T x M exists: the M x V table is read (initial state) and written (final state)
only at the rows of touched slots; a final state, when asked for, is one new table per sequence
and head. Decays are never divided out. Cost: the sort plus O(E*V) work; a segment is walked
sequentially, so a slot that receives a large share of all events (e.g. a collapsed addressing at
initialisation) serialises its segment.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from fla.utils import autocast_custom_bwd, autocast_custom_fwd, autotune_cache_kwargs, input_guard

from ramnet_fla.ops.ram.backends.triton.utils import CLAMP, EPS, check_block, log1p, pdma_retain, tl_dtype


@triton.heuristics({
    'USE_INITIAL_STATE': lambda args: args['memory0'] is not None,
    'STORE_FINAL_STATE': lambda args: args['memory'] is not None,
})
@triton.autotune(
    configs=[triton.Config({}, num_warps=num_warps) for num_warps in [1, 2, 4]],
    key=['BV', 'USE_INITIAL_STATE', 'STORE_FINAL_STATE'],
    **autotune_cache_kwargs,
)
@triton.jit(do_not_specialize=['E'])
def chunk_ram_fwd_chain_kernel(
    event_order,
    group_offsets,
    segment_offsets,
    segment_rows,
    write_weight,
    v,
    gamma,
    memory0,
    mass0,
    prev_memory,
    prev_mass,
    read_memory,
    read_mass,
    memory,
    mass,
    E,
    K: tl.constexpr,
    V: tl.constexpr,
    BV: tl.constexpr,
    ACC: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr,
    STORE_FINAL_STATE: tl.constexpr,
):
    """event_order [2E]: sorted events, w < E a write event id, E + r a read event id (ids are
    (token * H + head) * K + j); group_offsets [G+1]: the segments of each program; segment_offsets
    [S+1], segment_rows [S]: the events and table row of each segment. write_weight [E], v [Ntok*H, V], gamma [Ntok*H]; memory0/memory [N*H*M, V],
    mass0/mass [N*H*M]. Saves prev_memory/prev_mass [E, V]/[E] (slot before each write) and
    read_memory/read_mass (slot at each read)."""
    i_g, i_v = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    is_first_block = i_v == 0

    for i_s in range(tl.load(group_offsets + i_g).to(tl.int64), tl.load(group_offsets + i_g + 1).to(tl.int64)):
        bos = tl.load(segment_offsets + i_s).to(tl.int64)
        eos = tl.load(segment_offsets + i_s + 1).to(tl.int64)
        i_row = tl.load(segment_rows + i_s).to(tl.int64)
        if USE_INITIAL_STATE:
            b_h = tl.load(memory0 + i_row * V + o_v, mask=m_v, other=0).to(ACC)
            b_z = tl.load(mass0 + i_row).to(ACC)
        else:
            b_h = tl.zeros([BV], dtype=ACC)
            b_z = tl.zeros([], dtype=ACC)

        for i_e in range(bos, eos):
            i_ev = tl.load(event_order + i_e).to(tl.int64)
            if i_ev < E:
                # a write: S <- lambda S + w v, z <- lambda z + w; save the slot as it was before
                i_th = i_ev // K
                b_w = tl.load(write_weight + i_ev).to(ACC)
                b_lam = pdma_retain(b_w, tl.load(gamma + i_th).to(ACC))
                b_v = tl.load(v + i_th * V + o_v, mask=m_v, other=0).to(ACC)
                tl.store(prev_memory + i_ev * V + o_v, b_h.to(prev_memory.dtype.element_ty), mask=m_v)
                tl.store(prev_mass + i_ev, b_z.to(prev_mass.dtype.element_ty), mask=is_first_block)
                b_h = b_lam * b_h + b_w * b_v
                b_z = b_lam * b_z + b_w
            else:
                # a read sees the slot after this token's write (writes sort first within a token)
                i_x = i_ev - E
                tl.store(read_memory + i_x * V + o_v, b_h.to(read_memory.dtype.element_ty), mask=m_v)
                tl.store(read_mass + i_x, b_z.to(read_mass.dtype.element_ty), mask=is_first_block)

        if STORE_FINAL_STATE:
            tl.store(memory + i_row * V + o_v, b_h.to(memory.dtype.element_ty), mask=m_v)
            tl.store(mass + i_row, b_z.to(mass.dtype.element_ty), mask=is_first_block)


@triton.autotune(
    configs=[triton.Config({}, num_warps=num_warps) for num_warps in [1, 2, 4]],
    key=['BK', 'BV'],
    **autotune_cache_kwargs,
)
@triton.jit(do_not_specialize=['NTH'])
def chunk_ram_fwd_o_kernel(
    read_weight,
    read_memory,
    read_mass,
    o,
    NTH,
    K: tl.constexpr,
    V: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    ACC: tl.constexpr,
):
    """o[th] = sum_k r[th, k] * read_memory[th, k] / (read_mass[th, k] + eps) for th = token * H + head."""
    i_th, i_v = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    i_x = i_th * K + o_k
    b_r = tl.load(read_weight + i_x, mask=m_k, other=0).to(ACC)
    b_den = tl.load(read_mass + i_x, mask=m_k, other=0).to(ACC) + EPS
    b_s = tl.load(read_memory + i_x[:, None] * V + o_v[None, :], mask=m_k[:, None] & m_v[None, :], other=0).to(ACC)
    b_o = tl.sum((b_r / b_den)[:, None] * b_s, 0)
    tl.store(o + i_th * V + o_v, b_o.to(o.dtype.element_ty), mask=m_v)


@triton.heuristics({
    'USE_INITIAL_STATE': lambda args: args['dmemory0'] is not None,
    'USE_FINAL_STATE_GRADIENT': lambda args: args['dmemory'] is not None,
})
@triton.autotune(
    configs=[triton.Config({}, num_warps=num_warps) for num_warps in [1, 2, 4]],
    key=['BV', 'USE_INITIAL_STATE', 'USE_FINAL_STATE_GRADIENT'],
    **autotune_cache_kwargs,
)
@triton.jit(do_not_specialize=['E', 'S'])
def chunk_ram_bwd_chain_kernel(
    event_order,
    group_offsets,
    segment_offsets,
    segment_rows,
    read_weight,
    write_weight,
    v,
    gamma,
    do,
    prev_memory,
    prev_mass,
    read_memory,
    read_mass,
    dmemory,
    dmass,
    dmemory0,
    dmass0_partial,
    dread_weight_partial,
    dwrite_weight_partial,
    dgamma_partial,
    dv_event,
    E,
    S,
    K: tl.constexpr,
    V: tl.constexpr,
    BV: tl.constexpr,
    ACC: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr,
    USE_FINAL_STATE_GRADIENT: tl.constexpr,
):
    """Reverse walk of each segment with the slot's adjoint (dS [BV], dz). Scalar gradients are
    partial sums over this program's V-block, stored at [i_v, ...] of [NV, E] (or [NV, S]) buffers;
    dmass from the final state enters in V-block 0 only, so the partials add up to the gradient."""
    i_g, i_v = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    is_first_block = i_v == 0

    for i_s in range(tl.load(group_offsets + i_g).to(tl.int64), tl.load(group_offsets + i_g + 1).to(tl.int64)):
        bos = tl.load(segment_offsets + i_s).to(tl.int64)
        eos = tl.load(segment_offsets + i_s + 1).to(tl.int64)
        i_row = tl.load(segment_rows + i_s).to(tl.int64)
        if USE_FINAL_STATE_GRADIENT:
            b_dh = tl.load(dmemory + i_row * V + o_v, mask=m_v, other=0).to(ACC)
            b_dz = tl.load(dmass + i_row, mask=is_first_block, other=0).to(ACC)
        else:
            b_dh = tl.zeros([BV], dtype=ACC)
            b_dz = tl.zeros([], dtype=ACC)

        for i_step in range(0, eos - bos):
            i_ev = tl.load(event_order + eos - 1 - i_step).to(tl.int64)
            if i_ev >= E:
                # a read o += r * S / (z + eps): gradient to r, and into the slot's adjoint
                i_x = i_ev - E
                b_r = tl.load(read_weight + i_x).to(ACC)
                b_s = tl.load(read_memory + i_x * V + o_v, mask=m_v, other=0).to(ACC)
                b_den = tl.load(read_mass + i_x).to(ACC) + EPS
                b_do = tl.load(do + (i_x // K) * V + o_v, mask=m_v, other=0).to(ACC)
                b_dot = tl.sum(b_do * b_s, 0)
                tl.store(dread_weight_partial + i_v * E + i_x, (b_dot / b_den).to(dread_weight_partial.dtype.element_ty))
                b_dh += (b_r / b_den) * b_do
                b_dz -= b_r * b_dot / (b_den * b_den)
            else:
                # a write S = lambda S_prev + w v, z = lambda z_prev + w, lambda = (1 - min(w, clamp)) ** gamma
                i_th = i_ev // K
                b_w = tl.load(write_weight + i_ev).to(ACC)
                b_gamma = tl.load(gamma + i_th).to(ACC)
                b_wc = tl.minimum(b_w, CLAMP)
                b_log_keep = log1p(-b_wc)
                b_lam = tl.exp(b_gamma * b_log_keep)
                b_s_prev = tl.load(prev_memory + i_ev * V + o_v, mask=m_v, other=0).to(ACC)
                b_z_prev = tl.load(prev_mass + i_ev).to(ACC)
                b_v = tl.load(v + i_th * V + o_v, mask=m_v, other=0).to(ACC)
                b_dlam = tl.sum(b_dh * b_s_prev, 0) + b_dz * b_z_prev
                b_dw = tl.sum(b_dh * b_v, 0) + b_dz
                b_dw -= tl.where(b_w < CLAMP, b_dlam * b_lam * b_gamma / (1 - b_wc), 0)
                tl.store(dwrite_weight_partial + i_v * E + i_ev, b_dw.to(dwrite_weight_partial.dtype.element_ty))
                tl.store(dgamma_partial + i_v * E + i_ev, (b_dlam * b_lam * b_log_keep).to(dgamma_partial.dtype.element_ty))
                tl.store(dv_event + i_ev * V + o_v, (b_w * b_dh).to(dv_event.dtype.element_ty), mask=m_v)
                b_dh = b_lam * b_dh
                b_dz = b_lam * b_dz

        if USE_INITIAL_STATE:
            tl.store(dmemory0 + i_row * V + o_v, b_dh.to(dmemory0.dtype.element_ty), mask=m_v)
            tl.store(dmass0_partial + i_v * S + i_s, b_dz.to(dmass0_partial.dtype.element_ty))


# A program walks consecutive segments until it has covered about this many events, so that many
# short segments (large M) do not each cost a program, while a long segment still gets its own.
EVENTS_PER_PROGRAM = 64


def value_block(value_dim: int) -> int:
    """V-block of the chain kernels: the whole (power-of-two padded) width up to 64."""
    return min(64, triton.next_power_of_2(value_dim))


def build_segments(read_slot, write_slot, sequence_ids, num_sequences: int, num_slots: int):
    """Sort all read and write events by (table row, token, read-after-write).

    read_slot, write_slot: [Ntok, H, K] int64 (after CAPE); sequence_ids: [Ntok].
    Returns event_order [2E] (write event id, or E + read event id), group_offsets [G+1] (the
    segments each program walks: those starting in the same window of EVENTS_PER_PROGRAM sorted
    events), segment_offsets [S+1] and segment_rows [S] (row (sequence * H + head) * M + slot).
    Data-dependent: S (touched rows) and G (program groups) depend on the addresses.
    """
    num_tokens, H, K = write_slot.shape
    device = write_slot.device
    num_rows = num_sequences * H * num_slots
    if num_rows * 2 * max(num_tokens, 1) >= 2 ** 62:
        raise ValueError(f"too many tokens x heads x slots for 64-bit event keys: {num_tokens} x {H} x {num_slots}")
    token = torch.arange(num_tokens, device=device)
    row_base = (sequence_ids[:, None] * H + torch.arange(H, device=device)) * num_slots          # [Ntok, H]
    time_key = (2 * token)[:, None, None]
    write_key = (row_base[..., None] + write_slot) * (2 * num_tokens) + time_key
    read_key = (row_base[..., None] + read_slot) * (2 * num_tokens) + time_key + 1
    sorted_key, event_order = torch.cat([write_key.flatten(), read_key.flatten()]).sort()
    event_row = torch.div(sorted_key, 2 * num_tokens, rounding_mode='floor')
    is_start = torch.ones_like(event_row, dtype=torch.bool)
    is_start[1:] = event_row[1:] != event_row[:-1]
    starts = is_start.nonzero().squeeze(1)
    segment_offsets = torch.cat([starts, starts.new_full((1,), event_row.numel())])
    _, segments_per_group = torch.unique_consecutive(torch.div(starts, EVENTS_PER_PROGRAM, rounding_mode='floor'),
                                                     return_counts=True)
    group_offsets = torch.cat([segments_per_group.new_zeros(1), segments_per_group.cumsum(0)])
    return event_order, group_offsets, segment_offsets, event_row[starts]


def chunk_ram_fwd(read_weight, write_weight, v, gamma, memory0, mass0, segments, num_rows: int,
                  output_final_state: bool, dtype: torch.dtype):
    """Forward on flattened tokens. read_weight, write_weight: [Ntok, H, K]; v: [Ntok, H, V];
    gamma: [Ntok, H]; memory0/mass0: [N*H*M, V]/[N*H*M] or None. Returns o [Ntok, H, V] (v's dtype),
    the final memory and mass (or None) and the saved slot states."""
    num_tokens, H, K = write_weight.shape
    V = v.shape[-1]
    E = num_tokens * H * K
    device = v.device
    event_order, group_offsets, segment_offsets, segment_rows = segments
    S, G = segment_rows.numel(), group_offsets.numel() - 1
    BV = value_block(V)
    NV = triton.cdiv(V, BV)
    ACC = tl_dtype(dtype)

    prev_memory = torch.empty(E, V, dtype=dtype, device=device)
    prev_mass = torch.empty(E, dtype=dtype, device=device)
    read_memory = torch.empty(E, V, dtype=dtype, device=device)
    read_mass = torch.empty(E, dtype=dtype, device=device)
    memory = mass = None
    if output_final_state:
        # untouched rows keep their initial value; the kernel writes every touched row
        memory = memory0.clone() if memory0 is not None else torch.zeros(num_rows, V, dtype=dtype, device=device)
        mass = mass0.clone() if mass0 is not None else torch.zeros(num_rows, dtype=dtype, device=device)
    if S > 0:
        chunk_ram_fwd_chain_kernel[(G, NV)](
            event_order, group_offsets, segment_offsets, segment_rows, write_weight, v, gamma, memory0, mass0,
            prev_memory, prev_mass, read_memory, read_mass, memory, mass, E,
            K=K, V=V, BV=BV, ACC=ACC,
        )
    o = torch.empty(num_tokens, H, V, dtype=v.dtype, device=device)
    check_block('`topk`', triton.next_power_of_2(K) * BV, f"a token's read rows next_pow2(topk={K}) x {BV}")
    if num_tokens * H > 0:
        chunk_ram_fwd_o_kernel[(num_tokens * H, NV)](
            read_weight, read_memory, read_mass, o, num_tokens * H,
            K=K, V=V, BK=triton.next_power_of_2(K), BV=BV, ACC=ACC,
        )
    return o, memory, mass, (prev_memory, prev_mass, read_memory, read_mass)


def chunk_ram_bwd(read_weight, write_weight, v, gamma, do, saved, segments, dmemory, dmass,
                  has_initial_state: bool, num_rows: int, dtype: torch.dtype):
    """Gradients of `chunk_ram_fwd` for its differentiable inputs (see TritonChunkRAMFunction)."""
    num_tokens, H, K = write_weight.shape
    V = v.shape[-1]
    E = num_tokens * H * K
    device = v.device
    event_order, group_offsets, segment_offsets, segment_rows = segments
    S, G = segment_rows.numel(), group_offsets.numel() - 1
    BV = value_block(V)
    NV = triton.cdiv(V, BV)
    prev_memory, prev_mass, read_memory, read_mass = saved

    if dmemory is None and dmass is not None:
        dmemory = torch.zeros(num_rows, V, dtype=dtype, device=device)
    if dmass is None and dmemory is not None:
        dmass = torch.zeros(num_rows, dtype=dtype, device=device)
    dread_weight_partial = torch.empty(NV, E, dtype=dtype, device=device)
    dwrite_weight_partial = torch.empty(NV, E, dtype=dtype, device=device)
    dgamma_partial = torch.empty(NV, E, dtype=dtype, device=device)
    dv_event = torch.empty(E, V, dtype=dtype, device=device)
    dmemory0 = dmass0_partial = None
    if has_initial_state:
        # rows no event touches pass the final state's gradient straight through
        dmemory0 = dmemory.clone() if dmemory is not None else torch.zeros(num_rows, V, dtype=dtype, device=device)
        dmass0_partial = torch.empty(NV, S, dtype=dtype, device=device)
    if S > 0:
        chunk_ram_bwd_chain_kernel[(G, NV)](
            event_order, group_offsets, segment_offsets, segment_rows, read_weight, write_weight, v, gamma, do,
            prev_memory, prev_mass, read_memory, read_mass, dmemory, dmass, dmemory0, dmass0_partial,
            dread_weight_partial, dwrite_weight_partial, dgamma_partial, dv_event, E, S,
            K=K, V=V, BV=BV, ACC=tl_dtype(dtype),
        )
    dread_weight = dread_weight_partial.sum(0).view(num_tokens, H, K)
    dwrite_weight = dwrite_weight_partial.sum(0).view(num_tokens, H, K)
    dgamma = dgamma_partial.sum(0).view(num_tokens, H, K).sum(-1)
    dv = dv_event.view(num_tokens, H, K, V).sum(2)
    dmass0 = None
    if has_initial_state:
        dmass0 = dmass.clone() if dmass is not None else torch.zeros(num_rows, dtype=dtype, device=device)
        dmass0[segment_rows] = dmass0_partial.sum(0)
    return dread_weight, dwrite_weight, dv, dgamma, dmemory0, dmass0


class TritonChunkRAMFunction(torch.autograd.Function):
    """Sparse read/write with PDMA over flattened tokens, given the chosen slots.

    Differentiable inputs: read_weight, write_weight [Ntok, H, K] and memory0 [N, H, M, V], mass0
    [N, H, M] (or None) in the compute dtype; v [Ntok, H, V], gamma [Ntok, H] in any float dtype.
    Constant inputs: read_slot, write_slot [Ntok, H, K] int64 (after CAPE), sequence_ids [Ntok].
    Returns o [Ntok, H, V] in v's dtype and, if asked, the final memory and mass (compute dtype).
    """

    @staticmethod
    @input_guard
    @autocast_custom_fwd
    def forward(ctx, read_weight, write_weight, v, gamma, memory0, mass0,
                read_slot, write_slot, sequence_ids, num_sequences, num_slots, output_final_state):
        num_tokens, H, K = write_slot.shape
        V = v.shape[-1]
        dtype = read_weight.dtype
        num_rows = num_sequences * H * num_slots
        segments = build_segments(read_slot, write_slot, sequence_ids, num_sequences, num_slots)
        has_initial_state = memory0 is not None
        o, memory, mass, saved = chunk_ram_fwd(
            read_weight, write_weight, v, gamma,
            memory0.view(num_rows, V) if has_initial_state else None,
            mass0.view(num_rows) if has_initial_state else None,
            segments, num_rows, output_final_state, dtype,
        )
        ctx.save_for_backward(read_weight, write_weight, v, gamma, *segments, *saved)
        ctx.sizes = (num_sequences, num_slots, has_initial_state, dtype)
        if output_final_state:
            memory = memory.view(num_sequences, H, num_slots, V)
            mass = mass.view(num_sequences, H, num_slots)
        return o, memory, mass

    @staticmethod
    @input_guard
    @autocast_custom_bwd
    def backward(ctx, do, dmemory, dmass):
        read_weight, write_weight, v, gamma, *rest = ctx.saved_tensors
        segments, saved = tuple(rest[:4]), tuple(rest[4:])
        num_sequences, num_slots, has_initial_state, dtype = ctx.sizes
        num_tokens, H, K = write_weight.shape
        V = v.shape[-1]
        num_rows = num_sequences * H * num_slots
        dread_weight, dwrite_weight, dv, dgamma, dmemory0, dmass0 = chunk_ram_bwd(
            read_weight, write_weight, v, gamma, do, saved, segments,
            dmemory.reshape(num_rows, V) if dmemory is not None else None,
            dmass.reshape(num_rows) if dmass is not None else None,
            has_initial_state, num_rows, dtype,
        )
        if has_initial_state:
            dmemory0 = dmemory0.view(num_sequences, H, num_slots, V)
            dmass0 = dmass0.view(num_sequences, H, num_slots)
        return (dread_weight, dwrite_weight, dv.to(v.dtype), dgamma.to(gamma.dtype), dmemory0, dmass0,
                None, None, None, None, None, None)


def chunk_read_write(read_weight, write_weight, v, gamma, memory0, mass0, read_slot, write_slot, sequence_ids,
                     num_sequences: int, num_slots: int, output_final_state: bool):
    """The Triton read/write of `chunk_ram` (see `TritonChunkRAMFunction`). Returns o [Ntok, H, V] in
    v's dtype and, if asked, the final memory [N, H, M, V] and mass [N, H, M] (compute dtype)."""
    return TritonChunkRAMFunction.apply(read_weight, write_weight, v, gamma, memory0, mass0,
                                        read_slot, write_slot, sequence_ids, num_sequences, num_slots,
                                        output_final_state)
