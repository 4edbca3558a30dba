"""convert_fla_model: a tiny random fla GLAForCausalLM with RAM mixed into chosen layers."""

from __future__ import annotations

import pytest
import torch
from fla.models import GLAConfig, GLAForCausalLM
from transformers import AutoModelForCausalLM

from ramnet_fla import RAMNetForCausalLM, convert_fla_model
from ramnet_fla.layers import RAMAttention
from ramnet_fla.fla_cpu.layers import GatedLinearAttention

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
