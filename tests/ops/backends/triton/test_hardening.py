"""The hardening contracts of issue 10 (see tests/ops/test_hardening.py) for the Triton kernels, under
TRITON_INTERPRET=1 on the CPU: ties to the lower flat index in both selection branches of the beam,
NaN rows with NaN log-probabilities and indices 0..K-1, -inf logits as probability 0, and the same
slots and NaN patterns as the reference in chunk_ram and fused_recurrent_ram."""

from __future__ import annotations

import pytest
import torch

from ramnet_fla.ops.ram import RAMState, chunk_ram, fused_recurrent_ram, naive_recurrent_ram, ram_address
from tests.ops.test_hardening import reference_topk, tied_logits

pytestmark = pytest.mark.triton

PATHS = {'chunk': chunk_ram, 'fused': fused_recurrent_ram}


@pytest.fixture(autouse=True)
def triton_backend(monkeypatch, poison_kernel_outputs):
    """Force the Triton kernels and NaN-fill every buffer they should overwrite."""
    monkeypatch.setenv('RAMNET_FLA_BACKEND', 'triton')


@pytest.mark.parametrize('num_factors, factor_dim, topk', [
    pytest.param(3, 4, 4, id='U3-dp4-K4'),
    pytest.param(4, 2, 16, id='K=M'),
    pytest.param(2, 3, 5, id='dp3'),
    pytest.param(2, 8, 32, id='wide-beam'),      # K * d_p > 128: the select-by-max branch
])
def test_ties_break_toward_the_lower_flat_index(num_factors, factor_dim, topk):
    logits = tied_logits((6,), num_factors, factor_dim, seed=5)
    logits[0] = 0.0                                              # everything tied
    indices, log_probs = ram_address(logits, num_factors, topk)
    expected_indices, expected_scores = reference_topk(logits, num_factors, topk)
    assert torch.equal(indices, expected_indices)
    assert indices[0].tolist() == list(range(topk))
    torch.testing.assert_close(log_probs, expected_scores)


@pytest.mark.parametrize('topk', [4, 32], ids=['rank', 'max'])
@pytest.mark.parametrize('bad', [float('nan'), float('inf')], ids=['nan', 'inf'])
def test_non_finite_rows_give_nan_log_probs_and_valid_indices(bad, topk):
    logits = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))      # U=2, d_p=8
    clean_indices, clean_log_probs = ram_address(logits, 2, topk)
    logits[1, 9] = bad
    logits[3] = bad
    indices, log_probs = ram_address(logits, 2, topk)
    for row in (1, 3):
        assert indices[row].tolist() == list(range(topk))
        assert torch.isnan(log_probs[row]).all()
    assert torch.equal(indices[[0, 2]], clean_indices[[0, 2]])
    torch.testing.assert_close(log_probs[[0, 2]], clean_log_probs[[0, 2]])


@pytest.mark.parametrize('topk', [8, 20], ids=['finite', 'beyond-the-finite'])
def test_minus_inf_logits_are_probability_zero(topk):
    # factor 0 keeps digit 3 only: 16 addresses have a finite log-probability; past them, -inf ones
    # follow in index order, distinct
    logits = torch.randn(3, 12, generator=torch.Generator().manual_seed(4))
    logits[:, 0:3] = float('-inf')
    indices, log_probs = ram_address(logits, 3, topk)
    expected_indices, expected_scores = reference_topk(logits, 3, topk)
    assert torch.equal(indices, expected_indices)
    torch.testing.assert_close(log_probs, expected_scores)
    assert all(len(set(row)) == topk for row in indices.tolist())


@pytest.mark.parametrize('name', PATHS)
def test_paths_pick_the_same_slots_for_tied_logits(name):
    B, T, H = 2, 6, 2
    q, k = tied_logits((B, T, H), 3, 4, seed=1), tied_logits((B, T, H), 3, 4, seed=2)
    v, gamma = torch.randn(B, T, H, 3), torch.rand(B, T, H)
    o_ref, state_ref = naive_recurrent_ram(q.double(), k.double(), v.double(), gamma.double(), 3, 4, cape=True,
                                           output_final_state=True)
    o, state = PATHS[name](q, k, v, gamma, 3, 4, cape=True, output_final_state=True)
    torch.testing.assert_close(o.double(), o_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(state.memory.double(), state_ref.memory, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('name', PATHS)
def test_nan_in_a_write_logit_poisons_its_slots_and_nothing_else(name):
    torch.manual_seed(0)
    B, T, H = 2, 8, 2
    q, k = torch.randn(B, T, H, 12), torch.randn(B, T, H, 12)
    v, gamma = torch.randn(B, T, H, 3), torch.rand(B, T, H)
    k[0, 5, 0, 0] = float('nan')
    o_ref, state_ref = naive_recurrent_ram(q, k, v, gamma, 3, 4, cape=True, output_final_state=True)
    o, state = PATHS[name](q, k, v, gamma, 3, 4, cape=True, output_final_state=True)
    assert torch.equal(torch.isnan(o), torch.isnan(o_ref))
    assert torch.equal(torch.isnan(state.memory), torch.isnan(state_ref.memory))
    torch.testing.assert_close(o.nan_to_num(7.0), o_ref.nan_to_num(7.0), atol=1e-4, rtol=1e-4)
    assert torch.isnan(state.mass[0, 0, [(s + 5) % 64 for s in range(4)]]).all()
    assert torch.isfinite(state.memory[1]).all() and torch.isfinite(state.memory[0, 1]).all()


@pytest.mark.parametrize('name', PATHS)
@pytest.mark.parametrize('shape', [(0, 3, 2), (2, 3, 0), (2, 0, 2)], ids=['B=0', 'H=0', 'T=0'])
def test_empty_inputs_give_empty_outputs_and_states(name, shape):
    B, T, H = shape
    q, k = torch.randn(B, T, H, 12), torch.randn(B, T, H, 12)
    v, gamma = torch.randn(B, T, H, 3), torch.rand(B, T, H)
    o, state = PATHS[name](q, k, v, gamma, 3, 4, output_final_state=True)
    assert o.shape == (B, T, H, 3)
    assert state.memory.shape == (B, H, 64, 3) and state.mass.shape == (B, H, 64)
    assert state.position.tolist() == [T] * B
    assert not state.memory.any() and not state.mass.any()


def test_fused_recurrent_leaves_an_int32_position_state_untouched():
    torch.manual_seed(0)
    q, k, v, gamma = torch.randn(1, 3, 2, 12), torch.randn(1, 3, 2, 12), torch.randn(1, 3, 2, 3), torch.rand(1, 3, 2)
    state = RAMState(torch.zeros(1, 2, 64, 3), torch.zeros(1, 2, 64), torch.tensor([4], dtype=torch.int32))
    _, final = fused_recurrent_ram(q, k, v, gamma, 3, 4, cape=True, initial_state=state, output_final_state=True)
    assert not state.memory.any() and not state.mass.any() and state.position.tolist() == [4]
    assert final.position.tolist() == [7] and final.mass.any()


def test_beams_beyond_a_triton_block_are_rejected_by_name():
    # U=2, d_p=1024 (M = 2**20), K=2048: 2048 x 1024 candidates exceed Triton's 2**20 elements per block
    with pytest.raises(ValueError, match='topk'):
        ram_address(torch.randn(1, 2048), 2, 2048)
