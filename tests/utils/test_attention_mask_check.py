"""check_attention_mask: fla's padding-mask convention, checked once for every layer."""

from __future__ import annotations

import pytest
import torch

from ramnet_fla.utils.checks import check_attention_mask

X = torch.zeros(2, 5, 8)


@pytest.mark.parametrize('mask', [torch.ones(2, 5, dtype=torch.bool), torch.ones(2, 9, dtype=torch.long),
                                  torch.tensor([[0., 1, 1, 1, 1], [1, 1, 1, 1, 1]]), torch.ones(2, 5, dtype=torch.int32),
                                  None],
                         ids=['bool', 'longer (decoding)', 'float 0/1', 'int32', 'none'])
def test_valid_masks_pass(mask):
    check_attention_mask(mask, X)


@pytest.mark.parametrize('mask,error,words', [
    ([[1, 1]], TypeError, 'torch.Tensor'),
    (torch.ones(2, 4), ValueError, '>= seq_len=5'),
    (torch.ones(1, 5), ValueError, 'batch_size=2'),
    (torch.ones(5), ValueError, '[batch_size, seq_len]'),
    (torch.full((2, 5), -1), ValueError, '-1'),
    (torch.ones(2, 5, dtype=torch.complex64), TypeError, 'complex'),
], ids=['a list', 'shorter', 'another batch', '1-D', 'negative', 'complex'])
def test_invalid_masks_are_named(mask, error, words):
    with pytest.raises(error, match='attention_mask') as info:
        check_attention_mask(mask, X)
    assert words in str(info.value) and 'cu_seqlens' not in str(info.value)
