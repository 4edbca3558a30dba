"""Hardening of RAMNetConfig (issue 10): sizes that would build a broken model are refused by name."""

from __future__ import annotations

import pytest

from ramnet_fla import RAMNetConfig


@pytest.mark.parametrize('name,value', [('hidden_ratio', 0), ('hidden_ratio', -2), ('intermediate_size', 0),
                                        ('vocab_size', 0), ('num_hidden_layers', 0), ('hidden_size', -8)])
def test_non_positive_sizes_are_rejected_by_name(name, value):
    with pytest.raises(ValueError, match=name):
        RAMNetConfig(**{name: value})


def test_more_mixers_than_layers_is_an_error():
    with pytest.raises(ValueError, match='num_hidden_layers') as info:
        RAMNetConfig(num_hidden_layers=2, mixers=['ram', 'gla', 'attention'])
    assert 'mixers' in str(info.value)


def test_a_shorter_mixer_list_still_repeats():
    config = RAMNetConfig(num_hidden_layers=4, mixers=['ram', 'gla'])
    assert config.layer_mixer_names == ['ram', 'gla', 'ram', 'gla']
