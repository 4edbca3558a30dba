"""A RAMNetForCausalLM with every built-in mixer, one per layer: training on padded and packed
batches, generation with the cache and left padding, save/load."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ramnet_fla import RAMNetConfig, RAMNetForCausalLM

VOCAB = 48
MIXERS = [
    {'name': 'ram', 'num_heads': 2, 'num_factors': 2, 'factor_dim': 4, 'topk': 3, 'use_short_conv': True},
    {'name': 'gla', 'num_heads': 2, 'use_short_conv': True},
    {'name': 'deltanet', 'num_heads': 2},
    {'name': 'gated_deltanet', 'num_heads': 2, 'head_dim': 8},
    {'name': 'attention', 'num_heads': 4, 'num_kv_heads': 2},
]


def _model(seed=0) -> RAMNetForCausalLM:
    torch.manual_seed(seed)
    config = RAMNetConfig(mixers=MIXERS, vocab_size=VOCAB, hidden_size=32, num_hidden_layers=5, hidden_ratio=2,
                          pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return RAMNetForCausalLM(config)


def test_every_layer_gets_its_mixer_and_packed_training_equals_separate(plugin_manager):
    model = _model()
    assert [type(layer.attn).__name__ for layer in model.model.layers] == \
        ['RAMAttention', 'GatedLinearAttention', 'DeltaNet', 'GatedDeltaNet', 'SoftmaxAttention']
    sequences = [torch.randint(3, VOCAB, (1, n)) for n in (11, 5, 8)]
    packed = torch.cat(sequences, dim=1)
    cu_seqlens = torch.tensor([0, 11, 16, 24])
    logits = model(input_ids=packed, cu_seqlens=cu_seqlens).logits[0]
    loss = sum(F.cross_entropy(logits[s:e - 1], packed[0, s + 1:e], reduction='sum')
               for s, e in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist()))
    separate = sum(F.cross_entropy(model(input_ids=x).logits[0, :-1], x[0, 1:], reduction='sum') for x in sequences)
    torch.testing.assert_close(loss, separate, rtol=1e-5, atol=1e-4)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    separate_grads = torch.autograd.grad(separate, list(model.parameters()))
    for (name, _), got, want in zip(model.named_parameters(), grads, separate_grads):
        assert got.abs().sum() > 0, name
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=name)


def test_generate_with_left_padding_equals_full_forward(plugin_manager):
    model = _model(seed=1).eval()
    prompts = torch.randint(3, VOCAB, (2, 7))
    prompts[0, :3] = 0
    mask = (prompts != 0).long()
    with torch.no_grad():
        out = model.generate(input_ids=prompts, attention_mask=mask, max_new_tokens=4, do_sample=False,
                             return_dict_in_generate=True, output_logits=True, pad_token_id=0, eos_token_id=None)
        for row in range(2):
            real = out.sequences[row][mask[row].bool().tolist() + [True] * 4]
            logits = model(input_ids=real[None]).logits[0]
            prompt_len = int(mask[row].sum())
            for step in range(4):
                torch.testing.assert_close(out.logits[step][row], logits[prompt_len - 1 + step], rtol=1e-4, atol=1e-4)


def test_save_and_load(plugin_manager, tmp_path):
    model = _model(seed=2).eval()
    model.save_pretrained(tmp_path)
    loaded = RAMNetForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.mixers == MIXERS
    input_ids = torch.randint(3, VOCAB, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=input_ids).logits, model(input_ids=input_ids).logits)
