"""`ram_address`: exact beam-search Top-K over the product softmax, checked against enumeration."""

from __future__ import annotations

import math

import pytest
import torch

from ramnet_fla.ops.ram import ram_address
from tests.ops.utils import all_addresses, brute_force_log_probs, brute_force_topk

ADDRESS_SHAPES = [
    pytest.param(1, 8, 3, id='U1-dp8-K3'),
    pytest.param(3, 2, 3, id='U3-dp2-K3'),
    pytest.param(4, 2, 16, id='U4-dp2-K=M'),
    pytest.param(2, 5, 1, id='U2-dp5-K1'),
    pytest.param(3, 4, 8, id='U3-dp4-K8'),
    pytest.param(5, 4, 8, id='U5-dp4-K8'),
    pytest.param(2, 3, 9, id='U2-dp3-K=M'),
]


def test_all_addresses_matches_flat_index_convention():
    # the helper itself: flat index i = sum_u a_u * d_p ** u with factor 0 least significant
    digits = all_addresses(3, 4)
    flat = (digits * torch.tensor([1, 4, 16])).sum(-1)
    assert torch.equal(flat, torch.arange(64))


@pytest.mark.parametrize('num_factors, factor_dim, topk', ADDRESS_SHAPES)
@pytest.mark.parametrize('scale', [1.0, 4.0], ids=['scale1', 'scale4'])
def test_beam_topk_equals_brute_force(num_factors, factor_dim, topk, scale):
    torch.manual_seed(num_factors * 100 + factor_dim * 10 + topk)
    logits = torch.randn(3, 5, 2, num_factors * factor_dim) * scale        # [B, T, H, U*d_p]
    indices, log_probs = ram_address(logits, num_factors, topk)
    ref_indices, ref_log_probs = brute_force_topk(logits.double(), num_factors, topk)

    assert indices.shape == log_probs.shape == (3, 5, 2, topk)
    assert indices.dtype == torch.long and log_probs.dtype == torch.float32
    # same sets of slots (random logits: no ties), best first, same log-probabilities
    assert torch.equal(indices.sort(-1).values, ref_indices.sort(-1).values)
    assert torch.allclose(log_probs.double(), ref_log_probs, atol=1e-5, rtol=0)
    assert (log_probs[..., :-1] >= log_probs[..., 1:]).all(), 'not sorted by descending log-probability'
    # every returned log-prob is the log-prob of its own index
    full = brute_force_log_probs(logits.double(), num_factors)
    assert torch.allclose(full.gather(-1, indices), log_probs.double(), atol=1e-5, rtol=0)


def test_ties_give_distinct_valid_slots():
    # all logits equal: every address has probability 1/M; any K distinct slots are a valid Top-K
    num_factors, factor_dim, topk = 3, 3, 7
    logits = torch.zeros(4, num_factors * factor_dim)
    indices, log_probs = ram_address(logits, num_factors, topk)
    M = factor_dim ** num_factors
    assert ((indices >= 0) & (indices < M)).all()
    for row in indices.tolist():
        assert len(set(row)) == topk
    assert torch.allclose(log_probs, torch.full_like(log_probs, -math.log(M)))


def test_leading_dims_are_independent():
    # vectorised over any leading dims: equals a call per row, and a 1-D input works
    logits = torch.randn(2, 3, 4, 12)
    indices, log_probs = ram_address(logits, 3, 5)
    for idx in [(0, 0, 0), (1, 2, 3), (0, 1, 2)]:
        row_indices, row_log_probs = ram_address(logits[idx], 3, 5)
        assert row_indices.shape == (5,)
        assert torch.equal(row_indices, indices[idx])
        # rows are vectorised along the innermost dim: the log-softmax may round differently
        torch.testing.assert_close(row_log_probs, log_probs[idx], rtol=1e-6, atol=1e-6)


def test_float64_logits_give_float64_log_probs():
    logits = torch.randn(6, 8, dtype=torch.float64)
    indices, log_probs = ram_address(logits, 2, 3)
    assert log_probs.dtype == torch.float64
    ref_indices, ref_log_probs = brute_force_topk(logits, 2, 3)
    assert torch.equal(indices, ref_indices)
    assert torch.allclose(log_probs, ref_log_probs, atol=1e-12, rtol=0)


@pytest.mark.parametrize('num_factors, factor_dim, topk', [
    pytest.param(2, 3, 4, id='U2-dp3-K4'),
    pytest.param(3, 2, 8, id='U3-dp2-K=M'),
    pytest.param(1, 5, 2, id='U1-dp5-K2'),
])
def test_log_prob_gradient_matches_enumeration(num_factors, factor_dim, topk):
    # d log_probs / d logits equals the gradient through the brute-force table at the same slots
    torch.manual_seed(7)
    logits = torch.randn(4, 3, num_factors * factor_dim, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(4, 3, topk, dtype=torch.float64)
    indices, log_probs = ram_address(logits, num_factors, topk)
    (grad,) = torch.autograd.grad((log_probs * upstream).sum(), logits)

    reference_logits = logits.detach().clone().requires_grad_(True)
    table = brute_force_log_probs(reference_logits, num_factors)
    (ref_grad,) = torch.autograd.grad((table.gather(-1, indices) * upstream).sum(), reference_logits)
    assert torch.allclose(grad, ref_grad, atol=1e-12, rtol=1e-10)
    assert grad.abs().sum() > 0


def test_log_prob_gradcheck():
    torch.manual_seed(3)
    logits = torch.randn(2, 3, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: ram_address(x, 3, 4)[1], (logits,))


def test_float16_logits():
    # half-precision logits are addressed in float32 (the same slots as the float32 of the same values)
    logits = torch.randn(5, 7, 12).half()
    indices, log_probs = ram_address(logits, 3, 6)
    ref_indices, ref_log_probs = ram_address(logits.float(), 3, 6)
    assert log_probs.dtype == torch.float32
    assert torch.equal(indices, ref_indices)
    assert torch.equal(log_probs, ref_log_probs)
