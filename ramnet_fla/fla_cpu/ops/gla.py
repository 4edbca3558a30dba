"""Gated linear attention (fla's `chunk_gla`) in chunked PyTorch.

Per head, with a per-key-channel log-decay g_t <= 0 and state S [K, V]:
    S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T,        o_t = scale * q_t^T S_t.
Inside a chunk, with G the inclusive cumulative log-decay since the chunk start,
    o_t = (q_t * exp(G_t)) S_0 + sum_{s <= t} (sum_d q_td k_sd exp(G_td - G_sd)) v_s,
and the state handed to the next chunk is diag(exp(G_C)) S_0 + sum_s (k_s * exp(G_C - G_s)) v_s^T.
Every exponent above is <= 0 (pairs with s > t are masked before exp), so nothing overflows.
"""

from __future__ import annotations

import torch

from ramnet_fla.fla_cpu.ops.utils import check_same_tokens, from_chunks, run_per_sequence, to_chunks
from ramnet_fla.utils.checks import check_int, check_tensor


def torch_chunk_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    state_v_first: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
    chunk_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated linear attention, the math of fla's `chunk_gla`/`fused_recurrent_gla`, in PyTorch.

    Args:
        q, k: [B, T, H, K] queries and keys.
        v: [B, T, H, V] values.
        g: [B, T, H, K] log-decay per key channel (<= 0, e.g. `logsigmoid(x) / 16`).
        scale: multiplies q; default K ** -0.5.
        initial_state: [N, H, K, V] float32 (or [N, H, V, K] if `state_v_first`).
        output_final_state: also return the state after the last token.
        state_v_first: states in fla's V-first layout [N, H, V, K].
        cu_seqlens: [N + 1] boundaries of packed sequences (B must be 1).
        chunk_size: tokens per chunk C (memory grows with B*T*H*C*K).

    Returns:
        o [B, T, H, V] in v's dtype, and the final state (float32; float64 for float64 inputs) or None.
    """
    check_tensor('q', q, 4, '[B, T, H, K]')
    check_tensor('k', k, 4, '[B, T, H, K]')
    check_tensor('v', v, 4, '[B, T, H, V]')
    check_tensor('g', g, 4, '[B, T, H, K]')
    if k.shape != q.shape or g.shape != q.shape:
        raise ValueError(f"`q`, `k` and `g` must have the same shape, "
                         f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(g.shape)}")
    if v.shape[2] != q.shape[2]:
        raise ValueError(f"`v` must have H = {q.shape[2]} heads like q, got shape {tuple(v.shape)}")
    check_same_tokens(q, k=k, v=v, g=g)
    check_int('chunk_size', chunk_size, minimum=1)
    K, V = q.shape[-1], v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    dtype = torch.promote_types(q.dtype, torch.float32)          # float32, or float64 for checks

    def core(q, k, v, g, h0):
        return _chunk_gla(q, k, v, g, scale, h0, chunk_size)

    return run_per_sequence(core, [x.to(dtype) for x in (q, k, v, g)], initial_state, heads=q.shape[2],
                            key_dim=K, value_dim=V, state_v_first=state_v_first,
                            output_final_state=output_final_state, cu_seqlens=cu_seqlens, out_dtype=v.dtype)


def _chunk_gla(q, k, v, g, scale: float, h0: torch.Tensor | None, chunk_size: int):
    """float32 [B, T, H, *] -> (o [B, T, H, V], final state [B, H, K, V])."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = min(chunk_size, max(T, 1))
    # [B, H, n, C, D]; the end padding has k = v = 0 and g = 0, so it leaves the state unchanged
    q, k, v, g = (to_chunks(x, C) for x in (q, k, v, g))
    q = q * scale
    G = g.cumsum(-2)                                                       # [B, H, n, C, K]

    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    pair_log_decay = (G.unsqueeze(-2) - G.unsqueeze(-3)).masked_fill(~causal[..., None], float('-inf'))
    scores = torch.einsum('...ik,...jk,...ijk->...ij', q, k, pair_log_decay.exp())   # [B, H, n, C, C]
    o = scores @ v                                                         # intra-chunk part

    q_from_start = q * G.exp()                                             # reads S_0 decayed to t
    k_to_end = k * (G[..., -1:, :] - G).exp()                              # writes decayed to chunk end
    chunk_decay = G[..., -1, :].exp().unsqueeze(-1)                        # [B, H, n, K, 1]
    state = q.new_zeros(B, H, K, V) if h0 is None else h0
    inter = []
    for c in range(q.shape[2]):
        inter.append(q_from_start[:, :, c] @ state)
        state = state * chunk_decay[:, :, c] + k_to_end[:, :, c].transpose(-1, -2) @ v[:, :, c]
    o = o + torch.stack(inter, dim=2)
    return from_chunks(o, T), state
