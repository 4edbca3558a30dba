"""Hardening of the op (issue 10): non-finite logits, ties, address overflow, caller state, empty inputs.

Contracts tested here (stated in docs/op.md):
- A (token, head) row whose logits contain a NaN or +inf (any factor whose log-softmax is not a
  number) gets NaN log-probabilities for all K addresses and the K lowest flat indices 0..K-1, in
  every path and beam-search regime: NaN in, NaN out, indices always valid. -inf logits are valid
  (probability 0) while every factor keeps a finite logit.
- Ties: among equal log-probabilities the lower flat index comes first, in every path and regime.
- M = d_p ** U must stay below 2**63 (int64 flat indices).
- `fused_recurrent_ram` advances the caller's state in place only as a whole (memory, mass and
  position), or, when its layout cannot be updated in place, leaves all of it untouched.
"""

from __future__ import annotations

import pytest
import torch

from ramnet_fla.ops.ram import RAMState, chunk_ram, fused_recurrent_ram, naive_recurrent_ram, ram_address
from ramnet_fla.ops.ram.naive import naive_address

from tests.ops.utils import all_addresses

PATHS = {'naive': naive_recurrent_ram, 'chunk': chunk_ram, 'fused': fused_recurrent_ram}
REGIME_ROWS = {'ranked': 8, 'merge': 600}         # below / above the sorting-network threshold (512 rows)


def reference_topk(logits: torch.Tensor, num_factors: int, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-K by enumeration, ordered by (log-probability desc, flat index asc).

    Scores are summed factor by factor in the logits' dtype (float32 stays float32), as the beam
    search does, so exact ties stay exact ties. logits [R, U*d_p] -> ([R, K], [R, K]).
    """
    factor_dim = logits.shape[-1] // num_factors
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    log_probs = logits.to(dtype).unflatten(-1, (num_factors, factor_dim)).log_softmax(-1)   # [R, U, d_p]
    digits = all_addresses(num_factors, factor_dim)                                         # [M, U]
    score = log_probs[:, 0, digits[:, 0]]
    for u in range(1, num_factors):
        score = score + log_probs[:, u, digits[:, u]]                                      # [R, M]
    order = torch.sort(score, dim=-1, descending=True, stable=True).indices[:, :topk]     # stable: index asc
    return order, score.gather(-1, order)


# ties ------------------------------------------------------------------------------------------

FACTOR_SCALES = (1.0, 1.37, 2.71, 0.53)


def tied_logits(shape: tuple[int, ...], num_factors: int, factor_dim: int, seed: int) -> torch.Tensor:
    """Logits from {0, s_u} per factor u, with scales s_u far apart: addresses tie exactly when their
    digits have equal logits factor by factor (such ties are bit-exact in any precision and layout),
    and differ by at least ~0.1 in log-probability otherwise, so every correct path sees the same ties."""
    generator = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, (*shape, num_factors, factor_dim), generator=generator).float()
    scales = torch.tensor(FACTOR_SCALES[:num_factors])[:, None]
    return (bits * scales).flatten(-2)

@pytest.mark.parametrize('regime', REGIME_ROWS)
def test_all_zero_logits_pick_the_lowest_indices(regime):
    rows = REGIME_ROWS[regime]
    indices, log_probs = ram_address(torch.zeros(rows, 12), 3, 4)
    assert indices.tolist() == [[0, 1, 2, 3]] * rows
    assert torch.allclose(log_probs, torch.full_like(log_probs, -torch.log(torch.tensor(64.))))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64], ids=['fp32', 'fp64'])
@pytest.mark.parametrize('regime', REGIME_ROWS)
@pytest.mark.parametrize('num_factors,factor_dim,topk', [(3, 4, 4), (3, 4, 8), (2, 8, 5), (4, 2, 16)])
def test_ties_break_toward_the_lower_flat_index(regime, dtype, num_factors, factor_dim, topk):
    rows = REGIME_ROWS[regime]
    logits = tied_logits((rows,), num_factors, factor_dim, seed=7).to(dtype)
    indices, log_probs = ram_address(logits, num_factors, topk)
    expected_indices, expected_scores = reference_topk(logits, num_factors, topk)
    assert torch.equal(indices, expected_indices)
    torch.testing.assert_close(log_probs, expected_scores.to(log_probs.dtype))


def test_one_row_and_many_rows_agree_on_tied_logits():
    logits = tied_logits((600,), 3, 4, seed=3)
    many, _ = ram_address(logits, 3, 4)
    one = torch.cat([ram_address(row[None], 3, 4)[0] for row in logits[:40]])
    assert torch.equal(many[:40], one)


@pytest.mark.parametrize('name', PATHS)
def test_paths_pick_the_same_slots_for_tied_logits(name):
    torch.manual_seed(0)
    B, T, H = 2, 300, 2                           # 1,200 rows per call of the address search: merge regime
    q, k = tied_logits((B, T, H), 3, 4, seed=1), tied_logits((B, T, H), 3, 4, seed=2)
    v, gamma = torch.randn(B, T, H, 3), torch.rand(B, T, H)
    o_ref, state_ref = naive_recurrent_ram(q.double(), k.double(), v.double(), gamma.double(), 3, 4,
                                           output_final_state=True)
    o, state = PATHS[name](q, k, v, gamma, 3, 4, output_final_state=True)
    torch.testing.assert_close(o.double(), o_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(state.memory.double(), state_ref.memory, atol=1e-4, rtol=1e-4)


# non-finite logits ---------------------------------------------------------------------------

@pytest.mark.parametrize('regime', REGIME_ROWS)
@pytest.mark.parametrize('bad', [float('nan'), float('inf')], ids=['nan', 'inf'])
def test_non_finite_rows_give_nan_log_probs_and_valid_indices(regime, bad):
    rows = REGIME_ROWS[regime]
    logits = torch.randn(rows, 12, generator=torch.Generator().manual_seed(1))
    clean_indices, clean_log_probs = ram_address(logits, 3, 4)
    poisoned = logits.clone()
    poisoned[2, 5] = bad                          # factor 1 of row 2
    poisoned[5] = bad                             # the whole of row 5
    indices, log_probs = ram_address(poisoned, 3, 4)
    assert indices.min() >= 0 and indices.max() < 64
    for row in (2, 5):
        assert indices[row].tolist() == [0, 1, 2, 3]
        assert torch.isnan(log_probs[row]).all()
    keep = [r for r in range(rows) if r not in (2, 5)]
    assert torch.equal(indices[keep], clean_indices[keep])
    assert torch.equal(log_probs[keep], clean_log_probs[keep])


def test_nan_logits_propagate_to_the_gradient_not_into_other_rows():
    logits = torch.randn(600, 12, generator=torch.Generator().manual_seed(2))
    logits[3, 0] = float('nan')
    logits.requires_grad_(True)
    _, log_probs = ram_address(logits, 3, 4)
    log_probs.nan_to_num(0.0).sum().backward()
    others = torch.cat([logits.grad[:3], logits.grad[4:]])
    assert torch.isfinite(others).all()


@pytest.mark.parametrize('regime', REGIME_ROWS)
def test_minus_inf_logits_are_probability_zero(regime):
    rows = REGIME_ROWS[regime]
    logits = torch.randn(rows, 12, generator=torch.Generator().manual_seed(4))
    logits[:, 0:3] = float('-inf')                # factor 0 keeps only digit 3
    indices, log_probs = ram_address(logits, 3, 8)
    expected_indices, expected_scores = reference_topk(logits, 3, 8)
    assert torch.equal(indices, expected_indices)
    assert torch.isfinite(log_probs).all() and torch.equal(indices % 4, torch.full_like(indices, 3))
    torch.testing.assert_close(log_probs, expected_scores)


@pytest.mark.parametrize('name', PATHS)
@pytest.mark.parametrize('cape', [False, True], ids=['plain', 'cape'])
def test_nan_in_a_write_logit_poisons_its_slots_and_nothing_else(name, cape):
    torch.manual_seed(0)
    B, T, H = 2, 128, 2
    q, k = torch.randn(B, T, H, 12), torch.randn(B, T, H, 12)
    v, gamma = torch.randn(B, T, H, 3), torch.rand(B, T, H)
    k[0, 5, 0, 0] = float('nan')
    o_ref, state_ref = naive_recurrent_ram(q.double(), k.double(), v.double(), gamma.double(), 3, 4, cape=cape,
                                           output_final_state=True)
    o, state = PATHS[name](q, k, v, gamma, 3, 4, cape=cape, output_final_state=True)
    assert torch.equal(torch.isnan(o), torch.isnan(o_ref))
    assert torch.equal(torch.isnan(state.memory), torch.isnan(state_ref.memory))
    torch.testing.assert_close(o.double().nan_to_num(7.0), o_ref.nan_to_num(7.0), atol=1e-4, rtol=1e-4)
    # token 5 of sequence 0, head 0 wrote slots 0..3 (shifted by its position 5 under CAPE) with NaN
    written = [(s + (5 if cape else 0)) % 64 for s in range(4)]
    assert torch.isnan(state.mass[0, 0, written]).all()
    assert torch.isfinite(state.memory[1]).all() and torch.isfinite(o[1]).all()   # the other sequence
    assert torch.isfinite(state.memory[0, 1]).all()                                 # the other head


@pytest.mark.parametrize('name', PATHS)
def test_nan_in_a_read_logit_gives_nan_output_for_that_token_only(name):
    torch.manual_seed(0)
    B, T, H = 2, 64, 2
    q, k = torch.randn(B, T, H, 12), torch.randn(B, T, H, 12)
    v, gamma = torch.randn(B, T, H, 3), torch.rand(B, T, H)
    o_clean, _ = PATHS[name](q, k, v, gamma, 3, 4)
    q[1, 9, 1, 4] = float('nan')
    o, _ = PATHS[name](q, k, v, gamma, 3, 4)
    assert torch.isnan(o[1, 9, 1]).all()
    mask = torch.ones_like(o, dtype=torch.bool)
    mask[1, 9, 1] = False
    torch.testing.assert_close(o[mask], o_clean[mask])


# address overflow ------------------------------------------------------------------------------

@pytest.mark.parametrize('width,num_factors', [(128, 32), (160, 40), (126, 63)], ids=['4^32', '4^40', '2^63'])
def test_address_spaces_beyond_int64_are_rejected(width, num_factors):
    logits = torch.randn(3, width)
    with pytest.raises(ValueError, match='num_factors') as info:
        ram_address(logits, num_factors, 2)
    assert 'factor' in str(info.value) and '2**63' in str(info.value).replace('2^63', '2**63')
    q = torch.randn(1, 4, 1, width)
    with pytest.raises(ValueError, match='num_factors'):
        chunk_ram(q, q, torch.randn(1, 4, 1, 2), torch.rand(1, 4, 1), num_factors, 2)


def test_the_largest_address_space_gives_valid_indices():
    # M = 2**62 slots: the top address is the per-factor argmax, composed without overflow
    logits = torch.randn(5, 124, generator=torch.Generator().manual_seed(5))
    indices, _ = ram_address(logits, 62, 1)
    digits = logits.view(5, 62, 2).argmax(-1)
    expected = (digits * (2 ** torch.arange(62))).sum(-1)
    assert indices.min() >= 0 and torch.equal(indices[:, 0], expected)


# the caller's state --------------------------------------------------------------------------

def _inputs():
    torch.manual_seed(0)
    B, T, H = 2, 16, 2
    return torch.randn(B, T, H, 12), torch.randn(B, T, H, 12), torch.randn(B, T, H, 3), torch.rand(B, T, H)


def _state(memory_dtype=torch.float32, position_dtype=torch.long, contiguous=True):
    state = RAMState.zeros(2, 2, 64, 3)
    memory = state.memory.to(memory_dtype)
    if not contiguous:
        memory = torch.zeros(2, 2, 3, 64).to(memory_dtype).transpose(-1, -2)
    return RAMState(memory, state.mass.clone(), state.position.to(position_dtype) + 4)


def test_fused_recurrent_advances_a_float32_state_wholly_in_place():
    q, k, v, gamma = _inputs()
    state = _state()
    expected_o, expected = chunk_ram(q, k, v, gamma, 3, 4, cape=True, initial_state=state.clone(),
                                     output_final_state=True)
    o, final = fused_recurrent_ram(q, k, v, gamma, 3, 4, cape=True, initial_state=state, output_final_state=True)
    assert final.memory is state.memory and final.mass is state.mass and final.position is state.position
    assert state.position.tolist() == [20, 20]
    torch.testing.assert_close(o, expected_o)
    torch.testing.assert_close(state.memory, expected.memory)


@pytest.mark.parametrize('layout', ['int32 position', 'fp16 memory', 'strided memory'])
def test_fused_recurrent_leaves_a_state_it_cannot_update_in_place_untouched(layout):
    q, k, v, gamma = _inputs()
    state = {'int32 position': _state(position_dtype=torch.int32), 'fp16 memory': _state(torch.float16),
             'strided memory': _state(contiguous=False)}[layout]
    before = RAMState(state.memory.clone(), state.mass.clone(), state.position.clone())
    expected_o, expected = chunk_ram(q, k, v, gamma, 3, 4, cape=True, initial_state=before,
                                     output_final_state=True)
    o, final = fused_recurrent_ram(q, k, v, gamma, 3, 4, cape=True, initial_state=state, output_final_state=True)
    for name in ('memory', 'mass', 'position'):
        assert torch.equal(getattr(state, name), getattr(before, name)), name
        assert getattr(final, name) is not getattr(state, name), name
    assert final.position.tolist() == [20, 20]
    torch.testing.assert_close(o, expected_o, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(final.mass, expected.mass)


@pytest.mark.parametrize('name', PATHS)
def test_negative_positions_are_rejected(name):
    q, k, v, gamma = _inputs()
    state = RAMState(torch.zeros(2, 2, 64, 3), torch.zeros(2, 2, 64), torch.tensor([3, -1]))
    with pytest.raises(ValueError, match='position'):
        PATHS[name](q, k, v, gamma, 3, 4, initial_state=state, output_final_state=True)


# empty inputs ----------------------------------------------------------------------------------

@pytest.mark.parametrize('name', PATHS)
@pytest.mark.parametrize('shape', [(0, 5, 2), (2, 5, 0), (2, 0, 2)], ids=['B=0', 'H=0', 'T=0'])
def test_empty_inputs_give_empty_outputs_and_states(name, shape):
    B, T, H = shape
    q, k = torch.randn(B, T, H, 12), torch.randn(B, T, H, 12)
    v, gamma = torch.randn(B, T, H, 3), torch.rand(B, T, H)
    o, state = PATHS[name](q, k, v, gamma, 3, 4, output_final_state=True)
    assert o.shape == (B, T, H, 3) and o.dtype == v.dtype
    assert state.memory.shape == (B, H, 64, 3) and state.mass.shape == (B, H, 64)
    assert state.position.tolist() == [T] * B
    assert not state.memory.any() and not state.mass.any()


# found while hardening (beyond the cases of issue 10) -----------------------------------------

@pytest.mark.parametrize('dtype', [torch.float32, torch.float64], ids=['fp32', 'fp64'])
@pytest.mark.parametrize('regime', REGIME_ROWS)
def test_minus_inf_addresses_past_the_finite_ones_come_in_index_order(regime, dtype):
    # factor 0 keeps digit 3 only: 16 finite addresses, then -inf ones, each once, lowest index first
    rows = REGIME_ROWS[regime]
    logits = torch.randn(rows, 12, generator=torch.Generator().manual_seed(6)).to(dtype)
    logits[:, 0:3] = float('-inf')
    indices, log_probs = ram_address(logits, 3, 20)
    expected_indices, expected_scores = reference_topk(logits, 3, 20)
    assert torch.equal(indices, expected_indices)
    assert all(len(set(row)) == 20 for row in indices.tolist())
    assert torch.isneginf(log_probs[:, 16:]).all()
    torch.testing.assert_close(log_probs, expected_scores.to(log_probs.dtype))
    naive_indices, _ = naive_address(logits, 3, 20)
    assert torch.equal(naive_indices, expected_indices)


@pytest.mark.parametrize('regime', REGIME_ROWS)
def test_a_saturated_address_has_log_probability_exactly_zero(regime):
    logits = torch.zeros(REGIME_ROWS[regime], 12)
    logits[:, [0, 4, 8]] = 200.0                  # digit 0 of every factor takes all the mass
    indices, log_probs = ram_address(logits, 3, 4)
    assert indices[:, 0].eq(0).all() and log_probs[:, 0].eq(0).all()


@pytest.mark.parametrize('name', PATHS)
def test_a_strided_initial_state_gives_the_contiguous_result(name):
    q, k, v, gamma = _inputs()
    strided = _state(contiguous=False)
    strided.memory.copy_(torch.randn(strided.memory.shape))
    contiguous = RAMState(strided.memory.contiguous(), strided.mass.clone(), strided.position.clone())
    o, final = PATHS[name](q, k, v, gamma, 3, 4, cape=True, initial_state=strided, output_final_state=True)
    expected_o, expected = PATHS[name](q, k, v, gamma, 3, 4, cape=True, initial_state=contiguous,
                                       output_final_state=True)
    torch.testing.assert_close(o, expected_o)
    torch.testing.assert_close(final.memory, expected.memory)


@pytest.mark.parametrize('name', PATHS)
def test_positions_that_would_overflow_int64_are_rejected(name):
    q, k, v, gamma = _inputs()
    state = RAMState(torch.zeros(2, 2, 64, 3), torch.zeros(2, 2, 64), torch.tensor([3, 2 ** 63 - 2]))
    with pytest.raises(ValueError, match='position'):
        PATHS[name](q, k, v, gamma, 3, 4, cape=True, initial_state=state, output_final_state=True)
