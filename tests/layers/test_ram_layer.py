"""RAMAttention: wiring against the reference op, fla's layer contract (padding, packing, cache,
decoding), modes, and argument errors. All on the CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fla.models.utils import Cache

from ramnet_fla.layers import RAMAttention
from ramnet_fla.layers.ram import resolve_cape_heads
from ramnet_fla.ops.ram import RAMState, naive_recurrent_ram

HIDDEN = 32


def make_layer(seed=0, **kwargs):
    torch.manual_seed(seed)
    options = dict(hidden_size=HIDDEN, num_heads=2, num_factors=2, factor_dim=4, topk=3, layer_idx=0,
                   use_short_conv=False)
    options.update(kwargs)
    layer = RAMAttention(**options)
    with torch.no_grad():                          # break the symmetry of zero-initialised parameters
        layer.read_log_temperature.uniform_(-0.5, 0.5)
        layer.write_log_temperature.uniform_(-0.5, 0.5)
        layer.gamma_proj.bias.uniform_(-1, 1)
        layer.o_norm.weight.uniform_(0.5, 1.5)
        for name, p in layer.named_parameters():
            if 'conv1d' in name:
                p.normal_(0, 0.5)
    return layer


def reference_forward(layer, x):
    """The layer computed by hand around the reference op (no short conv), one batch."""
    H = layer.num_heads
    q = layer.q_proj(x).unflatten(-1, (H, -1)) / layer.read_log_temperature.exp()[:, None]
    k = layer.k_proj(x).unflatten(-1, (H, -1)) / layer.write_log_temperature.exp()[:, None]
    v = layer.v_proj(x).unflatten(-1, (H, -1))
    gamma = F.softplus(layer.gamma_proj(x))
    o, _ = naive_recurrent_ram(q, k, v, gamma, layer.num_factors, layer.topk, cape=layer.cape)
    g = layer.g_proj(x).unflatten(-1, (H, -1))
    normed = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + layer.norm_eps) * layer.o_norm.weight
    return layer.o_proj((normed * torch.sigmoid(g)).flatten(-2))


@pytest.mark.parametrize('mode', ['chunk', 'fused_recurrent'])
def test_forward_matches_reference_and_backward_reaches_every_parameter(mode):
    layer = make_layer(mode=mode, cape_heads=[0])
    x = torch.randn(2, 11, HIDDEN, requires_grad=True)
    o, attentions, cache = layer(x)
    assert attentions is None and cache is None
    assert o.shape == x.shape
    torch.testing.assert_close(o, reference_forward(layer, x), rtol=1e-5, atol=1e-5)
    o.pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got no gradient"
    assert x.grad.abs().sum() > 0


def test_chunk_equals_fused_recurrent_with_short_conv():
    chunk = make_layer(seed=1, use_short_conv=True, mode='chunk')
    recurrent = make_layer(seed=1, use_short_conv=True, mode='fused_recurrent')
    recurrent.load_state_dict(chunk.state_dict())
    x = torch.randn(3, 13, HIDDEN)
    torch.testing.assert_close(chunk(x)[0], recurrent(x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('use_short_conv', [False, True], ids=['noconv', 'conv'])
def test_padded_equals_packed_equals_separate(use_short_conv):
    layer = make_layer(seed=2, use_short_conv=use_short_conv)
    lengths = [9, 4, 6]
    T = max(lengths)
    sequences = [torch.randn(1, n, HIDDEN) for n in lengths]
    # left padding for the first two rows, right padding for the last
    padded = torch.full((3, T, HIDDEN), float('nan'))
    mask = torch.zeros(3, T, dtype=torch.long)
    padded[0] = sequences[0][0]
    mask[0] = 1
    padded[1, T - 4:] = sequences[1][0]
    mask[1, T - 4:] = 1
    padded[2, :6] = sequences[2][0]
    mask[2, :6] = 1
    padded = torch.where(mask[..., None].bool(), padded, torch.zeros(()))   # pads are zeros, not NaN...
    padded[1, 0] = 1e4                                                       # ...but arbitrary
    o_padded, _, _ = layer(padded, attention_mask=mask)
    packed = torch.cat(sequences, 1)
    cu_seqlens = torch.tensor([0, 9, 13, 19])
    o_packed, _, _ = layer(packed, cu_seqlens=cu_seqlens)
    separate = [layer(s)[0] for s in sequences]
    torch.testing.assert_close(o_packed, torch.cat(separate, 1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(o_padded[0], separate[0][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(o_padded[1, T - 4:], separate[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(o_padded[2, :6], separate[2][0], rtol=1e-5, atol=1e-5)
    assert (o_padded[mask == 0] == 0).all()
    # an explicit cu_seqlens wins over the mask
    bogus_mask = torch.zeros(1, packed.shape[1], dtype=torch.long)
    bogus_mask[0, -1] = 1
    o_both, _, _ = layer(packed, attention_mask=bogus_mask, cu_seqlens=cu_seqlens)
    torch.testing.assert_close(o_both, o_packed)


@pytest.mark.parametrize('use_short_conv', [False, True], ids=['noconv', 'conv'])
def test_prefill_then_decoding_with_left_padding_equals_full_forward(use_short_conv):
    layer = make_layer(seed=3, use_short_conv=use_short_conv, cape_heads=None).eval()
    B, prompt, new = 2, 7, 5
    x = torch.randn(B, prompt + new, HIDDEN)
    mask = torch.ones(B, prompt + new, dtype=torch.long)
    mask[1, :3] = 0                                           # the second prompt is left-padded by 3
    x[1, :3] = 0
    with torch.no_grad():
        full, _, _ = layer(x, attention_mask=mask)
        cache = Cache()
        out, _, cache = layer(x[:, :prompt], attention_mask=mask[:, :prompt], past_key_values=cache, use_cache=True)
        steps = [out]
        for t in range(prompt, prompt + new):
            out, _, cache = layer(x[:, t:t + 1], attention_mask=mask[:, :t + 1], past_key_values=cache, use_cache=True)
            steps.append(out)
    decoded = torch.cat(steps, 1)
    torch.testing.assert_close(decoded[mask.bool()], full[mask.bool()], rtol=1e-5, atol=1e-5)
    state = cache[0]['recurrent_state']
    assert isinstance(state, RAMState)
    assert state.position.tolist() == [prompt + new, prompt + new - 3]    # only real tokens count
    assert state.memory.shape == (B, 2, 16, HIDDEN // 2) and state.memory.dtype == torch.float32
    if use_short_conv:
        assert [c.shape for c in cache[0]['conv_state']] == [(B, 16, 4), (B, 16, 4), (B, HIDDEN, 4)]
    # beam-search style reordering turns the state into a plain tuple: the layer still reads it
    cache.reorder_cache(torch.tensor([1, 0]))
    with torch.no_grad():
        swapped, _, _ = layer(x[:, -1:].flip(0), past_key_values=cache, use_cache=True)
    assert torch.isfinite(swapped).all()


def test_temperatures_scale_the_logits():
    layer = make_layer(seed=4)
    x = torch.randn(1, 6, HIDDEN)
    base = layer(x)[0]
    with torch.no_grad():
        layer.write_log_temperature.add_(1.0)
    changed = layer(x)[0]
    assert not torch.allclose(base, changed)
    torch.testing.assert_close(changed, reference_forward(layer, x), rtol=1e-5, atol=1e-5)


def test_cape_heads_forms():
    assert resolve_cape_heads(None, 4) == [True, True, False, False]
    assert resolve_cape_heads(None, 3) == [True, False, False]
    assert resolve_cape_heads(True, 2) == [True, True]
    assert resolve_cape_heads(1, 3) == [True, False, False]
    assert resolve_cape_heads([2], 3) == [False, False, True]
    assert resolve_cape_heads([False, True], 2) == [False, True]
    with pytest.raises(ValueError, match='cape_heads'):
        resolve_cape_heads([5], 2)
    with pytest.raises(ValueError, match='cape_heads'):
        resolve_cape_heads([True], 2)
    with pytest.raises(TypeError, match='cape_heads'):
        resolve_cape_heads('all', 2)


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(hidden_size=30, num_heads=4), ValueError, 'divisible'),
    (dict(num_heads=0), ValueError, 'num_heads'),
    (dict(factor_dim=1), ValueError, 'factor_dim'),
    (dict(num_factors=2, factor_dim=2, topk=5), ValueError, 'topk'),
    (dict(topk=2.0), TypeError, 'topk'),
    (dict(mode='parallel'), ValueError, 'mode'),
    (dict(norm_eps=0), ValueError, 'norm_eps'),
    (dict(use_short_conv=True, conv_size=1), ValueError, 'conv_size'),
    (dict(cape_heads=7), ValueError, 'cape_heads'),
    (dict(layer_idx=-1), ValueError, 'layer_idx'),
])
def test_bad_arguments_are_named(kwargs, error, match):
    options = dict(hidden_size=HIDDEN, num_heads=2)
    options.update(kwargs)
    with pytest.raises(error, match=match):
        RAMAttention(**options)


def test_bad_inputs_are_named():
    layer = make_layer()
    with pytest.raises(ValueError, match='hidden_states'):
        layer(torch.randn(2, 3, HIDDEN + 1))
    with pytest.raises(ValueError, match='attention_mask'):
        layer(torch.randn(2, 3, HIDDEN), attention_mask=torch.ones(2, 3, 3))
    no_index = make_layer(layer_idx=None)
    with pytest.raises(ValueError, match='layer_idx'):
        no_index(torch.randn(1, 3, HIDDEN), past_key_values=Cache(), use_cache=True)


@pytest.mark.triton
def test_triton_path_matches_pytorch_path(monkeypatch):
    # the path CUDA takes (fla's Triton modules + the RAM Triton kernels), interpreted on the CPU
    layer = make_layer(seed=5, use_short_conv=True)
    x = torch.randn(2, 7, HIDDEN, requires_grad=True)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :2] = 0
    expected = layer(x, attention_mask=mask)[0]
    expected_grads = torch.autograd.grad(expected.pow(2).sum(), [x, *layer.parameters()])
    monkeypatch.setenv('RAMNET_FLA_BACKEND', 'triton')
    out = layer(x, attention_mask=mask)[0]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(out.pow(2).sum(), [x, *layer.parameters()])
    for g, r in zip(grads, expected_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)
    with torch.no_grad():                                     # prefill, then one decoding step
        cache = Cache()
        prefill, _, cache = layer(x[:, :6], attention_mask=mask[:, :6], past_key_values=cache, use_cache=True)
        step, _, cache = layer(x[:, 6:], attention_mask=mask, past_key_values=cache, use_cache=True)
    decoded = torch.cat([prefill, step], 1)
    torch.testing.assert_close(decoded[mask.bool()], expected[mask.bool()], rtol=1e-5, atol=1e-5)
