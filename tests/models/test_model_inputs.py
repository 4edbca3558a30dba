"""RAMNetForCausalLM's inputs (issue 10, beyond the listed cases): each bad one is named."""

from __future__ import annotations

import pytest
import torch

from ramnet_fla import RAMNetConfig, RAMNetForCausalLM


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return RAMNetForCausalLM(RAMNetConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, mixers=[
        {'name': 'ram', 'num_heads': 2, 'num_factors': 3, 'factor_dim': 4, 'topk': 4}]))


IDS = torch.ones(2, 4, dtype=torch.long)
BAD_INPUTS = {
    'id past the vocabulary': (dict(input_ids=torch.tensor([[1, 64]])), ValueError, 'input_ids'),
    'negative id': (dict(input_ids=torch.tensor([[-1, 3]])), ValueError, 'input_ids'),
    'float ids': (dict(input_ids=torch.ones(1, 4)), TypeError, 'input_ids'),
    '1-D ids': (dict(input_ids=torch.ones(4, dtype=torch.long)), ValueError, 'input_ids'),
    'embeds of another width': (dict(inputs_embeds=torch.randn(1, 4, 16)), ValueError, 'inputs_embeds'),
    'labels of another length': (dict(input_ids=IDS, labels=IDS[:, :3]), ValueError, 'labels'),
    'mask of another batch': (dict(input_ids=IDS, attention_mask=torch.ones(3, 4, dtype=torch.long)), ValueError,
                              'attention_mask'),
}


@pytest.mark.parametrize('case', BAD_INPUTS)
def test_bad_inputs_are_named(model, case):
    inputs, error, name = BAD_INPUTS[case]
    with pytest.raises(error, match=name):
        model(**inputs)


def test_the_last_id_and_a_padded_batch_are_valid(model):
    ids = torch.tensor([[0, 5, 63, 2], [7, 1, 63, 9]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    out = model(input_ids=ids, attention_mask=mask, labels=ids)
    assert out.logits.shape == (2, 4, 64) and torch.isfinite(out.loss)


def test_a_decoding_mask_may_cover_the_whole_context(model):
    # fla's convention: while decoding, the mask covers cached + new tokens; the layers read its tail
    from fla.models.utils import Cache
    ids = torch.randint(0, 64, (2, 6))
    with torch.no_grad():
        full = model(input_ids=ids).logits
        cache = Cache()
        model(input_ids=ids[:, :5], past_key_values=cache, use_cache=True)
        step = model(input_ids=ids[:, 5:], attention_mask=torch.ones(2, 6, dtype=torch.long), past_key_values=cache,
                     use_cache=True).logits
    torch.testing.assert_close(step[:, -1], full[:, -1], atol=1e-4, rtol=1e-4)
