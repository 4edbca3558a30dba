"""The readable reference of the RAM-Net op: one token at a time, straight from the paper.

Slow (it copies the slot table at every token) and exact; every fast path is tested against it.
It depends on none of them: the addresses come from a plain beam search below, the write and the
read are written out as in SPEC section 1.
"""

from __future__ import annotations

import torch

from ramnet_fla.ops.ram.checks import check_ram_inputs
from ramnet_fla.ops.ram.common import READ_EPS, WEIGHT_CLAMP, compute_dtype
from ramnet_fla.ops.ram.state import RAMState


def naive_address(logits: torch.Tensor, num_factors: int, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The K most likely addresses of the product softmax, by a plain beam search over factors.

    logits: [..., U*d_p] -> (flat slot indices [..., K] int64, log-probabilities [..., K]), best
    first, ties to the lower flat index, differentiable through autograd. Exact under the total
    order (log-probability desc, flat index asc): the completions of two prefixes by one suffix are
    ordered as the prefixes are, so a prefix outside the K best cannot complete into the Top-K.
    A row with a factor whose log-softmax is not a number (a NaN or +inf logit) gets NaN
    log-probabilities and the indices 0..K-1.
    """
    factor_dim = logits.shape[-1] // num_factors
    log_probs = logits.unflatten(-1, (num_factors, factor_dim)).log_softmax(-1)     # [..., U, d_p]
    bad = log_probs.isnan().flatten(-2).any(-1)                                    # [...]
    digits = torch.arange(factor_dim, device=logits.device)
    score = log_probs.new_zeros(*logits.shape[:-1], 1)                             # the empty prefix
    index = torch.zeros(score.shape, dtype=torch.long, device=logits.device)
    for u in range(num_factors):
        # extend every prefix by every digit of factor u (place value d_p ** u), keep the best K:
        # sort by index, then stably by descending score
        score = (score[..., :, None] + log_probs[..., u, None, :]).flatten(-2)     # [..., beam * d_p]
        index = (index[..., :, None] + digits * factor_dim ** u).flatten(-2)
        index, order = index.sort(dim=-1)
        score = score.gather(-1, order)
        score, best = score.sort(dim=-1, descending=True, stable=True)
        score, index = score[..., :topk], index.gather(-1, best[..., :topk])
    index = torch.where(bad[..., None], torch.arange(topk, device=logits.device), index)
    score = torch.where(bad[..., None], log_probs.sum((-2, -1))[..., None], score)   # NaN, with a gradient path
    return index, score


def naive_recurrent_ram(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gamma: torch.Tensor,
    num_factors: int,
    topk: int,
    cape: bool | list[bool] = False,
    initial_state: RAMState | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
) -> tuple[torch.Tensor, RAMState | None]:
    """RAM-Net read/write over a sequence, token by token.

    Args:
        q: [B, T, H, U*d_p] read logits.
        k: [B, T, H, U*d_p] write logits.
        v: [B, T, H, V] values.
        gamma: [B, T, H] PDMA decay exponents (>= 0).
        num_factors: U; M = d_p ** U slots per head.
        topk: K slots read and written per token.
        cape: CAPE on every head (bool) or per head ([H] bools).
        initial_state: RAMState with memory [N, H, M, V], mass [N, H, M], position [N].
        output_final_state: return the state after the last token.
        cu_seqlens: [N+1] offsets of packed sequences (then B == 1).

    Returns:
        o: [B, T, H, V] in v's dtype; the final RAMState or None.
    """
    shape, cape_heads, state = check_ram_inputs(q, k, v, gamma, num_factors, topk, cape, initial_state, cu_seqlens)
    B, T, H, V, K, M = shape.batch, shape.seq_len, shape.num_heads, shape.value_dim, shape.topk, shape.num_slots
    dtype = compute_dtype(q, k, v, gamma, *(state or ()))
    device, out_dtype = q.device, v.dtype

    # Flatten the batch into one stream of tokens; each sequence is a [bos, eos) range of it.
    q, k, v, gamma = (x.flatten(0, 1).to(dtype) for x in (q, k, v, gamma))      # [B*T, H, ...]
    if cu_seqlens is None:
        bounds = [(b * T, (b + 1) * T) for b in range(B)]
    else:
        offsets = cu_seqlens.tolist()
        bounds = list(zip(offsets[:-1], offsets[1:]))

    read_index, read_log_prob = naive_address(q, num_factors, topk)      # [B*T, H, K]
    write_index, write_log_prob = naive_address(k, num_factors, topk)
    read_weight, write_weight = read_log_prob.exp(), write_log_prob.exp()

    outputs = []
    memories, masses, positions = [], [], []
    for n, (bos, eos) in enumerate(bounds):
        if state is None:
            memory = torch.zeros(H, M, V, dtype=dtype, device=device)     # S
            mass = torch.zeros(H, M, dtype=dtype, device=device)          # z
            start = 0
        else:
            memory, mass, start = state.memory[n].to(dtype), state.mass[n].to(dtype), int(state.position[n])
        for t in range(bos, eos):
            # CAPE: on a CAPE head, slot i at absolute position p becomes (i + p) mod M
            shift = (start + t - bos) * cape_heads.long()[:, None]           # [H, 1]
            w_slot = (write_index[t] + shift) % M                            # [H, K]
            r_slot = (read_index[t] + shift) % M
            w, r = write_weight[t], read_weight[t]                            # [H, K]

            # PDMA write: S[a] <- lambda S[a] + w v,  z[a] <- lambda z[a] + w, only at the K slots,
            # with lambda = exp(gamma * log1p(-min(w, 1 - 1e-6))).
            retain = torch.exp(gamma[t][:, None] * torch.log1p(-w.clamp(max=WEIGHT_CLAMP)))   # [H, K]
            w_rows = w_slot[..., None].expand(H, K, V)
            memory = memory.scatter(1, w_rows, retain[..., None] * memory.gather(1, w_rows) + w[..., None] * v[t][:, None])
            mass = mass.scatter(1, w_slot, retain * mass.gather(1, w_slot) + w)

            # Read after the write: o = sum_k r_k S[a_k] / (z[a_k] + eps).
            r_rows = r_slot[..., None].expand(H, K, V)
            value = memory.gather(1, r_rows) / (mass.gather(1, r_slot)[..., None] + READ_EPS)   # [H, K, V]
            outputs.append((r[..., None] * value).sum(1))                                    # [H, V]
        memories.append(memory)
        masses.append(mass)
        positions.append(start + eos - bos)

    o = torch.stack(outputs) if outputs else v.new_zeros(0, H, V)
    o = o.reshape(B, T, H, V).to(out_dtype)
    final_state = None
    if output_final_state:
        if not memories:                                                  # no sequences (B = 0)
            final_state = RAMState.zeros(0, H, M, V, device=device, dtype=dtype)
        else:
            final_state = RAMState(torch.stack(memories), torch.stack(masses),
                                   torch.tensor(positions, dtype=torch.long, device=device))
    return o, final_state
