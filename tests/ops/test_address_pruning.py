"""The beam search's two regimes: with many rows it sorts each factor's digits and never forms the
candidates that cannot reach the Top-K; with few rows it ranks all of them. Both must be exact."""

from __future__ import annotations

import pytest
import torch

from ramnet_fla.ops.ram import address
from ramnet_fla.ops.ram import ram_address
from tests.ops.utils import brute_force_topk


@pytest.mark.parametrize('rows', [3, address.PRUNE_MIN_ROWS + 5], ids=['few-rows-rank-all', 'many-rows-pruned'])
@pytest.mark.parametrize('num_factors, factor_dim, topk', [
    (5, 4, 8), (3, 4, 5), (4, 2, 16), (2, 8, 3), (3, 3, 27), (1, 6, 4), (6, 2, 7),
], ids=lambda x: str(x))
def test_beam_equals_brute_force_in_both_regimes(rows, num_factors, factor_dim, topk):
    torch.manual_seed(rows * 31 + num_factors * 7 + factor_dim)
    logits = torch.randn(rows, num_factors * factor_dim, dtype=torch.float64) * 3
    indices, log_probs = ram_address(logits, num_factors, topk)
    expected_indices, expected_log_probs = brute_force_topk(logits, num_factors, topk)
    torch.testing.assert_close(log_probs, expected_log_probs, rtol=0, atol=1e-12)
    # continuous random logits have no ties, so the slots are the same and in the same order
    assert torch.equal(indices, expected_indices)
    assert bool((log_probs[..., :-1] >= log_probs[..., 1:]).all())


def test_dominance_pairs_keep_only_candidates_that_can_reach_the_top_k():
    prefix, digit = address._dominance_pairs(8, 4, 8, torch.device('cpu'))
    pairs = set(zip(prefix.tolist(), digit.tolist()))
    assert pairs == {(i, j) for i in range(8) for j in range(4) if (i + 1) * (j + 1) <= 8}
    assert len(pairs) == 16
