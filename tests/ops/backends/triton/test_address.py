"""The Triton address kernel (`ram_address` with RAMNET_FLA_BACKEND=triton) against the PyTorch path
and a brute-force enumeration of all M addresses, under TRITON_INTERPRET=1 on the CPU."""

from __future__ import annotations

import pytest
import torch

from ramnet_fla.ops.ram import ram_address
from ramnet_fla.ops.ram.backends import torch as torch_backend
from tests.ops.utils import assert_rel_close, brute_force_topk, poison_uninitialized

pytestmark = pytest.mark.triton


def ram_address_torch(logits, num_factors, topk):
    """`ram_address` of the PyTorch backend on the same logits: (indices, log_probs) [..., K]."""
    index, log_prob = torch_backend.address_topk(logits.reshape(-1, logits.shape[-1]), num_factors, topk)
    return index.view(*logits.shape[:-1], topk), log_prob.view(*logits.shape[:-1], topk)


@pytest.fixture(autouse=True)
def triton_backend(monkeypatch, poison_kernel_outputs):
    """Force the Triton kernels and NaN-fill every buffer they should overwrite."""
    monkeypatch.setenv('RAMNET_FLA_BACKEND', 'triton')


@pytest.mark.parametrize('num_factors, factor_dim, topk', [
    pytest.param(3, 4, 8, id='U3-dp4-K8'),
    pytest.param(2, 3, 9, id='K=M'),
    pytest.param(1, 5, 2, id='U1'),
    pytest.param(4, 2, 3, id='dp2'),
    pytest.param(2, 8, 32, id='wide-beam'),      # K * d_p > 128: the select-by-max branch
])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16], ids=['fp32', 'fp16'])
def test_address_matches_torch_and_brute_force(num_factors, factor_dim, topk, dtype):
    generator = torch.Generator().manual_seed(num_factors * 100 + topk)
    logits = (torch.randn(2, 3, 2, num_factors * factor_dim, generator=generator) * 2).to(dtype).requires_grad_()
    with poison_uninitialized():
        index, log_prob = ram_address(logits, num_factors, topk)
    ref_index, ref_log_prob = ram_address_torch(logits, num_factors, topk)

    assert index.dtype == torch.long and log_prob.dtype == torch.float32
    assert index.shape == log_prob.shape == (2, 3, 2, topk)
    assert torch.equal(index, ref_index)
    assert_rel_close('log_prob', log_prob, ref_log_prob, 1e-6)
    assert (log_prob[..., :-1] >= log_prob[..., 1:]).all(), 'log-probs must be sorted best first'
    _, brute_log_prob = brute_force_topk(logits.detach().float(), num_factors, topk)
    assert_rel_close('log_prob vs brute force', log_prob, brute_log_prob, 1e-6)

    grad = torch.randn(log_prob.shape, generator=generator)
    (dlogits,) = torch.autograd.grad((log_prob * grad).sum(), logits)
    (ref_dlogits,) = torch.autograd.grad((ref_log_prob * grad).sum(), logits)
    assert dlogits.dtype == dtype
    assert_rel_close('dlogits', dlogits, ref_dlogits, 1e-5 if dtype == torch.float32 else 2e-3)


def test_address_gradcheck_float64():
    """float64 logits stay float64 and the backward is the exact gradient (indices held fixed)."""
    logits = torch.randn(3, 2 * 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3), requires_grad=True)
    index, log_prob = ram_address(logits, 2, 4)
    assert log_prob.dtype == torch.float64
    assert torch.equal(index, ram_address_torch(logits, 2, 4)[0])
    assert torch.autograd.gradcheck(lambda x: ram_address(x, 2, 4)[1], (logits,), eps=1e-6, atol=1e-7)


def test_address_empty_and_tied_logits():
    """No rows gives empty results; all-equal logits give K distinct slots of equal log-prob -K*log(d_p)."""
    index, log_prob = ram_address(torch.zeros(0, 2, 8), 2, 3)
    assert index.shape == log_prob.shape == (0, 2, 3)
    index, log_prob = ram_address(torch.zeros(4, 8), 2, 16)
    assert all(len(set(row)) == 16 for row in index.tolist())
    assert torch.allclose(log_prob, torch.full_like(log_prob, -2 * torch.log(torch.tensor(4.0)).item()))
