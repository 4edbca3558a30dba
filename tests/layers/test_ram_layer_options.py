"""RAMAttention's address-prior options: tied address projections and the 'shift' convolution init."""

from __future__ import annotations

import pytest
import torch

from ramnet_fla import RAMNetConfig, RAMNetForCausalLM
from ramnet_fla.layers import RAMAttention

HIDDEN, HEADS = 32, 2


def test_tied_projections_drop_k_proj_and_equal_an_untied_layer_with_equal_weights():
    torch.manual_seed(0)
    tied = RAMAttention(HIDDEN, num_heads=HEADS, num_factors=3, factor_dim=4, topk=4, tie_address_projections=True)
    untied = RAMAttention(HIDDEN, num_heads=HEADS, num_factors=3, factor_dim=4, topk=4)
    assert not hasattr(tied, 'k_proj')
    n_tied = sum(p.numel() for p in tied.parameters())
    n_untied = sum(p.numel() for p in untied.parameters())
    assert n_untied - n_tied == HEADS * 3 * 4 * HIDDEN
    state = tied.state_dict()
    state['k_proj.weight'] = state['q_proj.weight'].clone()
    untied.load_state_dict(state)
    x = torch.randn(2, 9, HIDDEN)
    torch.testing.assert_close(tied(x)[0], untied(x)[0], rtol=0, atol=0)


def test_shift_init_sets_identity_read_and_delayed_write_convolutions():
    layer = RAMAttention(HIDDEN, num_heads=HEADS, use_short_conv=True, conv_size=4, address_conv_init='shift')
    expected_read = torch.tensor([0., 0., 0., 1.])
    expected_write = torch.tensor([0., 0., 1., 0.])
    assert torch.equal(layer.q_conv1d.weight[:, 0], expected_read.expand_as(layer.q_conv1d.weight[:, 0]))
    assert torch.equal(layer.k_conv1d.weight[:, 0], expected_write.expand_as(layer.k_conv1d.weight[:, 0]))
    # the value convolution keeps its ordinary random initialisation
    assert layer.v_conv1d.weight.std() > 0


def test_tie_and_shift_make_token_t_write_where_token_t_plus_1_would_read():
    torch.manual_seed(1)
    layer = RAMAttention(HIDDEN, num_heads=HEADS, use_short_conv=True, tie_address_projections=True,
                         address_conv_init='shift')
    x = torch.randn(1, 12, HIDDEN)
    logits = layer.q_proj(x)
    read, _ = layer.q_conv1d(logits)
    write, _ = layer.k_conv1d(logits)
    # write logits of token t+1 are the read logits of token t: the value after a key lands where the key reads
    torch.testing.assert_close(write[:, 1:], read[:, :-1])


def test_shift_init_survives_the_model_initialisation_and_a_save_load_round_trip(tmp_path):
    spec = {'name': 'ram', 'num_heads': HEADS, 'use_short_conv': True, 'tie_address_projections': True,
            'address_conv_init': 'shift'}
    model = RAMNetForCausalLM(RAMNetConfig(vocab_size=64, hidden_size=HIDDEN, num_hidden_layers=2, mixers=[spec]))
    conv = model.model.layers[0].attn.k_conv1d.weight
    assert torch.equal(conv[:, 0, -2], torch.ones(conv.shape[0])) and conv[:, 0, -1].abs().sum() == 0
    model.save_pretrained(tmp_path)
    again = RAMNetForCausalLM.from_pretrained(tmp_path)
    x = torch.randint(0, 64, (2, 10))
    torch.testing.assert_close(again(x).logits, model(x).logits)


@pytest.mark.parametrize('kwargs, error, match', [
    ({'address_conv_init': 'shift'}, ValueError, 'use_short_conv'),
    ({'address_conv_init': 'delay', 'use_short_conv': True}, ValueError, 'address_conv_init'),
    ({'tie_address_projections': 'yes'}, TypeError, 'tie_address_projections'),
], ids=['shift-without-conv', 'unknown-init', 'tie-not-bool'])
def test_bad_options_are_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        RAMAttention(HIDDEN, num_heads=HEADS, **kwargs)
