"""RAMAttention's address options: tied address projections, the 'shift' convolution init, address
normalisation, the initial temperature, the decay bias and the value skip."""

from __future__ import annotations

import math

import pytest
import torch
from fla.models.utils import Cache

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


def test_tied_identity_init_reads_the_slots_it_writes():
    torch.manual_seed(4)
    layer = RAMAttention(HIDDEN, num_heads=HEADS, num_factors=3, factor_dim=4, topk=4, use_short_conv=True,
                         tie_address_projections=True, address_conv_init='identity', cape_heads=False)
    found = layer.address_slots(torch.randn(2, 9, HIDDEN))
    assert torch.equal(found['read_slots'], found['write_slots'])
    assert layer.q_conv1d.weight[:, 0, -1].eq(1).all() and layer.q_conv1d.weight[:, 0, :-1].eq(0).all()
    assert torch.equal(layer.q_conv1d.weight, layer.k_conv1d.weight)


def test_self_read_init_survives_the_model_initialisation_and_reads_the_written_slots():
    spec = {'name': 'ram', 'num_heads': HEADS, 'num_factors': 3, 'factor_dim': 4, 'topk': 4, 'use_short_conv': True,
            'self_read_init': True, 'cape_heads': 1}
    model = RAMNetForCausalLM(RAMNetConfig(vocab_size=64, hidden_size=HIDDEN, num_hidden_layers=2, mixers=[spec]))
    for block in model.model.layers:
        layer = block.attn
        assert layer.address_conv_init == 'identity' and hasattr(layer, 'k_proj')
        assert torch.equal(layer.k_proj.weight, layer.q_proj.weight)
        assert layer.k_proj.weight is not layer.q_proj.weight                    # separate parameters
        found = layer.address_slots(torch.randn(2, 7, HIDDEN))
        assert torch.equal(found['read_slots'], found['write_slots'])            # CAPE shifts both alike
    assert not torch.equal(model.model.layers[0].attn.q_proj.weight, model.model.layers[1].attn.q_proj.weight)
    plain = RAMAttention(HIDDEN, num_heads=HEADS, self_read_init=True, use_short_conv=False)   # projections only
    assert plain.address_conv_init is None and torch.equal(plain.k_proj.weight, plain.q_proj.weight)


@pytest.mark.parametrize('prior', [dict(tie_address_projections=True, address_conv_init='shift'),
                                   dict(tie_address_projections=True), dict(address_conv_init='shift')],
                         ids=['tie-and-shift', 'tie', 'shift'])
def test_the_recall_prior_turns_self_read_init_off(prior):
    # MQAR's address prior builds the layer it built before self_read_init existed
    layers = []
    for explicit in ({}, {'self_read_init': False}):
        torch.manual_seed(5)
        layers.append(RAMAttention(HIDDEN, num_heads=HEADS, use_short_conv=True, **prior, **explicit))
    assert layers[0].self_read_init is False
    assert all(torch.equal(a, b) for a, b in zip(layers[0].state_dict().values(), layers[1].state_dict().values()))


def test_address_norm_makes_the_addresses_independent_of_the_projection_scale():
    torch.manual_seed(2)
    layer = RAMAttention(HIDDEN, num_heads=HEADS, num_factors=3, factor_dim=4, topk=4, address_norm=True,
                         address_temperature=0.5, use_short_conv=False)
    x = torch.randn(2, 9, HIDDEN)
    before = layer.address_slots(x)
    with torch.no_grad():
        layer.q_proj.weight.mul_(0.01)
        layer.k_proj.weight.mul_(0.01)
    after = layer.address_slots(x)
    for key in ('read_slots', 'write_slots'):
        assert torch.equal(before[key], after[key])
    torch.testing.assert_close(before['read_weights'], after['read_weights'], rtol=1e-4, atol=1e-6)
    # the logits the op sees have RMS 1 / temperature per head
    q, k = layer._head_logits(layer.q_proj(x), layer.k_proj(x))
    torch.testing.assert_close(q.square().mean(-1).sqrt(), torch.full(q.shape[:-1], 2.0), rtol=1e-3, atol=1e-3)


def test_address_norm_decodes_as_its_full_forward():
    torch.manual_seed(3)
    layer = RAMAttention(HIDDEN, num_heads=HEADS, num_factors=2, factor_dim=4, topk=3, use_short_conv=True,
                         address_norm=True, address_temperature=0.3, layer_idx=0).eval()
    x = torch.randn(2, 10, HIDDEN)
    with torch.no_grad():
        full = layer(x)[0]
        cache = Cache()
        out, _, cache = layer(x[:, :4], past_key_values=cache, use_cache=True)
        steps = [out]
        for t in range(4, 10):
            out, _, cache = layer(x[:, t:t + 1], past_key_values=cache, use_cache=True)
            steps.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_temperature_and_decay_bias_inits_survive_the_model_initialisation():
    spec = {'name': 'ram', 'num_heads': HEADS, 'address_temperature': 0.25, 'decay_bias_init': 2.0}
    model = RAMNetForCausalLM(RAMNetConfig(vocab_size=64, hidden_size=HIDDEN, num_hidden_layers=1, mixers=[spec]))
    layer = model.model.layers[0].attn
    assert torch.allclose(layer.read_log_temperature, torch.full((HEADS,), math.log(0.25)))
    assert torch.allclose(layer.write_log_temperature, torch.full((HEADS,), math.log(0.25)))
    assert torch.equal(layer.gamma_proj.bias, torch.full((HEADS,), 2.0))
    with torch.no_grad():
        layer.read_log_temperature.zero_()
    layer.reset_parameters()
    assert torch.allclose(layer.read_log_temperature, torch.full((HEADS,), math.log(0.25)))
    # without decay_bias_init the model's own initialisation (fla's: zero bias) stays
    plain = RAMNetForCausalLM(RAMNetConfig(vocab_size=64, hidden_size=HIDDEN, num_hidden_layers=1,
                                           mixers=[{'name': 'ram', 'num_heads': HEADS}]))
    assert torch.equal(plain.model.layers[0].attn.gamma_proj.bias, torch.zeros(HEADS))


def _norm_inputs(layer, x):
    """The read o (+ D v) that reaches `layer.o_norm` for input x: [B, T, H, V]."""
    seen = []
    handle = layer.o_norm.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        layer(x)
    handle.remove()
    return seen[0]


def test_value_skip_adds_d_times_the_tokens_own_value_before_the_norm():
    torch.manual_seed(4)
    plain = RAMAttention(HIDDEN, num_heads=HEADS, num_factors=2, factor_dim=4, topk=3, use_short_conv=True)
    skip = RAMAttention(HIDDEN, num_heads=HEADS, num_factors=2, factor_dim=4, topk=3, use_short_conv=True,
                        value_skip=True)
    assert torch.equal(skip.value_skip, torch.zeros(HIDDEN))
    missing, unexpected = skip.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ['value_skip'] and not unexpected
    x = torch.randn(2, 7, HIDDEN)
    # D = 0: the same layer
    torch.testing.assert_close(skip(x)[0], plain(x)[0], rtol=0, atol=0)
    with torch.no_grad():
        skip.value_skip.copy_(torch.randn(HIDDEN))
        v, _ = plain.v_conv1d(plain.v_proj(x))
    d = skip.value_skip.detach().view(HEADS, -1)
    expected = _norm_inputs(plain, x) + v.view(2, 7, HEADS, -1) * d
    torch.testing.assert_close(_norm_inputs(skip, x), expected, rtol=1e-6, atol=1e-6)


def test_value_skip_decodes_as_its_full_forward_and_survives_the_model_initialisation():
    torch.manual_seed(5)
    layer = RAMAttention(HIDDEN, num_heads=HEADS, num_factors=2, factor_dim=4, topk=3, use_short_conv=True,
                         value_skip=True, layer_idx=0).eval()
    with torch.no_grad():
        layer.value_skip.normal_()
    x = torch.randn(2, 9, HIDDEN)
    with torch.no_grad():
        full = layer(x)[0]
        cache = Cache()
        steps = [layer(x[:, :3], past_key_values=cache, use_cache=True)[0]]
        for t in range(3, 9):
            steps.append(layer(x[:, t:t + 1], past_key_values=cache, use_cache=True)[0])
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)
    spec = {'name': 'ram', 'num_heads': HEADS, 'value_skip': True}
    model = RAMNetForCausalLM(RAMNetConfig(vocab_size=64, hidden_size=HIDDEN, num_hidden_layers=1, mixers=[spec]))
    attn = model.model.layers[0].attn
    assert torch.equal(attn.value_skip, torch.zeros(HIDDEN))
    with torch.no_grad():
        attn.value_skip.fill_(1.0)
    attn.reset_parameters()
    assert torch.equal(attn.value_skip, torch.zeros(HIDDEN))
    assert attn.value_skip.ndim == 1          # a vector: the LM optimiser's weight decay leaves it alone


@pytest.mark.parametrize('kwargs, error, match', [
    ({'address_conv_init': 'shift', 'use_short_conv': False}, ValueError, 'use_short_conv'),
    ({'address_conv_init': 'delay', 'use_short_conv': True}, ValueError, 'address_conv_init'),
    ({'tie_address_projections': 'yes'}, TypeError, 'tie_address_projections'),
    ({'address_norm': 1}, TypeError, 'address_norm'),
    ({'self_read_init': 1}, TypeError, 'self_read_init'),
    ({'self_read_init': True, 'use_short_conv': True, 'address_conv_init': 'shift'}, ValueError, 'choose one'),
    ({'address_temperature': 0}, ValueError, 'address_temperature'),
    ({'address_temperature': float('inf')}, ValueError, 'address_temperature'),
    ({'decay_bias_init': float('nan')}, ValueError, 'decay_bias_init'),
    ({'decay_bias_init': '2'}, ValueError, 'decay_bias_init'),
    ({'value_skip': 1}, TypeError, 'value_skip'),
], ids=['shift-without-conv', 'unknown-init', 'tie-not-bool', 'norm-not-bool', 'self-read-not-bool',
        'self-read-and-shift', 'temperature-zero', 'temperature-inf', 'decay-nan', 'decay-str', 'skip-not-bool'])
def test_bad_options_are_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        RAMAttention(HIDDEN, num_heads=HEADS, **kwargs)
