"""RAMAttention under bf16: float32 address logits pick the slots fp32 picks (`float32_address_projections`)."""

from __future__ import annotations

import pytest
import torch

import ramnet_fla.layers.ram as ram_layer
from ramnet_fla.layers import RAMAttention
from ramnet_fla.ops.ram import ram_address

SIZES = dict(hidden_size=64, num_heads=4, head_dim=16, num_factors=5, factor_dim=4, topk=8)


@pytest.fixture
def captured_addresses(monkeypatch):
    """Records (read logits, write logits, read slots, write slots) of every chunk_ram call of the layer."""
    calls = []
    chunk_ram = ram_layer.chunk_ram

    def spy(q, k, v, gamma, num_factors, topk, **kwargs):
        calls.append((q.detach(), k.detach(), ram_address(q.detach(), num_factors, topk)[0],
                      ram_address(k.detach(), num_factors, topk)[0]))
        return chunk_ram(q, k, v, gamma, num_factors=num_factors, topk=topk, **kwargs)

    monkeypatch.setattr(ram_layer, 'chunk_ram', spy)
    return calls


def same_slots(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of (token, head) addresses [..., K] that choose the same K slots."""
    return (a.sort(-1).values == b.sort(-1).values).all(-1).float().mean().item()


def fp32_and_bf16_runs(layer, x):
    """(output, parameter gradients) in float32 and under bf16 autocast, for the loss sum(o**2)."""
    params = list(layer.parameters())
    o32 = layer(x)[0]
    g32 = torch.autograd.grad(o32.square().sum(), params)
    with torch.autocast('cpu', torch.bfloat16):
        o16 = layer(x)[0]
    g16 = torch.autograd.grad(o16.float().square().sum(), params)
    return (o32, g32), (o16, g16)


@pytest.mark.parametrize('use_short_conv', [False, True], ids=['plain', 'short_conv'])
def test_bf16_autocast_picks_the_fp32_slots(captured_addresses, use_short_conv):
    torch.manual_seed(0)
    layer = RAMAttention(**SIZES, use_short_conv=use_short_conv)
    with torch.no_grad():
        layer.read_log_temperature.uniform_(-0.5, 0.5)
        layer.write_log_temperature.uniform_(-0.5, 0.5)
    x = torch.randn(2, 64, 64)
    (o32, g32), (o16, g16) = fp32_and_bf16_runs(layer, x)
    (_, _, read32, write32), (q16, k16, read16, write16) = captured_addresses
    assert q16.dtype == k16.dtype == torch.float32
    assert same_slots(read32, read16) >= 0.999 and same_slots(write32, write16) >= 0.999
    assert o16.dtype == torch.bfloat16                       # the output keeps the autocast dtype
    relative = [((a - b.float()).norm() / a.norm()).item() for a, b in zip(g32, g16)]
    assert max(relative) < 0.1, relative                      # bf16-sized, not the slot changes' O(1)


def test_option_off_rounds_the_logits_to_bf16_as_before(captured_addresses):
    torch.manual_seed(0)
    layer = RAMAttention(**SIZES, float32_address_projections=False)
    x = torch.randn(2, 64, 64)
    (_, g32), (_, g16) = fp32_and_bf16_runs(layer, x)
    (_, _, read32, write32), (q16, k16, read16, write16) = captured_addresses
    # temperatures start at 1, so the logits are exactly the bf16 projections
    assert torch.equal(q16, q16.bfloat16().float()) and torch.equal(k16, k16.bfloat16().float())
    assert min(same_slots(read32, read16), same_slots(write32, write16)) < 0.999
    relative = [((a - b.float()).norm() / a.norm()).item() for a, b in zip(g32, g16)]
    assert max(relative) > 0.1, relative


@pytest.mark.parametrize('cast', ['to_bfloat16', 'half'])
def test_model_cast_keeps_the_address_parameters_float32(cast):
    layer = RAMAttention(**SIZES, use_short_conv=True)
    (layer.q_proj.weight * 1).sum().backward()                 # a gradient is cast along with its parameter
    layer = layer.to(torch.bfloat16) if cast == 'to_bfloat16' else layer.half()
    low = torch.bfloat16 if cast == 'to_bfloat16' else torch.float16
    address = {name for name, p in layer.named_parameters() if any(p is a for a in layer.address_parameters())}
    assert address == {'q_proj.weight', 'k_proj.weight', 'q_conv1d.weight', 'k_conv1d.weight',
                       'read_log_temperature', 'write_log_temperature'}
    for name, p in layer.named_parameters():
        assert p.dtype == (torch.float32 if name in address else low), name
    assert layer.q_proj.weight.grad.dtype == torch.float32
    x = torch.randn(2, 16, 64, dtype=low)
    o = layer(x)[0]
    assert o.dtype == low and torch.isfinite(o.float()).all()
    o.float().sum().backward()                                 # float32 grads into float32 parameters
    assert layer.k_proj.weight.grad.dtype == torch.float32 and layer.v_proj.weight.grad.dtype == low
    # casts to another float32-or-wider dtype still apply
    assert layer.double().q_proj.weight.dtype == torch.float64


def test_model_cast_with_the_option_off_casts_everything():
    layer = RAMAttention(**SIZES, float32_address_projections=False).to(torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in layer.parameters())
    assert layer(torch.randn(1, 8, 64, dtype=torch.bfloat16))[0].dtype == torch.bfloat16


def test_tied_projections_stay_float32_and_agree(captured_addresses):
    torch.manual_seed(1)
    layer = RAMAttention(**SIZES, tie_address_projections=True, use_short_conv=False).to(torch.bfloat16)
    assert layer.q_proj.weight.dtype == torch.float32
    x = torch.randn(1, 32, 64).bfloat16()
    layer(x)
    (q, k, read, write), = captured_addresses
    assert torch.equal(q, k) and torch.equal(read, write)


def test_model_to_bfloat16_keeps_address_projections_float32():
    from ramnet_fla import RAMNetConfig, RAMNetForCausalLM
    from ramnet_fla.plugin import create_plugin_manager, use_plugin_manager

    with use_plugin_manager(create_plugin_manager(entry_points=False)):
        config = RAMNetConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, hidden_ratio=2,
                              mixers=[{'name': 'ram', 'num_heads': 2, 'num_factors': 2, 'factor_dim': 4, 'topk': 3}])
        model = RAMNetForCausalLM(config).to(torch.bfloat16)
    attn = model.model.layers[0].attn
    assert attn.q_proj.weight.dtype == attn.k_proj.weight.dtype == torch.float32
    assert attn.v_proj.weight.dtype == model.lm_head.weight.dtype == torch.bfloat16
    logits = model(input_ids=torch.randint(0, 64, (2, 8))).logits
    assert torch.isfinite(logits.float()).all()


def test_option_must_be_a_bool():
    with pytest.raises(TypeError, match='float32_address_projections'):
        RAMAttention(**SIZES, float32_address_projections='yes')
