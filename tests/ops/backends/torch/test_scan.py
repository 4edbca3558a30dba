"""The depth-major chain scans (ramnet_fla.ops.ram.backends.torch.scan) against a plain loop over each chain."""

from __future__ import annotations

import pytest
import torch

from ramnet_fla.ops.ram import chunk_ram, naive_recurrent_ram
from ramnet_fla.ops.ram.backends.torch import scan
from tests.ops.utils import Case, assert_rel_close, outputs_and_grads


def random_chains(lengths: list[int], width: int = 3, seed: int = 0):
    """Chains of the given lengths in chain-major order: (chain_start [E], a [E], b [E, D])."""
    generator = torch.Generator().manual_seed(seed)
    chain_start = torch.cat([torch.eye(1, n, dtype=torch.bool).squeeze(0) for n in lengths])
    total = chain_start.shape[0]
    a = torch.rand(total, generator=generator, dtype=torch.float64) * 0.9 + 0.1
    b = torch.randn(total, width, generator=generator, dtype=torch.float64)
    return chain_start, a, b


def loop_scan(chain_start, a, b):
    """S_e = a_e S_{e-1} + b_e within each run, one element at a time (chain-major)."""
    out = b.clone()
    for e in range(1, b.shape[0]):
        if not chain_start[e]:
            out[e] += a[e] * out[e - 1]
    return out


def loop_scan_reverse(chain_start, a, g):
    """G_e = g_e + a_{e+1} G_{e+1} while e+1 is in the same run (chain-major)."""
    out = g.clone()
    for e in range(g.shape[0] - 2, -1, -1):
        if not chain_start[e + 1]:
            out[e] += a[e + 1] * out[e + 1]
    return out


LENGTHS = [
    pytest.param([1], id='one-element'),
    pytest.param([3, 1, 4, 1, 5, 9, 2, 6], id='short-mixed'),
    pytest.param([40, 1, 17, 33, 2, 40], id='long-ties'),
    pytest.param([1] * 7 + [64], id='one-long'),
]


@pytest.mark.parametrize('lengths', LENGTHS)
def test_layout_is_depth_major_and_longest_first(lengths):
    chain_start, _, _ = random_chains(lengths)
    layout = scan.chain_layout(chain_start)
    assert torch.equal(layout.position.sort().values, torch.arange(sum(lengths)))
    assert layout.depths == max(lengths)
    assert layout.widths == [sum(n > d for n in lengths) for d in range(max(lengths))]
    # element j of chain c sits at offsets[j] + (rank of c by length, longest first, ties in order)
    ranks = sorted(range(len(lengths)), key=lambda c: -lengths[c])
    expected, first = [], 0
    for c, n in enumerate(lengths):
        expected += [layout.offsets[j] + ranks.index(c) for j in range(n)]
        first += n
    assert layout.position.tolist() == expected
    ends = [expected[sum(lengths[:c + 1]) - 1] for c in range(len(lengths))]
    assert layout.ends.tolist() == ends


@pytest.mark.parametrize('lengths', LENGTHS)
def test_scans_match_a_loop(lengths):
    chain_start, a, b = random_chains(lengths, seed=len(lengths))
    layout = scan.chain_layout(chain_start)

    def to_depth_major(x):
        return torch.empty_like(x).index_copy_(0, layout.position, x)

    forward = scan.chain_scan_(to_depth_major(a), to_depth_major(b), layout)
    torch.testing.assert_close(forward, to_depth_major(loop_scan(chain_start, a, b)), rtol=1e-12, atol=1e-12)

    g = torch.randn_like(b)
    reverse = scan.chain_scan_reverse_(to_depth_major(a), to_depth_major(g), layout)
    torch.testing.assert_close(reverse, to_depth_major(loop_scan_reverse(chain_start, a, g)), rtol=1e-12, atol=1e-12)

    previous = torch.zeros(b.shape[0], dtype=b.dtype)
    previous[1:] = (g[1:] * b[:-1]).sum(1)
    previous[chain_start] = 0
    dot = scan.chain_previous_dot(to_depth_major(g), to_depth_major(b), layout)
    torch.testing.assert_close(dot, to_depth_major(previous), rtol=1e-12, atol=1e-12)


def test_one_chain_per_slot_as_long_as_the_sequence():
    # K = M: every token writes every slot, so each of the M chains holds all 300 tokens
    case = Case(batch=1, seq_len=300, num_heads=1, num_factors=2, factor_dim=2, value_dim=2, topk=4)
    result = outputs_and_grads(chunk_ram, case)
    reference = outputs_and_grads(naive_recurrent_ram, case)
    for name in reference:
        if name != 'position':
            assert_rel_close(name, result[name], reference[name], 1e-5)
