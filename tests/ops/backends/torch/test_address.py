"""The beam search's two implementations: sorting-network merges over packed keys (many float32 rows,
d_p a power of two) and one Top-K per factor (decoding, float64, other d_p). Both must be exact."""

from __future__ import annotations

import pytest
import torch

from ramnet_fla.ops.ram import ram_address
from ramnet_fla.ops.ram.backends.torch import address
from tests.ops.utils import brute_force_topk

SHAPES = [(5, 4, 8), (3, 4, 5), (4, 2, 16), (2, 8, 3), (3, 3, 27), (1, 6, 4), (6, 2, 7), (2, 4, 1), (3, 2, 8)]


@pytest.mark.parametrize('rows', [3, address.MERGE_MIN_ROWS + 5], ids=['few-rows-ranked', 'many-rows-merged'])
@pytest.mark.parametrize('num_factors, factor_dim, topk', SHAPES, ids=lambda x: str(x))
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64], ids=['fp32', 'fp64'])
def test_beam_equals_brute_force_in_both_regimes(rows, num_factors, factor_dim, topk, dtype):
    torch.manual_seed(rows * 31 + num_factors * 7 + factor_dim)
    logits = (torch.randn(rows, num_factors * factor_dim, dtype=torch.float64) * 3).to(dtype)
    indices, log_probs = ram_address(logits, num_factors, topk)
    expected_indices, expected_log_probs = brute_force_topk(logits.double(), num_factors, topk)
    torch.testing.assert_close(log_probs.double(), expected_log_probs, rtol=0,
                               atol=1e-12 if dtype == torch.float64 else 1e-5)
    # continuous random logits have no ties, so the slots are the same and in the same order
    assert torch.equal(indices, expected_indices)
    assert bool((log_probs[..., :-1] >= log_probs[..., 1:]).all())


@pytest.mark.parametrize('num_factors, factor_dim, topk', [(5, 4, 8), (4, 2, 16), (2, 8, 3), (3, 4, 1)])
def test_merged_and_ranked_beams_agree(num_factors, factor_dim, topk):
    # the same log-probs through both implementations: same slots in the same order, same scores
    log_probs = address.factor_log_probs(torch.randn(500, num_factors * factor_dim) * 2, num_factors)
    merged_indices, merged_scores = address.merge_beam_topk(log_probs, topk)
    ranked_indices, ranked_scores = address.ranked_beam_topk(log_probs, topk)
    assert torch.equal(merged_indices, ranked_indices)
    assert torch.equal(merged_scores, ranked_scores)


def test_merged_beam_is_exact_with_ties_and_saturated_factors():
    # equal logits tie everywhere; a saturated factor has log-probability 0 and -inf-like digits
    rows = address.MERGE_MIN_ROWS
    logits = torch.zeros(rows, 5 * 4)
    logits[: rows // 2, :4] = torch.tensor([200.0, -200.0, -200.0, -200.0])
    logits[rows // 2:, 4:8] = torch.tensor([0.0, 1e30, -1e30, 0.0])
    indices, log_probs = ram_address(logits, 5, 8)
    assert all(len(set(row)) == 8 for row in indices.tolist()), 'the K slots must be distinct'
    _, expected = brute_force_topk(logits.double(), 5, 8)
    # scores are kept in [-float32 max, -float32 tiny], so an exact 0 comes back as -1.2e-38
    torch.testing.assert_close(log_probs.double().clamp(min=-1e30), expected.clamp(min=-1e30), rtol=1e-6, atol=1e-6)
    assert bool((log_probs[..., :-1] >= log_probs[..., 1:]).all())
    assert torch.isfinite(log_probs).all()


def test_dispatch_between_regimes(monkeypatch):
    calls = []
    monkeypatch.setattr(address, 'merge_beam_topk', lambda lp, k: calls.append('merge') or address.ranked_beam_topk(lp, k))
    ram_address(torch.randn(address.MERGE_MIN_ROWS, 20), 5, 8)
    ram_address(torch.randn(address.MERGE_MIN_ROWS - 1, 20), 5, 8)          # few rows
    ram_address(torch.randn(address.MERGE_MIN_ROWS, 20).double(), 5, 8)     # float64
    ram_address(torch.randn(address.MERGE_MIN_ROWS, 15), 5, 8)              # d_p = 3
    assert calls == ['merge']


@pytest.mark.parametrize('num_factors, factor_dim, topk', [(5, 4, 8), (12, 4, 8), (4, 2, 16), (3, 3, 27), (2, 4, 1)],
                         ids=lambda x: str(x))
def test_numpy_and_torch_packed_beams_give_the_same_bits(num_factors, factor_dim, topk):
    # the CPU decoding search (NumPy) against the PyTorch one on the same log-probs: random rows,
    # all-equal rows (ties everywhere), saturated factors, -inf digits and a NaN row
    torch.manual_seed(num_factors * 13 + topk)
    assert address._packed_beam_topk_numpy(torch.zeros(num_factors, factor_dim, 0), topk)[0].shape == (min(topk, factor_dim ** num_factors), 0)
    logits = torch.randn(40, num_factors * factor_dim) * 3
    logits[1:8] = 0.0
    logits[8:12, :factor_dim] = 1e30
    logits[12, 0] = float('-inf')
    logits[13, 1] = float('nan')
    logits[14:20] = torch.randn(6, num_factors * factor_dim).sign() * 1e30
    log_probs = address.factor_log_probs(logits, num_factors)
    numpy_indices, numpy_scores = address._packed_beam_topk_numpy(log_probs, topk)
    torch_indices, torch_scores = address._packed_beam_topk(log_probs, topk)
    finite = torch.ones(40, dtype=torch.bool)
    finite[13] = False                                  # a NaN row's slots are replaced by beam_topk
    assert torch.equal(numpy_indices[:, finite], torch_indices[:, finite])
    assert torch.equal(numpy_scores[:, finite].view(torch.int32), torch_scores[:, finite].view(torch.int32))
    assert bool(numpy_scores[:, 13].isnan().all()) and bool(torch_scores[:, 13].isnan().all())
