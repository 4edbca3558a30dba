"""`--diagnostics`: slot usage of RAM layers (`ram_slots`) and gradient norms (`grad_norms`)."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from ramnet_fla.layers import RAMAttention
from ramnet_fla.lm.diagnostics import SlotTally, build_diagnostics
from tests.lm.conftest import tiny_config


def test_slot_tally_matches_hand_counts():
    # 2 heads, M = 8; head 0 reads slots 0,0,1,1 (2 of 8 used, uniform over them), head 1 reads 5 four times
    slots = torch.tensor([[0, 5], [0, 5], [1, 5], [1, 5]]).view(1, 4, 2, 1)
    weights = torch.tensor([[0.5, 1.0], [0.25, 1.0], [0.5, 1.0], [0.25, 1.0]]).view(1, 4, 2, 1)
    gamma = torch.full((1, 4, 2), 2.0)
    tally = SlotTally(num_heads=2, num_slots=8)
    tally.add({'read_slots': slots, 'write_slots': slots, 'read_weights': weights, 'write_weights': weights,
               'gamma': gamma})
    out = tally.summary()
    assert out['tokens'] == 4 and out['num_slots'] == 8
    assert out['read']['used_share'] == [2 / 8, 1 / 8]
    assert out['read']['entropy_ratio'] == pytest.approx([math.log(2) / math.log(8), 0.0])
    assert out['read']['kl_uniform'] == pytest.approx([math.log(8) - math.log(2), math.log(8)])
    assert out['read']['topk_mass'] == pytest.approx([0.375, 1.0])
    # retention of the strongest write: (1 - w) ** gamma; w = 1 is clamped to 1 - 1e-6
    assert out['retention'] == pytest.approx([(0.25 + 0.5625) / 2, 1e-12], abs=1e-9)
    assert out['gamma']['p50'] == [2.0, 2.0]


def test_address_slots_applies_cape_and_gives_probabilities():
    torch.manual_seed(0)
    layer = RAMAttention(hidden_size=16, num_heads=2, num_factors=3, factor_dim=4, topk=4, cape_heads=[0])
    x = torch.randn(1, 1, 16).expand(2, 6, 16)              # the same token at every position
    found = layer.address_slots(x)
    assert found['read_slots'].shape == (2, 6, 2, 4) and found['gamma'].shape == (2, 6, 2)
    positions = torch.arange(6)[None, :, None]
    # head 1 has no CAPE: a constant token addresses constant slots; head 0 shifts them by the position
    assert torch.equal(found['write_slots'][:, :, 1], found['write_slots'][:, :1, 1].expand(2, 6, 4))
    assert torch.equal(found['write_slots'][:, :, 0], (found['write_slots'][:, :1, 0] + positions) % 64)
    mass = found['read_weights'].sum(-1)
    assert bool(((mass > 0) & (mass <= 1 + 1e-6)).all())
    with pytest.raises(ValueError, match='hidden_states'):
        layer.address_slots(torch.randn(2, 6, 8))


def test_training_logs_slot_usage_and_grad_norms(tmp_path, text_file, data_dir):
    from ramnet_fla.lm.train import train
    config = tiny_config(text_file, data_dir, str(tmp_path / 'out'), diagnostics=('ram_slots', 'grad_norms'),
                         log_every=2, steps=4)
    train(config)
    records = [json.loads(line) for line in open(os.path.join(config.out, 'metrics.jsonl'))]
    logged = [r for r in records if r['kind'] == 'train' and 'diagnostics' in r]
    assert [r['step'] for r in logged] == [2, 4]
    for record in logged:
        usage = record['diagnostics']['ram_slots']['layers.0']
        assert usage['tokens'] == 4 * 32 and usage['num_slots'] == 4 ** 3
        for kind in ('read', 'write'):
            assert len(usage[kind]['used_share']) == 2
            assert all(0 < s <= 1 for s in usage[kind]['used_share'])
            assert all(0 <= e <= 1 + 1e-9 for e in usage[kind]['entropy_ratio'])
        assert 'layers.0.attn.q_proj' in record['diagnostics']['grad_norms']
    final = [r for r in records if r['kind'] == 'eval' and r['final']][-1]
    assert final['diagnostics']['ram_slots']['layers.0']['tokens'] == 4 * 32       # 4 held-out windows


def test_slot_usage_needs_a_ram_layer(tmp_path, text_file, data_dir):
    from ramnet_fla.lm.train import train
    config = tiny_config(text_file, data_dir, str(tmp_path / 'out'), diagnostics=('ram_slots',),
                         mixers=({'name': 'gla', 'num_heads': 2},), steps=1)
    with pytest.raises(ValueError, match='needs a model with at least one RAM layer'):
        train(config)
    with pytest.raises(ValueError, match="unknown diagnostic"):
        build_diagnostics(['slots'], config)
