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
