"""RAMAttention / RAMNetForCausalLM with `state_format`: the sparse and tiered decoding states equal the dense one."""

from __future__ import annotations

import gc

import pytest
import torch
from fla.models.utils import Cache

from ramnet_fla import RAMNetConfig, RAMNetForCausalLM
from ramnet_fla.layers import RAMAttention
from ramnet_fla.ops.ram import RAMState, SparseRAMState, TieredRAMState
from tests.layers.test_ram_layer import HIDDEN, make_layer


def decode(layer, x, mask, prompt):
    """Prefill x[:, :prompt] through the Cache, then decode the rest token by token: (outputs, cache)."""
    with torch.no_grad():
        cache = Cache()
        out, _, cache = layer(x[:, :prompt], attention_mask=mask[:, :prompt], past_key_values=cache, use_cache=True)
        steps = [out]
        for t in range(prompt, x.shape[1]):
            out, _, cache = layer(x[:, t:t + 1], attention_mask=mask[:, :t + 1], past_key_values=cache, use_cache=True)
            steps.append(out)
    return torch.cat(steps, 1), cache


@pytest.mark.parametrize('state_format, use_short_conv, tiered_dir', [
    ('sparse', False, None), ('sparse', True, None), ('tiered', True, None), ('tiered', True, 'tmp')],
    ids=['sparse-noconv', 'sparse-conv', 'tiered-host-memory', 'tiered-file'])
def test_layer_decoding_with_left_padding_equals_dense(state_format, use_short_conv, tiered_dir, tmp_path):
    # tiered: a hot cache of one step's worth of rows (3 sequences x 2 heads x 2K), so every step evicts
    B, prompt, new = 3, 8, 6
    options = dict(seed=5, use_short_conv=use_short_conv, cape_heads=[0])
    dense = make_layer(**options, state_format='dense').eval()
    extra = dict(tiered_cache_slots=B * 2 * 2 * 3, tiered_dir=tmp_path if tiered_dir else None) \
        if state_format == 'tiered' else {}
    other = make_layer(**options, state_format=state_format, **extra).eval()
    other.load_state_dict(dense.state_dict())
    x = torch.randn(B, prompt + new, HIDDEN)
    mask = torch.ones(B, prompt + new, dtype=torch.long)
    mask[1, :3] = 0
    mask[2, :5] = 0
    dense_out, dense_cache = decode(dense, x, mask, prompt)
    other_out, other_cache = decode(other, x, mask, prompt)
    real = mask.bool()
    torch.testing.assert_close(other_out[real], dense_out[real], rtol=1e-6, atol=1e-6)
    state = other_cache[0]['recurrent_state']
    assert isinstance(state, SparseRAMState if state_format == 'sparse' else TieredRAMState)
    assert isinstance(dense_cache[0]['recurrent_state'], RAMState)
    assert state.position.tolist() == [prompt + new, prompt + new - 3, prompt + new - 5]
    as_dense, expected = state.to_dense(), dense_cache[0]['recurrent_state']
    torch.testing.assert_close(as_dense.memory, expected.memory, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(as_dense.mass, expected.mass, rtol=1e-6, atol=1e-6)
    if state_format == 'tiered':
        assert state.evictions > 0 and (state.path is not None) == bool(tiered_dir)
    if tiered_dir:                                       # the cache's table file goes with the cache
        assert len(list(tmp_path.iterdir())) == 1
        del state, other_cache
        gc.collect()
        assert list(tmp_path.iterdir()) == []


def test_bad_tiered_options_are_rejected(tmp_path):
    with pytest.raises(ValueError, match='tiered_cache_slots'):
        make_layer(state_format='tiered', tiered_cache_slots=0)
    with pytest.raises(TypeError, match='tiered_cache_slots'):
        make_layer(state_format='tiered', tiered_cache_slots=2.5)
    with pytest.raises(ValueError, match='tiered_dir'):
        make_layer(state_format='tiered', tiered_dir=tmp_path / 'missing')
    layer = make_layer(state_format='tiered', tiered_cache_slots=2).eval()      # fewer rows than one step
    with torch.no_grad(), pytest.raises(ValueError, match='cache_slots'):
        decode(layer, torch.randn(1, 4, HIDDEN), torch.ones(1, 4, dtype=torch.long), 2)


def test_sparse_layer_packed_prefill_then_batched_decoding_equals_dense():
    dense = make_layer(seed=6, state_format='dense').eval()
    sparse = make_layer(seed=6, state_format='sparse').eval()
    sparse.load_state_dict(dense.state_dict())
    lengths = [5, 9]
    packed = torch.randn(1, sum(lengths), HIDDEN)
    cu_seqlens = torch.tensor([0, 5, 14])
    tokens = torch.randn(2, 4, HIDDEN)
    outputs = {}
    for name, layer in (('dense', dense), ('sparse', sparse)):
        with torch.no_grad():
            cache = Cache()
            prefill, _, cache = layer(packed, past_key_values=cache, use_cache=True, cu_seqlens=cu_seqlens)
            steps = [layer(tokens[:, t:t + 1], past_key_values=cache, use_cache=True)[0] for t in range(4)]
        outputs[name] = (prefill, torch.cat(steps, 1), cache[0]['recurrent_state'])
    torch.testing.assert_close(outputs['sparse'][0], outputs['dense'][0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(outputs['sparse'][1], outputs['dense'][1], rtol=1e-6, atol=1e-6)
    assert outputs['sparse'][2].position.tolist() == [9, 13]


def test_auto_state_format_is_chosen_by_the_number_of_slots():
    assert RAMAttention(hidden_size=32, num_heads=2, num_factors=7, factor_dim=4).state_format == 'dense'
    assert RAMAttention(hidden_size=32, num_heads=2, num_factors=8, factor_dim=4).state_format == 'sparse'
    assert RAMAttention(hidden_size=32, num_heads=2, num_factors=8, factor_dim=4,
                        state_format='dense').state_format == 'dense'
    with pytest.raises(ValueError, match='state_format'):
        RAMAttention(hidden_size=32, num_heads=2, state_format='paged')


def test_training_forward_is_unaffected_and_a_sparse_cache_with_gradients_is_refused():
    layer = make_layer(seed=7, state_format='sparse')
    x = torch.randn(2, 5, HIDDEN, requires_grad=True)
    o, _, _ = layer(x)                                   # no cache: the ordinary differentiable path
    o.sum().backward()
    assert layer.q_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='inference-only'):
        layer(x, past_key_values=Cache(), use_cache=True)


def make_model(state_format: str, num_factors: int = 4, seed: int = 0, **options) -> RAMNetForCausalLM:
    torch.manual_seed(seed)
    ram = {'name': 'ram', 'num_heads': 2, 'num_factors': num_factors, 'factor_dim': 4, 'topk': 4,
           'use_short_conv': True, 'state_format': state_format, **options}
    config = RAMNetConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, hidden_ratio=2, pad_token_id=0,
                          bos_token_id=1, eos_token_id=2, mixers=[ram])
    model = RAMNetForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'log_temperature' in name or 'gamma_proj.bias' in name:
                p.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize('num_factors', [4, 8], ids=['M256', 'M65536-auto-sparse'])
def test_generate_with_a_sparse_state_gives_the_dense_models_tokens(num_factors):
    dense = make_model('dense', num_factors)
    sparse = make_model('sparse' if num_factors == 4 else 'auto', num_factors)
    sparse.load_state_dict(dense.state_dict())
    prompts = torch.randint(3, 64, (2, 7))
    prompts[1, :3] = 0                                   # left padding
    mask = (prompts != 0).long()
    kwargs = dict(attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None,
                  return_dict_in_generate=True, output_logits=True)
    with torch.no_grad():
        expected = dense.generate(input_ids=prompts, **kwargs)
        out = sparse.generate(input_ids=prompts, **kwargs)
    assert torch.equal(out.sequences, expected.sequences)
    for step, (logits, reference) in enumerate(zip(out.logits, expected.logits)):
        torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5, msg=f"step {step}")
    with torch.no_grad():
        cache = sparse(input_ids=prompts, attention_mask=mask, use_cache=True).past_key_values
    assert all(isinstance(cache[i]['recurrent_state'], SparseRAMState) for i in range(2))


def test_generate_with_a_tiered_state_in_files_gives_the_dense_models_tokens(tmp_path):
    dense = make_model('dense')
    tiered = make_model('tiered', tiered_cache_slots=64, tiered_dir=str(tmp_path))   # config keys of the mixer
    tiered.load_state_dict(dense.state_dict())
    prompts = torch.randint(3, 64, (2, 7))
    prompts[1, :3] = 0                                   # left padding
    kwargs = dict(attention_mask=(prompts != 0).long(), max_new_tokens=8, do_sample=False, pad_token_id=0,
                  eos_token_id=None)
    with torch.no_grad():
        expected = dense.generate(input_ids=prompts, **kwargs)
        out = tiered.generate(input_ids=prompts, **kwargs)
        cache = tiered(input_ids=prompts, attention_mask=kwargs['attention_mask'], use_cache=True).past_key_values
    assert torch.equal(out, expected)
    assert all(isinstance(cache[i]['recurrent_state'], TieredRAMState) for i in range(2))
    assert len(list(tmp_path.iterdir())) == 2
    del cache
    gc.collect()
    assert list(tmp_path.iterdir()) == []                # each layer's table file went with its cache


@pytest.mark.parametrize('state_format', ['sparse', 'tiered'])
def test_beam_reordering_of_a_sparse_or_tiered_cache_is_a_clear_error(state_format):
    model = make_model(state_format, tiered_cache_slots=64)
    name = {'sparse': 'SparseRAMState', 'tiered': 'TieredRAMState'}[state_format]
    with torch.no_grad(), pytest.raises(NotImplementedError, match=name):
        model.generate(input_ids=torch.randint(3, 64, (1, 5)), max_new_tokens=3, num_beams=2, do_sample=False,
                       pad_token_id=0, eos_token_id=None)
