"""convert_fla_model: tiny random fla GLA / DeltaNet / Gated DeltaNet causal LMs with RAM mixed into
chosen layers; every option of their configs mapped or rejected by name."""

from __future__ import annotations

import pytest
import torch
from fla.models import (
    DeltaNetConfig,
    DeltaNetForCausalLM,
    GatedDeltaNetConfig,
    GatedDeltaNetForCausalLM,
    GLAConfig,
    GLAForCausalLM,
)
from transformers import AutoModelForCausalLM

from ramnet_fla import RAMNetForCausalLM, convert_fla_model
from ramnet_fla.layers import RAMAttention
from ramnet_fla.fla_cpu.layers import GatedLinearAttention
from ramnet_fla.models.convert import MIXER_OPTIONS, option_handling

VOCAB = 64
RAM = {'name': 'ram', 'num_heads': 2, 'num_factors': 2, 'factor_dim': 4, 'topk': 3}


def tiny_gla(seed=0, **kwargs) -> GLAForCausalLM:
    torch.manual_seed(seed)
    options = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_heads=2, hidden_ratio=2,
                   use_short_conv=True, pad_token_id=0)
    options.update(kwargs)
    model = GLAForCausalLM(GLAConfig(**options))
    with torch.no_grad():                       # make norms and biases distinguishable from a fresh init
        for name, p in model.named_parameters():
            if 'norm' in name or name.endswith('bias'):
                p.uniform_(0.5, 1.5)
    return model


def test_kept_weights_are_copied_and_new_mixers_are_ram(tmp_path):
    source = tiny_gla(seed=1)
    converted = convert_fla_model(source, mixers=RAM, layers=[1, -1])
    assert isinstance(converted, RAMNetForCausalLM)
    assert converted.config.layer_mixer_names == ['gla', 'ram', 'ram']
    assert type(converted.model.layers[0].attn) is GatedLinearAttention
    assert all(isinstance(converted.model.layers[i].attn, RAMAttention) for i in (1, 2))
    assert converted.model.layers[1].attn.topk == 3
    converted_state, source_state = converted.state_dict(), source.state_dict()
    replaced = ('model.layers.1.attn.', 'model.layers.2.attn.')
    kept = [key for key in source_state if not key.startswith(replaced)]
    assert 'model.layers.0.attn.gk_proj.1.bias' in kept and 'model.layers.2.mlp.down_proj.weight' in kept
    for key in kept:
        assert torch.equal(converted_state[key], source_state[key]), key
    shared_names = [key for key in converted_state if key.startswith(replaced) and key in source_state
                    and converted_state[key].shape == source_state[key].shape]
    assert 'model.layers.1.attn.q_proj.weight' in shared_names           # same name and shape, not copied
    assert not any(torch.equal(converted_state[key], source_state[key]) for key in shared_names)
    # the result runs on the CPU, saves and reloads
    ids = torch.randint(3, VOCAB, (2, 9))
    converted.eval()
    with torch.no_grad():
        logits = converted(input_ids=ids).logits
    converted.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.layer_mixer_names == ['gla', 'ram', 'ram']
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, logits, rtol=0, atol=0)


def test_one_spec_per_layer_and_tied_embeddings():
    source = tiny_gla(seed=2, tie_word_embeddings=True)
    converted = convert_fla_model(source, mixers=[RAM, 'gla'], layers=[2, 0])
    assert converted.config.layer_mixer_names == ['gla', 'gla', 'ram']
    assert converted.model.layers[0].attn.num_heads == 4          # 'gla' with its defaults
    assert converted.lm_head.weight.data_ptr() == converted.model.embeddings.weight.data_ptr()
    torch.testing.assert_close(converted.lm_head.weight, source.model.embeddings.weight, rtol=0, atol=0)


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(layers=[3]), ValueError, 'layers'),
    (dict(layers=[0, 0]), ValueError, 'twice'),
    (dict(layers='0'), TypeError, 'layers'),
    (dict(layers=[0, 1], mixers=[RAM]), ValueError, 'one spec per replaced layer'),
    (dict(mixers=3), TypeError, 'mixers'),
    (dict(mixers={'topk': 3}), ValueError, "'name'"),
])
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        convert_fla_model(tiny_gla(), **kwargs)


def test_rejects_what_is_not_an_fla_causal_lm():
    with pytest.raises(TypeError, match='fla causal LM'):
        convert_fla_model(torch.nn.Linear(2, 2))


@pytest.mark.triton
def test_keeping_every_layer_reproduces_the_fla_model():
    # fla's own model runs its Triton kernels (interpreted on the CPU); ours the PyTorch paths
    source = tiny_gla(seed=3, num_hidden_layers=2).eval()
    converted = convert_fla_model(source, layers=[]).eval()
    assert converted.config.layer_mixer_names == ['gla', 'gla']
    ids = torch.randint(3, VOCAB, (1, 8))
    with torch.no_grad():
        expected = source(input_ids=ids).logits
        logits = converted(input_ids=ids).logits
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


FLA_FAMILIES = {
    'gla': (GLAConfig, GLAForCausalLM, {}),
    'delta_net': (DeltaNetConfig, DeltaNetForCausalLM, {}),
    'gated_deltanet': (GatedDeltaNetConfig, GatedDeltaNetForCausalLM, {'head_dim': 16, 'expand_v': 1}),
}
FAMILY_IDS = list(FLA_FAMILIES)


def tiny_fla(model_type, seed=0, **kwargs):
    config_class, model_class, defaults = FLA_FAMILIES[model_type]
    torch.manual_seed(seed)
    options = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_heads=2, hidden_ratio=2,
                   pad_token_id=0, **defaults)
    options.update(kwargs)
    model = model_class(config_class(**options))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'norm' in name or name.endswith('bias'):
                p.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize('model_type', FAMILY_IDS)
def test_every_option_of_the_fla_config_is_handled(model_type):
    config_class = FLA_FAMILIES[model_type][0]
    handling = option_handling(model_type)
    options = config_class().to_dict()
    unhandled = [name for name in options if name not in handling]
    assert not unhandled, unhandled
    assert set(MIXER_OPTIONS[model_type]) <= set(options)           # no mapping of an option fla lacks


@pytest.mark.parametrize('model_type, options', [
    ('gla', dict(use_short_conv=True, expand_v=2.0, use_output_gate=False, use_gk=False, clamp_min=-4.0)),
    ('delta_net', dict(use_output_norm=False, use_gate=True, qk_activation='relu', qk_norm='sum',
                       allow_neg_eigval=True, attn_mode='fused_recurrent')),
    ('delta_net', dict(use_short_conv=False, use_beta=False, expand_k=0.5)),
    ('gated_deltanet', dict(use_gate=False, num_v_heads=4, allow_neg_eigval=True, conv_size=3)),
], ids=['gla', 'deltanet_gate_relu', 'deltanet_no_conv', 'gated_deltanet_gva'])
def test_kept_fla_mixers_take_every_option_and_weight(model_type, options):
    source = tiny_fla(model_type, seed=4, **options)
    converted = convert_fla_model(source, mixers=RAM, layers=[1])
    assert converted.config.layer_mixer_names == [{'gla': 'gla', 'delta_net': 'deltanet'}.get(model_type, model_type),
                                                  'ram']
    kept = converted.config.mixer_for_layer(0)
    for option, argument in MIXER_OPTIONS[model_type].items():
        assert kept[argument] == getattr(source.config, option), option
    converted_state = converted.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith('model.layers.1.attn.'):
            assert torch.equal(converted_state[key], value), key
    with torch.no_grad():
        assert torch.isfinite(converted.eval()(input_ids=torch.randint(3, VOCAB, (2, 7))).logits).all()


def test_an_unknown_option_is_rejected_by_name():
    source = tiny_fla('delta_net')
    source.config.use_new_trick = True                   # an option a later fla might add
    with pytest.raises(ValueError, match='use_new_trick'):
        convert_fla_model(source)


def test_attention_residuals_are_rejected_by_name():
    source = tiny_fla('gated_deltanet')
    source.config.attnres_block_size = 2
    with pytest.raises(ValueError, match='attnres_block_size=2'):
        convert_fla_model(source)


@pytest.mark.triton
@pytest.mark.parametrize('model_type', ['delta_net', 'gated_deltanet'])
def test_keeping_every_delta_rule_layer_reproduces_the_fla_model(model_type):
    # fla's eval forward of <= 64 tokens takes its fused_recurrent Triton kernels (float32 works under
    # the interpreter; chunk_delta_rule refuses float32); ours the PyTorch chunked paths
    source = tiny_fla(model_type, seed=5).eval()
    converted = convert_fla_model(source, layers=[]).eval()
    ids = torch.randint(3, VOCAB, (1, 8))
    with torch.no_grad():
        expected = source(input_ids=ids).logits
        logits = converted(input_ids=ids).logits
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
