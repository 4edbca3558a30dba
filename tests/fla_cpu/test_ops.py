"""The PyTorch versions of fla's GLA and delta-rule ops against fla's readable references
(fla/ops/*/naive.py, token loops in float32), gradients included, plus float64 gradcheck."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fla.ops.delta_rule.naive import delta_rule_recurrence
from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule
from fla.ops.gla.naive import naive_recurrent_gla

from ramnet_fla.fla_cpu.modules import apply_rotary
from ramnet_fla.fla_cpu.ops import torch_chunk_delta_rule, torch_chunk_gated_delta_rule, torch_chunk_gla

ATOL = 2e-5


def _gla_inputs(B, T, H, K, V, seed=0, decay_scale=3.0):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(B, T, H, K, generator=g), torch.randn(B, T, H, K, generator=g)
    v = torch.randn(B, T, H, V, generator=g)
    gk = F.logsigmoid(torch.randn(B, T, H, K, generator=g) * decay_scale)
    h0 = torch.randn(B, H, K, V, generator=g)
    return [x.requires_grad_() for x in (q, k, v, gk, h0)]


def _grads(outputs, inputs, seed=1):
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(o.shape, generator=g) for o in outputs]
    loss = sum((o * w).sum() for o, w in zip(outputs, weights))
    return torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize('T,chunk_size', [(1, 16), (37, 8), (64, 16), (50, 64)], ids=lambda x: str(x))
def test_chunk_gla_matches_fla_naive(T, chunk_size):
    q, k, v, gk, h0 = _gla_inputs(2, T, 3, 8, 5, seed=T)
    o_ref, h_ref = naive_recurrent_gla(q, k, v, gk, initial_state=h0, output_final_state=True)
    o, h = torch_chunk_gla(q, k, v, gk, initial_state=h0, output_final_state=True, chunk_size=chunk_size)
    torch.testing.assert_close(o, o_ref, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(h, h_ref, atol=ATOL, rtol=1e-4)
    for got, want in zip(_grads([o, h], [q, k, v, gk, h0]), _grads([o_ref, h_ref], [q, k, v, gk, h0])):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_chunk_gla_state_v_first_and_strong_decay_stay_finite():
    q, k, v, gk, h0 = _gla_inputs(1, 40, 2, 4, 3, decay_scale=60.0)        # log-decays down to about -60
    o_ref, h_ref = naive_recurrent_gla(q, k, v, gk, initial_state=h0, output_final_state=True)
    o, h = torch_chunk_gla(q, k, v, gk, initial_state=h0.transpose(-1, -2), output_final_state=True,
                           state_v_first=True, chunk_size=16)
    assert torch.isfinite(o).all()
    torch.testing.assert_close(o, o_ref, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(h, h_ref.transpose(-1, -2), atol=ATOL, rtol=1e-4)


def test_chunk_gla_packed_equals_loop_over_sequences():
    q, k, v, gk, _ = _gla_inputs(1, 30, 2, 4, 3)
    cu_seqlens = torch.tensor([0, 7, 7, 19, 30])
    h0 = torch.randn(4, 2, 4, 3)
    o, h = torch_chunk_gla(q, k, v, gk, initial_state=h0, output_final_state=True, cu_seqlens=cu_seqlens, chunk_size=4)
    for n in range(4):
        s, e = cu_seqlens[n].item(), cu_seqlens[n + 1].item()
        o_ref, h_ref = naive_recurrent_gla(q[:, s:e], k[:, s:e], v[:, s:e], gk[:, s:e], initial_state=h0[n:n + 1],
                                           output_final_state=True)
        torch.testing.assert_close(o[:, s:e], o_ref, atol=ATOL, rtol=1e-4)
        torch.testing.assert_close(h[n:n + 1], h_ref, atol=ATOL, rtol=1e-4)


def _delta_inputs(B, T, H, K, V, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, T, H, K, generator=g), dim=-1)
    k = F.normalize(torch.randn(B, T, H, K, generator=g), dim=-1)
    v = torch.randn(B, T, H, V, generator=g)
    beta = torch.rand(B, T, H, generator=g)
    decay = F.logsigmoid(torch.randn(B, T, H, generator=g) + 2)
    h0 = torch.randn(B, H, K, V, generator=g)
    return [x.requires_grad_() for x in (q, k, v, beta, decay, h0)]


@pytest.mark.parametrize('T,chunk_size', [(1, 32), (45, 16), (64, 32)], ids=lambda x: str(x))
def test_chunk_delta_rule_matches_fla_naive(T, chunk_size):
    q, k, v, beta, _, h0 = _delta_inputs(2, T, 3, 8, 5, seed=T)
    o_ref, h_ref = delta_rule_recurrence(*(x.transpose(1, 2) for x in (q, k, v, beta)), initial_state=h0.clone())
    o_ref = o_ref.transpose(1, 2)
    o, h = torch_chunk_delta_rule(q, k, v, beta, initial_state=h0, output_final_state=True, chunk_size=chunk_size)
    torch.testing.assert_close(o, o_ref, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(h, h_ref, atol=ATOL, rtol=1e-4)
    for got, want in zip(_grads([o, h], [q, k, v, beta, h0]), _grads([o_ref, h_ref], [q, k, v, beta, h0])):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('T,chunk_size', [(1, 32), (45, 16), (70, 32)], ids=lambda x: str(x))
def test_chunk_gated_delta_rule_matches_fla_naive(T, chunk_size):
    q, k, v, beta, decay, h0 = _delta_inputs(2, T, 3, 8, 5, seed=T)
    o_ref, h_ref = naive_recurrent_gated_delta_rule(q, k, v, beta, decay, initial_state=h0, output_final_state=True)
    o, h = torch_chunk_gated_delta_rule(q, k, v, decay, beta, initial_state=h0.transpose(-1, -2),
                                        output_final_state=True, state_v_first=True, chunk_size=chunk_size)
    torch.testing.assert_close(o, o_ref, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(h, h_ref.transpose(-1, -2), atol=ATOL, rtol=1e-4)
    for got, want in zip(_grads([o, h.transpose(-1, -2)], [q, k, v, beta, decay, h0]),
                         _grads([o_ref, h_ref], [q, k, v, beta, decay, h0])):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_gated_delta_rule_packed_and_grouped_value_heads():
    """Packed sequences equal a loop; with HV = 2H, value head j uses query/key head j // 2."""
    q, k, _, _, _, _ = _delta_inputs(1, 20, 2, 4, 3)
    g = torch.Generator().manual_seed(5)
    v = torch.randn(1, 20, 4, 3, generator=g)
    beta, decay = torch.rand(1, 20, 4, generator=g), -torch.rand(1, 20, 4, generator=g)
    cu_seqlens = torch.tensor([0, 9, 20])
    o, h = torch_chunk_gated_delta_rule(q, k, v, decay, beta, output_final_state=True, cu_seqlens=cu_seqlens, chunk_size=4)
    q4, k4 = q.repeat_interleave(2, dim=2), k.repeat_interleave(2, dim=2)
    for n in range(2):
        s, e = cu_seqlens[n].item(), cu_seqlens[n + 1].item()
        o_ref, h_ref = naive_recurrent_gated_delta_rule(q4[:, s:e], k4[:, s:e], v[:, s:e], beta[:, s:e], decay[:, s:e],
                                                        output_final_state=True)
        torch.testing.assert_close(o[:, s:e], o_ref, atol=ATOL, rtol=1e-4)
        torch.testing.assert_close(h[n:n + 1], h_ref, atol=ATOL, rtol=1e-4)


def test_float64_gradcheck():
    g = torch.Generator().manual_seed(0)
    B, T, H, K, V = 1, 6, 1, 3, 2
    q, k = torch.randn(B, T, H, K, generator=g, dtype=torch.float64), torch.randn(B, T, H, K, generator=g, dtype=torch.float64)
    v = torch.randn(B, T, H, V, generator=g, dtype=torch.float64)
    gk = F.logsigmoid(torch.randn(B, T, H, K, generator=g, dtype=torch.float64))
    beta = torch.rand(B, T, H, generator=g, dtype=torch.float64)
    decay = -torch.rand(B, T, H, generator=g, dtype=torch.float64)
    inputs = [x.requires_grad_() for x in (q, k, v, gk, beta, decay)]
    assert torch.autograd.gradcheck(lambda q, k, v, gk: torch_chunk_gla(q, k, v, gk, chunk_size=4)[0], inputs[:4])
    assert torch.autograd.gradcheck(
        lambda q, k, v, beta, decay: torch_chunk_gated_delta_rule(q, k, v, decay, beta, chunk_size=4,
                                                                   use_qk_l2norm_in_kernel=True)[0],
        [q, k, v, beta, decay])


def test_rotary_rotates_pairs_and_keeps_relative_scores():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 5, 2, 8, generator=g), torch.randn(1, 5, 2, 8, generator=g)
    positions = torch.arange(5)
    rq, rk = apply_rotary(q, positions), apply_rotary(k, positions)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))                # a rotation
    shifted = apply_rotary(q, positions + 7), apply_rotary(k, positions + 7)
    torch.testing.assert_close(rq @ rk.transpose(-1, -2), shifted[0] @ shifted[1].transpose(-1, -2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(apply_rotary(q, torch.zeros(5)), q)


def test_bad_arguments_are_clear_errors():
    q = torch.randn(1, 4, 2, 3)
    with pytest.raises(ValueError, match='`q`, `k` and `g` must have the same shape'):
        torch_chunk_gla(q, q[..., :2], torch.randn(1, 4, 2, 5), q)
    with pytest.raises(ValueError, match='`v` must have shape'):
        torch_chunk_gla(q, q, torch.randn(1, 4, 5), q)
    with pytest.raises(ValueError, match='`cu_seqlens` must start at 0 and end at T = 4'):
        torch_chunk_gla(q, q, q, q, cu_seqlens=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match='needs batch size 1'):
        torch_chunk_delta_rule(q.expand(2, -1, -1, -1), q.expand(2, -1, -1, -1), q.expand(2, -1, -1, -1),
                               torch.rand(2, 4, 2), cu_seqlens=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r'`initial_state` must have shape \[1, 2, 3, 3\]'):
        torch_chunk_delta_rule(q, q, q, torch.rand(1, 4, 2), initial_state=torch.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError, match='`beta` and `g` must have shape'):
        torch_chunk_gated_delta_rule(q, q, q, torch.rand(1, 4, 3), torch.rand(1, 4, 2))
    with pytest.raises(TypeError, match='`q` must be a torch.Tensor'):
        torch_chunk_gla([1.0], q, q, q)
