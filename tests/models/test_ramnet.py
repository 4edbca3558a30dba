"""RAMNetConfig / RAMNetModel / RAMNetForCausalLM on the CPU: registration, loss, padding, packing,
generation with the cache, save/load, gradient checkpointing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

import ramnet_fla
from ramnet_fla import RAMNetConfig, RAMNetForCausalLM, RAMNetModel
from ramnet_fla.layers import RAMAttention

VOCAB = 64
RAM = {'name': 'ram', 'num_heads': 2, 'num_factors': 2, 'factor_dim': 4, 'topk': 3, 'use_short_conv': True}
GLA = {'name': 'gla', 'num_heads': 2, 'expand_k': 0.5, 'use_short_conv': True}


def tiny_config(mixers=(RAM,), **kwargs) -> RAMNetConfig:
    options = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, hidden_ratio=2, pad_token_id=0,
                   bos_token_id=1, eos_token_id=2, mixers=list(mixers))
    options.update(kwargs)
    return RAMNetConfig(**options)


def tiny_model(seed=0, **kwargs) -> RAMNetForCausalLM:
    torch.manual_seed(seed)
    model = RAMNetForCausalLM(tiny_config(**kwargs))
    with torch.no_grad():                       # give zero-initialised parameters some variety
        for name, p in model.named_parameters():
            if 'log_temperature' in name or 'gamma_proj.bias' in name:
                p.uniform_(-0.5, 0.5)
            elif name.endswith('norm.weight'):
                p.uniform_(0.5, 1.5)
    return model


def test_registered_with_transformers_auto_classes():
    options = {k: v for k, v in tiny_config().to_dict().items() if k != 'model_type'}
    config = AutoConfig.for_model('ramnet', **options)
    assert type(config) is RAMNetConfig
    assert type(AutoModel.from_config(config)) is RAMNetModel
    model = AutoModelForCausalLM.from_config(config)
    assert type(model) is RAMNetForCausalLM
    assert all(isinstance(block.attn, RAMAttention) for block in model.model.layers)
    assert ramnet_fla.RAMNetConfig is RAMNetConfig


def test_config_mixers_repeat_and_default():
    assert RAMNetConfig(num_hidden_layers=3).layer_mixer_names == ['ram', 'ram', 'ram']
    config = RAMNetConfig(num_hidden_layers=5, mixers=['ram', {'name': 'gla', 'num_heads': 2}])
    assert config.layer_mixer_names == ['ram', 'gla', 'ram', 'gla', 'ram']
    assert config.mixer_for_layer(3) == {'name': 'gla', 'num_heads': 2}
    config.mixer_for_layer(3)['num_heads'] = 99                    # a fresh dict every time
    assert config.mixer_for_layer(3)['num_heads'] == 2
    assert RAMNetConfig(num_hidden_layers=2, mixers='gla').layer_mixer_names == ['gla', 'gla']


@pytest.mark.parametrize('mixers, error, match', [
    ([], ValueError, 'mixers'),
    ([{'num_heads': 2}], ValueError, "'name'"),
    ([3], TypeError, 'mixers'),
    ([{'name': 'ram', 'hidden_size': 8}], ValueError, 'hidden_size'),
])
def test_config_rejects_bad_mixers(mixers, error, match):
    with pytest.raises(error, match=match):
        RAMNetConfig(mixers=mixers)


def test_unknown_mixer_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown mixer 'nope'.*ram"):
        RAMNetForCausalLM(tiny_config(mixers=['nope']))


@pytest.mark.filterwarnings('ignore:`fuse_linear_cross_entropy` is enabled')
@pytest.mark.parametrize('flags', [
    dict(),
    dict(fuse_norm=False, fuse_swiglu=False),
    dict(fuse_cross_entropy=False, fuse_linear_cross_entropy=True),
], ids=['fused-flags', 'unfused-norm-mlp', 'fused-linear-ce'])
def test_loss_matches_cross_entropy_and_reaches_every_parameter(flags):
    # whatever fla's fuse_* flags say, the CPU runs PyTorch norms, MLP and cross entropy
    model = tiny_model(seed=1, mixers=[RAM, GLA], **flags)
    ids = torch.randint(3, VOCAB, (2, 10))
    labels = ids.clone()
    labels[0, :3] = -100
    out = model(input_ids=ids, labels=labels)
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    ram = model.model.layers[0].attn
    assert ram.read_log_temperature.grad.abs().sum() > 0 and ram.k_proj.weight.grad.abs().sum() > 0


def test_padded_batch_and_packed_sequences_equal_separate_runs():
    model = tiny_model(seed=2, mixers=[RAM, GLA]).eval()
    first, second = torch.randint(3, VOCAB, (1, 9)), torch.randint(3, VOCAB, (1, 5))
    with torch.no_grad():
        alone = [model(input_ids=s).logits for s in (first, second)]
        padded_ids = torch.zeros(2, 9, dtype=torch.long)
        padded_ids[0], padded_ids[1, 4:] = first[0], second[0]
        mask = (padded_ids != 0).long()
        padded = model(input_ids=padded_ids, attention_mask=mask).logits
        packed = model(input_ids=torch.cat([first, second], 1), cu_seqlens=torch.tensor([0, 9, 14])).logits
    torch.testing.assert_close(padded[0], alone[0][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded[1, 4:], alone[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed, torch.cat(alone, 1), rtol=1e-5, atol=1e-5)


def test_packed_training_gradients_equal_separate_sequences():
    model = tiny_model(seed=3)
    sequences = [torch.randint(3, VOCAB, (1, n)) for n in (7, 4)]
    packed = torch.cat(sequences, 1)
    logits = model(input_ids=packed, cu_seqlens=torch.tensor([0, 7, 11])).logits
    loss = sum(F.cross_entropy(part[0, :-1], s[0, 1:], reduction='sum')
               for part, s in zip(logits.split([7, 4], 1), sequences))
    grads = torch.autograd.grad(loss, list(model.parameters()))
    separate = sum(F.cross_entropy(model(input_ids=s).logits[0, :-1], s[0, 1:], reduction='sum') for s in sequences)
    separate_grads = torch.autograd.grad(separate, list(model.parameters()))
    for g, r in zip(grads, separate_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('mixers', [[RAM], [RAM, GLA]], ids=['ram', 'ram+gla'])
def test_generate_with_cache_equals_full_forward(mixers):
    model = tiny_model(seed=4, mixers=mixers).eval()
    prompts = torch.randint(3, VOCAB, (2, 6))
    prompts[1, :2] = 0                                         # the second prompt is left-padded
    mask = (prompts != 0).long()
    new_tokens = 5
    with torch.no_grad():
        out = model.generate(input_ids=prompts, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                             return_dict_in_generate=True, output_logits=True, pad_token_id=0, eos_token_id=None)
    sequences = out.sequences
    assert sequences.shape == (2, 6 + new_tokens)
    for row in range(2):                                       # each sequence alone, no cache, no padding
        real = sequences[row][mask[row].bool().tolist() + [True] * new_tokens]
        with torch.no_grad():
            logits = model(input_ids=real[None]).logits[0]
        prompt_len = int(mask[row].sum())
        for step in range(new_tokens):
            expected = logits[prompt_len - 1 + step]
            torch.testing.assert_close(out.logits[step][row], expected, rtol=1e-4, atol=1e-4)
            assert real[prompt_len + step] == expected.argmax()


def test_save_and_load_roundtrip(tmp_path):
    model = tiny_model(seed=5, mixers=[RAM, GLA], tie_word_embeddings=True).eval()
    assert model.lm_head.weight.data_ptr() == model.model.embeddings.weight.data_ptr()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is RAMNetForCausalLM
    assert loaded.config.mixers == model.config.mixers
    for (name, p), (_, q) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(p, q), name
    ids = torch.randint(3, VOCAB, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=0)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_model(seed=6).train()
    ids = torch.randint(3, VOCAB, (2, 8))
    plain = torch.autograd.grad(model(input_ids=ids, labels=ids).loss, list(model.parameters()))
    model.gradient_checkpointing_enable()
    assert all(block.gradient_checkpointing for block in model.model.layers)
    checkpointed = torch.autograd.grad(model(input_ids=ids, labels=ids).loss, list(model.parameters()))
    for g, r in zip(checkpointed, plain):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)


def test_config_and_model_follow_the_select_hook(builtin_plugins_only):
    class AttentionOnOddLayers:
        @ramnet_fla.hookimpl
        def ramnet_fla_select_mixer(self, config, layer_idx):
            return {'name': 'attention', 'num_heads': 2} if layer_idx % 2 else None

    builtin_plugins_only.register(AttentionOnOddLayers(), name='odd-attention')
    config = tiny_config(num_hidden_layers=3)
    assert config.layer_mixer_names == ['ram', 'attention', 'ram']
    assert config.mixer_for_layer(1) == {'name': 'attention', 'num_heads': 2}
    model = RAMNetForCausalLM(config)
    assert [block.mixer_spec for block in model.model.layers] == [config.mixer_for_layer(i) for i in range(3)]
    assert [type(block.attn).__name__ for block in model.model.layers][0::2] == ['RAMAttention'] * 2
    assert not isinstance(model.model.layers[1].attn, RAMAttention)
    with pytest.raises(ValueError, match='`layer_idx` must be <= 2'):
        config.mixer_for_layer(3)
