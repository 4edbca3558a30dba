"""RAMNetConfig's other knobs (issue 10, beyond the listed cases): each bad value is refused by name."""

from __future__ import annotations

import math

import pytest

from ramnet_fla import RAMNetConfig


@pytest.mark.parametrize('name,value,error', [
    ('norm_eps', 0, ValueError), ('norm_eps', -1e-6, ValueError), ('norm_eps', math.nan, ValueError),
    ('norm_eps', '1e-6', TypeError), ('initializer_range', 0, ValueError), ('initializer_range', math.inf, ValueError),
    ('hidden_ratio', math.nan, ValueError), ('hidden_ratio', '4', TypeError), ('intermediate_size', 2.5, TypeError),
    ('max_position_embeddings', 0, ValueError), ('pad_token_id', 64, ValueError), ('pad_token_id', -1, ValueError),
    ('bos_token_id', -1, ValueError), ('use_cache', 'yes', TypeError), ('fuse_norm', 1, TypeError),
], ids=lambda v: repr(v) if not isinstance(v, type) else v.__name__)
def test_bad_knobs_are_rejected_by_name(name, value, error):
    with pytest.raises(error, match=name):
        RAMNetConfig(vocab_size=64, **{name: value})


def test_valid_knobs_are_kept():
    config = RAMNetConfig(vocab_size=64, hidden_ratio=2.5, intermediate_size=None, norm_eps=1e-5, pad_token_id=0,
                          eos_token_id=[2, 3], num_hidden_layers=2, mixers=['ram', 'gla'])
    assert (config.hidden_ratio, config.pad_token_id, config.layer_mixer_names) == (2.5, 0, ['ram', 'gla'])


def test_a_config_round_trips_through_a_dict():
    config = RAMNetConfig(vocab_size=64, num_hidden_layers=3, mixers=['ram', 'attention'])
    again = RAMNetConfig.from_dict(config.to_dict())
    assert again.layer_mixer_names == ['ram', 'attention', 'ram']


def test_configs_saved_before_the_ram_default_change_keep_their_layers(tmp_path):
    from ramnet_fla import RAMNetConfig, RAMNetForCausalLM
    config = RAMNetConfig(mixers=['ram', {'name': 'ram', 'num_heads': 2, 'use_short_conv': True}, 'gla'],
                          vocab_size=32, hidden_size=16, num_hidden_layers=3)
    saved = config.to_dict()
    assert saved['ram_defaults'] == 2
    assert RAMNetConfig.from_dict(saved).mixers == config.mixers              # today's configs are unchanged
    saved.pop('ram_defaults')                                                 # as written before the change
    old = RAMNetConfig.from_dict(saved)
    assert old.mixers[0] == {'name': 'ram', 'use_short_conv': False, 'self_read_init': False}
    assert old.mixers[1] == {'name': 'ram', 'num_heads': 2, 'use_short_conv': True, 'self_read_init': False}
    assert old.mixers[2] == 'gla'
    model = RAMNetForCausalLM(old)
    assert not model.model.layers[0].attn.use_short_conv and model.model.layers[1].attn.use_short_conv
    old.save_pretrained(tmp_path)                                             # and stays so when saved again
    assert RAMNetConfig.from_pretrained(tmp_path).mixers == old.mixers
    with pytest.raises(ValueError, match='ram_defaults'):
        RAMNetConfig(ram_defaults=7)
