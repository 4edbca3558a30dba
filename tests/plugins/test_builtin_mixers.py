"""Every built-in mixer on the CPU: forward/backward, padded == packed, prefill + token-by-token
decoding with left padding == the full forward, and the CPU paths of fla's layers against fla's own
Triton kernels (under the interpreter on the CPU)."""

from __future__ import annotations

import pytest
import torch
from fla.models.utils import Cache

from ramnet_fla.plugin import build_mixer

HIDDEN = 32
SPECS = {
    'ram': {'name': 'ram', 'num_heads': 2, 'num_factors': 2, 'factor_dim': 4, 'topk': 3, 'use_short_conv': True},
    'gla': {'name': 'gla', 'num_heads': 2, 'use_short_conv': True},
    'deltanet': {'name': 'deltanet', 'num_heads': 2},
    'gated_deltanet': {'name': 'gated_deltanet', 'num_heads': 2, 'head_dim': 8},
    'attention': {'name': 'attention', 'num_heads': 4, 'num_kv_heads': 2},
}
TOL = dict(atol=2e-5, rtol=1e-4)


def _mixer(name: str, seed: int = 0, **options):
    torch.manual_seed(seed)
    mixer = build_mixer({**SPECS[name], **options}, hidden_size=HIDDEN, layer_idx=0)
    with torch.no_grad():                       # move every weight off its initial value
        for parameter in mixer.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return mixer


@pytest.mark.parametrize('name', SPECS)
def test_forward_backward(plugin_manager, name):
    mixer = _mixer(name)
    x = torch.randn(2, 40, HIDDEN, requires_grad=True)
    o, attentions, cache = mixer(x)
    assert o.shape == x.shape and attentions is None and cache is None
    assert torch.isfinite(o).all()
    o.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for parameter_name, parameter in mixer.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
    # causality: changing the last token changes no earlier output
    x2 = x.detach().clone()
    x2[:, -1] += 1.0
    with torch.no_grad():
        torch.testing.assert_close(mixer(x2)[0][:, :-1], o.detach()[:, :-1], **TOL)


def _left_padded_batch(lengths, total, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), total, HIDDEN, generator=g)
    mask = torch.zeros(len(lengths), total, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, total - n:] = 1
    garbage = 100 * torch.randn(x.shape, generator=g)                       # padding must not leak
    return torch.where(mask[..., None].bool(), x, garbage), mask


@pytest.mark.parametrize('name', SPECS)
def test_padded_equals_packed(plugin_manager, name):
    mixer = _mixer(name)
    lengths, total = [19, 7, 33], 33
    x, mask = _left_padded_batch(lengths, total)
    with torch.no_grad():
        padded, _, _ = mixer(x, attention_mask=mask)
        packed_input = torch.cat([x[b, total - n:] for b, n in enumerate(lengths)])[None]
        cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
        packed, _, _ = mixer(packed_input, attention_mask=torch.zeros_like(mask), cu_seqlens=cu_seqlens)  # cu_seqlens wins
        separate = [mixer(x[b:b + 1, total - n:])[0][0] for b, n in enumerate(lengths)]
    torch.testing.assert_close(packed[0], torch.cat(separate), **TOL)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(padded[b, total - n:], separate[b], **TOL)
        assert (padded[b, :total - n] == 0).all()


@pytest.mark.parametrize('name', SPECS)
def test_prefill_then_decoding_equals_full_forward(plugin_manager, name):
    mixer = _mixer(name)
    lengths, total, prefill = [30, 12], 30, 17
    x, mask = _left_padded_batch(lengths, total, seed=2)
    with torch.no_grad():
        full, _, _ = mixer(x, attention_mask=mask)
        cache = Cache()
        first, _, cache = mixer(x[:, :prefill], attention_mask=mask[:, :prefill], past_key_values=cache, use_cache=True)
        steps = [first]
        for t in range(prefill, total):
            step, _, cache = mixer(x[:, t:t + 1], attention_mask=mask[:, :t + 1], past_key_values=cache, use_cache=True)
            steps.append(step)
    decoded = torch.cat(steps, dim=1)
    torch.testing.assert_close(decoded * mask[..., None], full * mask[..., None], **TOL)
    assert cache.get_seq_length(0) == total


@pytest.mark.parametrize('name', SPECS)
def test_continuing_in_chunks_equals_full_forward(plugin_manager, name):
    """Prefill, then several tokens at a time from the cache (no mask, no padding)."""
    mixer = _mixer(name)
    x = torch.randn(2, 26, HIDDEN)
    with torch.no_grad():
        full, _, _ = mixer(x)
        cache = Cache()
        pieces = [mixer(x[:, s:e], past_key_values=cache, use_cache=True)[0]
                  for s, e in ((0, 11), (11, 16), (16, 17), (17, 26))]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, **TOL)


FLA_LAYERS = ['gla', 'deltanet', 'gated_deltanet']
# fla's layers pick fused_recurrent kernels for T <= 64 and chunk kernels beyond (GatedDeltaNet: chunk
# whenever autograd is on). T = 72 reaches chunk_gla; DeltaNet stays at fused_recurrent because
# chunk_delta_rule refuses float32, which the interpreter needs (bf16 is wrong there).
KERNEL_SEQ_LEN = {'gla': 72, 'deltanet': 24, 'gated_deltanet': 24}
# Other options of fla's layers, each a different branch of the CPU path.
VARIANTS = {
    'gla': {'num_kv_heads': 1, 'clamp_min': -0.05, 'fuse_norm': False, 'use_short_conv': False},
    'deltanet': {'qk_norm': 'sum', 'qk_activation': 'relu', 'use_gate': True, 'allow_neg_eigval': True},
    'gated_deltanet': {'num_v_heads': 4, 'allow_neg_eigval': True, 'use_gate': False},
}


@pytest.mark.triton
@pytest.mark.parametrize('variant', [False, True], ids=['default', 'variant'])
@pytest.mark.parametrize('name', FLA_LAYERS)
def test_cpu_path_matches_fla_triton_kernels(plugin_manager, monkeypatch, name, variant):
    """Same weights, same input: our PyTorch path vs fla's forward with its Triton kernels."""
    mixer = _mixer(name, **(VARIANTS[name] if variant else {}))
    x = torch.randn(2, KERNEL_SEQ_LEN[name], HIDDEN, requires_grad=True)
    o_torch, _, _ = mixer(x)
    grads_torch = torch.autograd.grad(o_torch.square().sum(), [x, *mixer.parameters()])
    monkeypatch.setenv('RAMNET_FLA_BACKEND', 'triton')
    o_fla, _, _ = mixer(x)
    grads_fla = torch.autograd.grad(o_fla.square().sum(), [x, *mixer.parameters()])
    torch.testing.assert_close(o_torch, o_fla, atol=1e-4, rtol=1e-3)
    for got, want in zip(grads_torch, grads_fla):
        torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-3)


@pytest.mark.triton
@pytest.mark.parametrize('name', FLA_LAYERS)
def test_cpu_decoding_state_matches_fla_triton_kernels(plugin_manager, monkeypatch, name):
    """The cache our CPU path writes has fla's layout: fla's kernels can continue from it."""
    mixer = _mixer(name)
    x = torch.randn(2, 12, HIDDEN)
    with torch.no_grad():
        full, _, _ = mixer(x)
        cache = Cache()
        mixer(x[:, :9], past_key_values=cache, use_cache=True)                 # PyTorch prefill
        monkeypatch.setenv('RAMNET_FLA_BACKEND', 'triton')
        rest, _, _ = mixer(x[:, 9:], past_key_values=cache, use_cache=True)    # fla kernels continue
    torch.testing.assert_close(rest, full[:, 9:], atol=1e-4, rtol=1e-3)
