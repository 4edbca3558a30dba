"""The delta rule (fla's `chunk_delta_rule`) in chunked PyTorch; the gated delta rule shares it.

Per head, with state S [K, V], write strength beta_t and log-decay g_t <= 0 (g = 0: plain delta rule):
    S'  = exp(g_t) S_{t-1}
    u_t = beta_t (v_t - S'^T k_t)
    S_t = S' + k_t u_t^T,                o_t = scale * S_t^T q_t.
Inside a chunk starting from S_0, with G the inclusive cumulative log-decay since the chunk start,
the corrections u solve a unit lower-triangular system (the WY form):
    (I + diag(beta) L) u = beta v - beta exp(G) (k S_0),   L_ts = exp(G_t - G_s) k_t.k_s  (s < t)
so u = U - W S_0 with U = A^-1 (beta v) and W = A^-1 (beta exp(G) k), and
    o_t = exp(G_t) q_t S_0 + sum_{s <= t} exp(G_t - G_s) (q_t.k_s) u_s,
    S_C = exp(G_C) S_0 + sum_s exp(G_C - G_s) k_s u_s^T.
"""

from __future__ import annotations

import torch

from ramnet_fla.fla_cpu.ops.utils import check_same_tokens, from_chunks, run_per_sequence, to_chunks
from ramnet_fla.utils.checks import check_int, check_tensor


def l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim (fla's `l2norm`)."""
    return x * torch.rsqrt(x.square().sum(-1, keepdim=True) + eps)


def torch_chunk_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
    use_qk_l2norm_in_kernel: bool = False,
    chunk_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The delta rule, the math of fla's `chunk_delta_rule`/`fused_recurrent_delta_rule`, in PyTorch.

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V]; beta: [B, T, H] write strengths.
        scale: multiplies q; default K ** -0.5.
        initial_state: [N, H, K, V] float32.
        cu_seqlens: [N + 1] boundaries of packed sequences (B must be 1).
        use_qk_l2norm_in_kernel: L2-normalise q and k first.

    Returns:
        o [B, T, H, V] in v's dtype, and the final state [N, H, K, V] (float32; float64 for float64 inputs) or None.
    """
    return delta_rule(q, k, v, None, beta, scale, initial_state, output_final_state, False,
                      cu_seqlens, use_qk_l2norm_in_kernel, chunk_size)


def delta_rule(q, k, v, g, beta, scale, initial_state, output_final_state, state_v_first,
               cu_seqlens, use_qk_l2norm, chunk_size):
    """Both public ops: check and normalise the inputs, then the chunks per sequence. g None: no decay."""
    check_tensor('q', q, 4, '[B, T, H, K]')
    check_tensor('k', k, 4, '[B, T, H, K]')
    check_tensor('v', v, 4, '[B, T, HV, V]')
    check_tensor('beta', beta, 3, '[B, T, HV]')
    if k.shape != q.shape:
        raise ValueError(f"`q` and `k` must have the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    H, K = q.shape[2:]
    HV, V = v.shape[2:]
    if HV % H != 0:
        raise ValueError(f"`v` must have a multiple of q's {H} heads, got {HV}")
    if beta.shape[2] != HV or (g is not None and g.shape[2] != HV):
        raise ValueError(f"`beta` and `g` must have shape [B, T, HV = {HV}], got {tuple(beta.shape)}"
                         + (f" and {tuple(g.shape)}" if g is not None else ''))
    check_same_tokens(q, k=k, v=v, beta=beta, **({'g': g} if g is not None else {}))
    check_int('chunk_size', chunk_size, minimum=1)
    scale = K ** -0.5 if scale is None else scale

    dtype = torch.promote_types(q.dtype, torch.float32)              # float32, or float64 for checks
    q, k = q.to(dtype), k.to(dtype)
    if use_qk_l2norm:
        q, k = l2_normalize(q), l2_normalize(k)
    if HV != H:                                    # value head j reads key/query head j // (HV / H)
        q, k = (x.repeat_interleave(HV // H, dim=2) for x in (q, k))
    tokens = [q, k, v.to(dtype), beta.to(dtype), None if g is None else g.to(dtype)]

    def core(q, k, v, beta, g, h0):
        return _chunk_delta_rule(q, k, v, beta, g, scale=scale, h0=h0, chunk_size=chunk_size)

    return run_per_sequence(core, tokens, initial_state, heads=HV, key_dim=K, value_dim=V,
                            state_v_first=state_v_first, output_final_state=output_final_state,
                            cu_seqlens=cu_seqlens, out_dtype=v.dtype)


def _chunk_delta_rule(q, k, v, beta, g, scale: float, h0: torch.Tensor | None, chunk_size: int):
    """float32 q, k [B, T, H, K], v [B, T, H, V], beta, g [B, T, H] -> (o, final state [B, H, K, V])."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = min(chunk_size, max(T, 1))
    # [B, H, n, C, ...]; end padding has k = v = 0, beta = 0, g = 0: the state passes through unchanged
    q, k, v = (to_chunks(x, C) for x in (q, k, v))
    beta = to_chunks(beta, C)                                              # [B, H, n, C]
    q = q * scale

    lower = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    strictly_lower = lower.tril(-1)
    if g is None:
        pair_decay = lower.to(q.dtype)                                     # exp(G_t - G_s) = 1 for s <= t
    else:
        G = to_chunks(g, C).cumsum(-1)                                     # [B, H, n, C]
        pair_decay = (G.unsqueeze(-1) - G.unsqueeze(-2)).masked_fill(~lower, float('-inf')).exp()

    kk = (k @ k.transpose(-1, -2)) * pair_decay                            # [B, H, n, C, C]
    system = torch.eye(C, dtype=q.dtype, device=q.device) + beta.unsqueeze(-1) * kk.masked_fill(~strictly_lower, 0)
    k_beta = k * beta.unsqueeze(-1)
    if g is not None:
        k_beta = k_beta * G.exp().unsqueeze(-1)
    rhs = torch.cat([v * beta.unsqueeze(-1), k_beta], dim=-1)
    solved = torch.linalg.solve_triangular(system, rhs, upper=False, unitriangular=True)
    U, W = solved.split([V, K], dim=-1)                                    # u = U - W S_0

    qk = (q @ k.transpose(-1, -2)) * pair_decay                            # masked to s <= t
    if g is None:
        q_from_start, k_to_end, chunk_decay = q, k, None
    else:
        q_from_start = q * G.exp().unsqueeze(-1)
        k_to_end = k * (G[..., -1:] - G).exp().unsqueeze(-1)
        chunk_decay = G[..., -1].exp()[..., None, None]                    # [B, H, n, 1, 1]
    state = q.new_zeros(B, H, K, V) if h0 is None else h0
    outputs = []
    for c in range(q.shape[2]):
        u = U[:, :, c] - W[:, :, c] @ state
        outputs.append(q_from_start[:, :, c] @ state + qk[:, :, c] @ u)
        if chunk_decay is not None:
            state = state * chunk_decay[:, :, c]
        state = state + k_to_end[:, :, c].transpose(-1, -2) @ u
    return from_chunks(torch.stack(outputs, dim=2), T), state
