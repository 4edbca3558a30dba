"""TieredRAMState: a file (or host-memory) cold tier with an LRU hot cache, exact against the dense state."""

from __future__ import annotations

import gc

import pytest
import torch

from ramnet_fla.ops.ram import RAMState, TieredRAMState, chunk_ram, fused_recurrent_ram
from tests.ops.utils import assert_rel_close, make_inputs, make_state


@pytest.fixture(autouse=True)
def torch_backend(monkeypatch):
    monkeypatch.setenv('RAMNET_FLA_BACKEND', 'torch')


B, H, U, d_p, V, K = 2, 2, 5, 4, 8, 4            # M = 1024: a table of 2 x 2 x 1024 = 4096 slots
M = d_p ** U
CAPE = [True, False]


def decode_both(tiered: TieredRAMState, dense: RAMState, steps: int, seed: int):
    """Decode `steps` tokens on both states, asserting every output equal."""
    for step in range(steps):
        token = make_inputs(B, 1, H, U, d_p, V, seed=seed + step)
        dense_o, dense = fused_recurrent_ram(*token, U, K, cape=CAPE, initial_state=dense, output_final_state=True)
        o, returned = fused_recurrent_ram(*token, U, K, cape=CAPE, initial_state=tiered, output_final_state=True)
        assert returned is tiered
        assert torch.equal(o, dense_o), f"step {step}: tiered output differs from the dense one"
    return dense


@pytest.mark.parametrize('cold', ['file', 'memory'])
def test_tiered_prefill_and_decode_equal_dense_with_a_cache_100x_smaller(tmp_path, cold):
    cache_slots = 40                              # table 4096 slots >= 100 x the hot tier
    path = tmp_path / 'table.f32' if cold == 'file' else None
    tiered = TieredRAMState.create(B, H, M, V, cache_slots=cache_slots, path=path)
    assert tiered.cold_nbytes() >= 100 * cache_slots * (V + 1) * 4
    q, k, v, gamma = make_inputs(B, 24, H, U, d_p, V, seed=70)
    dense_o, dense = chunk_ram(q, k, v, gamma, U, K, cape=CAPE, output_final_state=True)
    o, returned = chunk_ram(q, k, v, gamma, U, K, cape=CAPE, initial_state=tiered, output_final_state=True)
    assert returned is tiered and torch.equal(o, dense_o)
    dense = decode_both(tiered, dense, steps=30, seed=71)
    lookups = 30 * 2 * B * H * K
    assert tiered.hits + tiered.misses == lookups
    assert tiered.evictions > 0 and tiered.write_backs > 0
    assert 0.0 <= tiered.hit_rate < 1.0
    assert torch.equal(tiered.position, dense.position)
    # a second prefill chunk on a warm cache: rows come from both tiers
    q, k, v, gamma = make_inputs(B, 9, H, U, d_p, V, seed=72)
    dense_o, dense = chunk_ram(q, k, v, gamma, U, K, cape=CAPE, initial_state=dense, output_final_state=True)
    o, _ = chunk_ram(q, k, v, gamma, U, K, cape=CAPE, initial_state=tiered, output_final_state=True)
    assert torch.equal(o, dense_o)
    final = tiered.to_dense()
    assert torch.equal(final.memory, dense.memory) and torch.equal(final.mass, dense.mass)


def test_hot_rows_are_reused_and_lru_evicts_the_oldest():
    tiered = TieredRAMState.create(1, 1, 16, 2, cache_slots=4)
    first = tiered.locate(torch.tensor([1, 2, 3]), create=True)
    tiered.table[first] = 1.0
    again = tiered.locate(torch.tensor([3, 2]), create=False)
    assert again.tolist() == first[[2, 1]].tolist() and tiered.hits == 2 and tiered.misses == 3
    tiered.locate(torch.tensor([4]), create=False)          # fills the last free row: no eviction
    assert tiered.evictions == 0
    tiered.locate(torch.tensor([5]), create=False)          # evicts key 1, the least recently used
    assert tiered.evictions == 1 and tiered.write_backs == 1
    assert float(tiered.cold[1, 0]) == 1.0 and float(tiered.cold[2, 0]) == 0.0     # 2 is still hot (and dirty)
    assert torch.equal(tiered.read_rows(torch.tensor([1, 2, 3]))[:, 0], torch.ones(3))


def test_write_back_persists_in_the_file_and_reopens(tmp_path):
    path = tmp_path / 'table.f32'
    tiered = TieredRAMState.create(B, H, M, V, cache_slots=64, path=path)
    q, k, v, gamma = make_inputs(B, 10, H, U, d_p, V, seed=80)
    _, dense = chunk_ram(q, k, v, gamma, U, K, cape=CAPE, output_final_state=True)
    chunk_ram(q, k, v, gamma, U, K, cape=CAPE, initial_state=tiered, output_final_state=True)
    dense = decode_both(tiered, dense, steps=5, seed=81)
    tiered.flush()
    reopened = TieredRAMState.open(path, B, H, M, V, cache_slots=64, position=tiered.position)
    copy = reopened.to_dense()
    assert torch.equal(copy.memory, dense.memory) and torch.equal(copy.mass, dense.mass)
    decode_both(reopened, dense, steps=3, seed=82)


def test_a_temporary_table_file_is_deleted_with_its_state(tmp_path):
    state = TieredRAMState.create_temporary(2, 2, 4 ** 4, 3, cache_slots=16, directory=tmp_path)
    path = state.path
    assert path.parent == tmp_path and path.stat().st_size == 2 * 2 * 4 ** 4 * 4 * 4
    q, k, v, gamma = make_inputs(2, 3, 2, 4, 4, 3, seed=9)
    with torch.no_grad():
        fused_recurrent_ram(q, k, v, gamma, 4, 2, initial_state=state, output_final_state=True)
    assert state.misses > 0
    del state
    gc.collect()
    assert not path.exists()
    with pytest.raises(FileNotFoundError):
        TieredRAMState.create_temporary(1, 1, 16, 2, cache_slots=4, directory=tmp_path / 'missing')


def test_from_dense_and_bytes():
    dense = make_state(2, 2, 64, 4, positions=[3, 5])
    tiered = TieredRAMState.from_dense(dense, cache_slots=32)
    back = tiered.to_dense()
    assert torch.equal(back.memory, dense.memory) and torch.equal(back.position, dense.position)
    assert tiered.cold_nbytes() == 2 * 2 * 64 * 5 * 4
    assert tiered.nbytes() < tiered.cold_nbytes()


def test_missing_truncated_and_existing_files_are_reported_by_name(tmp_path):
    missing = tmp_path / 'nowhere.f32'
    with pytest.raises(FileNotFoundError, match='nowhere.f32'):
        TieredRAMState.open(missing, 1, 1, 16, 4, cache_slots=4)
    truncated = tmp_path / 'short.f32'
    truncated.write_bytes(b'\0' * (16 * 5 * 4 - 4))
    with pytest.raises(ValueError, match='short.f32.*truncated'):
        TieredRAMState.open(truncated, 1, 1, 16, 4, cache_slots=4)
    with pytest.raises(FileExistsError, match='short.f32'):
        TieredRAMState.create(1, 1, 16, 4, cache_slots=4, path=truncated)


def test_bad_tiered_use_is_rejected():
    tiered = TieredRAMState.create(B, H, M, V, cache_slots=8)               # a step needs B*H*K = 16 rows
    token = make_inputs(B, 1, H, U, d_p, V, seed=90)
    with pytest.raises(ValueError, match='cache_slots'):
        fused_recurrent_ram(*token, U, K, initial_state=tiered, output_final_state=True)
    tiered = TieredRAMState.create(B, H, M, V, cache_slots=64)
    with pytest.raises(ValueError, match='TieredRAMState'):
        fused_recurrent_ram(*token, U, K, initial_state=tiered, output_final_state=True, state_format='sparse')
    with pytest.raises(TypeError, match='float64'):
        fused_recurrent_ram(*(x.double() for x in token), U, K, initial_state=tiered, output_final_state=True)
    with pytest.raises(ValueError, match=r'\(N, H, M, V\)'):
        fused_recurrent_ram(*token, U, K, initial_state=TieredRAMState.create(B, H, 256, V, cache_slots=64),
                            output_final_state=True)
