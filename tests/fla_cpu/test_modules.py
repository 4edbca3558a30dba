"""CPU paths of ramnet_fla.fla_cpu.modules against straightforward PyTorch, and against fla's Triton kernels
(under TRITON_INTERPRET=1 on the CPU, tiny sizes, marked `triton`)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fla.layers import DeltaNet, GatedDeltaNet, GatedLinearAttention
from fla.modules import FusedRMSNormGated as FlaFusedRMSNormGated
from fla.modules import GatedMLP as FlaGatedMLP
from fla.modules import RMSNorm as FlaRMSNorm
from fla.modules import ShortConvolution as FlaShortConvolution

from fla.modules.activations import logsigmoid as fla_logsigmoid
from fla.modules.activations import sigmoid as fla_sigmoid
from fla.modules.activations import swish as fla_swish

from ramnet_fla.fla_cpu.modules import (
    FusedRMSNormGated,
    GatedMLP,
    RMSNorm,
    ShortConvolution,
    causal_conv1d_torch,
    logsigmoid,
    make_cpu_capable,
    sigmoid,
    swish,
)


def reference_conv(x, weight, bias, lengths, initial_state, activation):
    """Loop over sequences and tokens: y[t] = act(b + sum_w weight[:, w] * ext[t + 1 + w]) on
    ext = (the W cached inputs, or zeros) ++ the sequence; the final state is ext's last W rows."""
    D, W = weight.shape
    outputs, finals, start = [], [], 0
    for n, length in enumerate(lengths):
        history = initial_state[n].T if initial_state is not None else x.new_zeros(W, D)
        ext = torch.cat([history, x[start:start + length]])                 # [W + L, D]
        for t in range(length):
            y = (weight.T * ext[t + 1:t + 1 + W]).sum(0)
            if bias is not None:
                y = y + bias
            outputs.append(F.silu(y) if activation else y)
        finals.append(ext[-W:].T)
        start += length
    return torch.stack(outputs) if outputs else x.new_zeros(0, D), torch.stack(finals)


def poisoned_params(module):
    # fresh random parameters (ShortConvolution starts with Conv1d's init; bias too)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p))
    return module


@pytest.mark.parametrize('activation', ['silu', None])
@pytest.mark.parametrize('bias', [False, True], ids=['nobias', 'bias'])
@pytest.mark.parametrize('lengths', [[7], [5, 1, 3, 0, 9]], ids=['single', 'packed'])
@pytest.mark.parametrize('with_state', [False, True], ids=['nostate', 'state'])
def test_causal_conv_matches_loop_reference(activation, bias, lengths, with_state):
    torch.manual_seed(1)
    D, W, N = 6, 4, len(lengths)
    total = sum(lengths)
    x = torch.randn(1, total, D, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(D, W, dtype=torch.float64, requires_grad=True)
    b = torch.randn(D, dtype=torch.float64, requires_grad=True) if bias else None
    state = torch.randn(N, D, W, dtype=torch.float64, requires_grad=True) if with_state else None
    cu_seqlens = torch.tensor([0] + lengths).cumsum(0) if N > 1 else None
    y, final = causal_conv1d_torch(x, weight, b, initial_state=state, output_final_state=True,
                                   activation=activation, cu_seqlens=cu_seqlens)
    ref_y, ref_final = reference_conv(x[0], weight, b, lengths, state, activation)
    torch.testing.assert_close(y[0], ref_y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, ref_final, rtol=1e-12, atol=1e-12)
    leaves = [t for t in (x, weight, b, state) if t is not None]
    dy, dfinal = torch.randn_like(y), torch.randn_like(final)
    grads = torch.autograd.grad((y * dy).sum() + (final * dfinal).sum(), leaves)
    ref_grads = torch.autograd.grad((ref_y * dy[0]).sum() + (ref_final * dfinal).sum(), leaves)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


def test_causal_conv_batched_equals_packed_and_residual():
    torch.manual_seed(2)
    B, T, D, W = 3, 5, 4, 3
    x, residual = torch.randn(B, T, D), torch.randn(B, T, D)
    weight, state = torch.randn(D, W), torch.randn(B, D, W)
    y, final = causal_conv1d_torch(x, weight, residual=residual, initial_state=state, output_final_state=True,
                                   activation='silu')
    packed, packed_final = causal_conv1d_torch(x.reshape(1, B * T, D), weight, initial_state=state,
                                               output_final_state=True, activation='silu',
                                               cu_seqlens=torch.arange(B + 1) * T)
    torch.testing.assert_close(y, packed.view(B, T, D) + residual)
    torch.testing.assert_close(final, packed_final)
    assert final.shape == (B, D, W)


def test_short_convolution_decoding_updates_cache_in_place():
    torch.manual_seed(3)
    conv = poisoned_params(ShortConvolution(8, 4, bias=True, activation='silu'))
    x = torch.randn(2, 9, 8)
    full, full_state = conv(x, output_final_state=True)
    with torch.no_grad():
        y, cache = conv(x[:, :5], output_final_state=True)
        steps = [y]
        for t in range(5, 9):
            before = cache
            y_t, cache = conv(x[:, t:t + 1], cache=cache, output_final_state=True)
            assert cache is before                                     # fla updates the cache in place
            steps.append(y_t)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cache, full_state)


def test_short_convolution_mask_zeroes_padded_inputs():
    torch.manual_seed(4)
    conv = poisoned_params(ShortConvolution(4, 3, activation=None))
    x = torch.randn(2, 6, 4)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    y, _ = conv(x.clone(), mask=mask)
    expected, _ = conv(x * mask[..., None])
    torch.testing.assert_close(y, expected)
    with pytest.raises(ValueError, match='mask'):
        conv(x[:1], mask=mask[:1], cu_seqlens=torch.tensor([0, 6]))
    with pytest.raises(ValueError, match=r'\[B, T, 4\]'):
        conv(torch.randn(2, 6, 5))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_rms_norm_matches_formula(dtype):
    torch.manual_seed(5)
    norm = poisoned_params(RMSNorm(16, eps=1e-5))
    x, residual = torch.randn(3, 5, 16, dtype=dtype), torch.randn(3, 5, 16, dtype=dtype)
    stream = x.float() + residual.float()
    expected = stream / torch.sqrt(stream.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    y = norm(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5)
                                           * norm.weight).to(dtype).float())
    y, res = norm(x, residual, prenorm=True)
    torch.testing.assert_close(y, expected.to(dtype))
    assert res.dtype == dtype
    torch.testing.assert_close(res, stream.to(dtype))
    y, res = norm(x, prenorm=True, residual_in_fp32=True)
    assert res.dtype == torch.float32
    torch.testing.assert_close(res, x.float())


@pytest.mark.parametrize('activation', ['swish', 'silu', 'sigmoid'])
def test_fused_rms_norm_gated_matches_formula(activation):
    torch.manual_seed(6)
    norm = poisoned_params(FusedRMSNormGated(8, eps=1e-6, activation=activation))
    x, g = torch.randn(4, 3, 8, dtype=torch.float64), torch.randn(4, 3, 8, dtype=torch.float64)
    normed = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight.double()
    gate = g * torch.sigmoid(g) if activation != 'sigmoid' else torch.sigmoid(g)
    torch.testing.assert_close(norm(x, g), normed * gate, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('hidden_act', ['swish', 'powlu'])
def test_gated_mlp_matches_formula(hidden_act):
    torch.manual_seed(7)
    mlp = GatedMLP(16, intermediate_size=24, hidden_act=hidden_act)
    x = torch.randn(2, 3, 16)
    gate, up = mlp.gate_proj(x), mlp.up_proj(x)
    if hidden_act == 'swish':
        act = F.silu(gate)
    else:
        powered = gate.clamp_min(1e-30) ** (mlp.powglu_power / (gate.clamp_min(0).sqrt() + 1))
        act = torch.where(gate > 0, powered, gate) * torch.sigmoid(gate)
    torch.testing.assert_close(mlp(x), mlp.down_proj(act * up))
    assert list(mlp.state_dict()) == list(FlaGatedMLP(16, intermediate_size=24, hidden_act=hidden_act).state_dict())


def test_activations_match_torch():
    x = torch.randn(3, 7, dtype=torch.bfloat16)
    assert swish(x).dtype == torch.bfloat16
    torch.testing.assert_close(swish(x), F.silu(x.float()).to(torch.bfloat16))
    torch.testing.assert_close(sigmoid(x), torch.sigmoid(x.float()).to(torch.bfloat16))
    torch.testing.assert_close(logsigmoid(x.float(), 4.0), F.logsigmoid(x.float()) / 4)


def test_make_cpu_capable_swaps_classes_and_keeps_weights():
    torch.manual_seed(8)
    layer = GatedLinearAttention(hidden_size=32, num_heads=2, use_short_conv=True, fuse_norm=False, layer_idx=0)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    assert layer.gate_fn is not swish
    assert make_cpu_capable(layer) is layer
    assert type(layer.q_conv1d) is ShortConvolution and type(layer.g_norm) is RMSNorm
    assert layer.gate_fn is swish
    after = layer.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    y, _ = layer.q_conv1d(torch.randn(1, 5, layer.key_dim))
    assert torch.isfinite(y).all()

    delta = make_cpu_capable(DeltaNet(hidden_size=32, num_heads=2, use_short_conv=True, use_gate=True))
    assert type(delta.o_norm) is FusedRMSNormGated and type(delta.k_conv1d) is ShortConvolution
    gated = make_cpu_capable(GatedDeltaNet(hidden_size=32, num_heads=2, head_dim=16, use_short_conv=True))
    assert type(gated.o_norm) is FusedRMSNormGated and type(gated.v_conv1d) is ShortConvolution

    class CustomNorm(FlaRMSNorm):                     # a subclass with its own forward is left alone
        def forward(self, x):
            return x
    tree = torch.nn.Sequential(CustomNorm(4), FlaFusedRMSNormGated(4), FlaShortConvolution(4, 2))
    make_cpu_capable(tree)
    assert type(tree[0]) is CustomNorm
    assert type(tree[1]) is FusedRMSNormGated and type(tree[2]) is ShortConvolution
    with pytest.raises(TypeError, match='nn.Module'):
        make_cpu_capable(object())


# ---- against fla's Triton kernels (interpreted on the CPU: tiny sizes, float32) ----

def fla_forward(module, *args, **kwargs):
    """Run fla's own forward (the Triton path) on our subclass instance."""
    fla_class = next(c for c in type(module).__mro__[1:] if c.__module__.startswith('fla.'))
    return fla_class.forward(module, *args, **kwargs)


@pytest.mark.triton
@pytest.mark.parametrize('packed', [False, True], ids=['batched', 'varlen'])
def test_short_convolution_matches_fla_triton(packed):
    torch.manual_seed(9)
    conv = poisoned_params(ShortConvolution(8, 4, bias=True, activation='silu'))
    if packed:
        x, cu_seqlens, N = torch.randn(1, 9, 8), torch.tensor([0, 2, 9], dtype=torch.int32), 2
    else:
        x, cu_seqlens, N = torch.randn(2, 5, 8), None, 2
    cache = torch.randn(N, 8, 4)
    x_ours, x_fla = x.clone().requires_grad_(), x.clone().requires_grad_()
    y, final = conv(x_ours, cache=cache, output_final_state=True, cu_seqlens=cu_seqlens)
    ref_y, ref_final = fla_forward(conv, x_fla, cache=cache, output_final_state=True, cu_seqlens=cu_seqlens)
    torch.testing.assert_close(y, ref_y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final, ref_final, rtol=1e-5, atol=1e-5)
    # gradients without a cache (fla's initial-state gradient kernel fails under the interpreter)
    y, _ = conv(x_ours, cu_seqlens=cu_seqlens)
    ref_y, _ = fla_forward(conv, x_fla, cu_seqlens=cu_seqlens)
    dy = torch.randn_like(y)
    (y * dy).sum().backward()
    (ref_y * dy).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_fla.grad, rtol=1e-4, atol=1e-4)
    with torch.no_grad():                                # single-token step: fla's update kernel
        step = torch.randn(2, 1, 8)
        mine, theirs = cache.clone(), cache.clone()
        y, _ = conv(step, cache=mine, output_final_state=True)
        ref_y, _ = fla_forward(conv, step, cache=theirs, output_final_state=True)
    torch.testing.assert_close(y, ref_y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mine, theirs)


@pytest.mark.triton
def test_norms_and_mlp_match_fla_triton():
    torch.manual_seed(10)
    x, g, residual = torch.randn(2, 3, 16), torch.randn(2, 3, 16), torch.randn(2, 3, 16)
    norm = poisoned_params(RMSNorm(16))
    for ours, theirs in zip(norm(x, residual, prenorm=True), fla_forward(norm, x, residual, prenorm=True)):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    for activation in ('swish', 'sigmoid'):
        gated = poisoned_params(FusedRMSNormGated(16, activation=activation))
        torch.testing.assert_close(gated(x, g), fla_forward(gated, x, g), rtol=1e-5, atol=1e-5)
    mlp = GatedMLP(16, intermediate_size=32, fuse_swiglu=True)
    torch.testing.assert_close(mlp(x), fla_forward(mlp, x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(swish(x), fla_swish(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sigmoid(x), fla_sigmoid(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logsigmoid(x, 2.0), fla_logsigmoid(x, 2.0), rtol=1e-5, atol=1e-5)
