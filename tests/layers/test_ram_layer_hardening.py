"""Hardening of the layers (issue 10): attention masks are validated and tied logits decode exactly."""

from __future__ import annotations

import pytest
import torch
from fla.models.utils import Cache

from ramnet_fla.layers import RAMAttention
from ramnet_fla.plugin import create_plugin_manager, use_plugin_manager

BUILTIN_MIXERS = ('ram', 'gla', 'deltanet', 'gated_deltanet', 'attention')


def _layer(name: str) -> torch.nn.Module:
    with use_plugin_manager(create_plugin_manager(entry_points=False)) as manager:
        options = {'ram': dict(num_factors=3, factor_dim=4, topk=4), 'gated_deltanet': dict(head_dim=16)}
        return manager.mixers()[name].factory(hidden_size=32, layer_idx=0, num_heads=2, **options.get(name, {}))


BAD_MASKS = {
    'shorter than the sequence': torch.ones(2, 6, dtype=torch.long),
    'wrong batch size': torch.ones(3, 8, dtype=torch.long),
    'not 0/1': torch.tensor([[1] * 8, [2] * 8]),
    'three dims': torch.ones(2, 8, 1, dtype=torch.long),
    'float values': torch.full((2, 8), 0.5),
}


@pytest.mark.parametrize('name', BUILTIN_MIXERS)
@pytest.mark.parametrize('case', BAD_MASKS)
def test_bad_attention_masks_are_rejected_by_name(name, case):
    layer = _layer(name)
    with pytest.raises(ValueError, match='attention_mask') as info:
        layer(torch.randn(2, 8, 32), attention_mask=BAD_MASKS[case])
    assert 'cu_seqlens' not in str(info.value)


@pytest.mark.parametrize('name', BUILTIN_MIXERS)
def test_a_bool_mask_is_a_valid_mask(name):
    layer = _layer(name)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, :3] = False                                   # left padding
    o, _, _ = layer(torch.randn(2, 8, 32), attention_mask=mask)
    assert o.shape == (2, 8, 32) and torch.isfinite(o).all()


def test_tied_zero_logits_decode_exactly_as_the_full_forward():
    # tie_address_projections + a 'shift' address convolution make the first token's write logits
    # exactly zero: every slot ties, and every path must pick the same ones
    torch.manual_seed(0)
    layer = RAMAttention(hidden_size=32, num_heads=2, num_factors=3, factor_dim=4, topk=4, use_short_conv=True,
                         address_conv_init='shift', tie_address_projections=True, layer_idx=0).eval()
    x = torch.randn(1, 64, 32)
    with torch.no_grad():
        full, _, _ = layer(x)
        cache = Cache()
        steps = [layer(x[:, t:t + 1], past_key_values=cache, use_cache=True)[0] for t in range(64)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-4)
