"""Our MQAR generator against Zoology's `multiquery_ar`, written out independently here as a plain
Python sampler (its definition, not its code), compared over many draws.

Zoology's definition (zoology/data/multiquery_ar.py, num_passes=1, random_non_queries=True):
- keys: D distinct tokens from [1, vocab/2); values: D distinct tokens from [vocab/2, vocab);
- inputs start with k_1 v_1 ... k_D v_D; the query of pair i (its key again) sits at 2D + 2*g_i,
  the gaps g_1..g_D drawn one after another without replacement from {0..(T-2D)/2 - 1} with
  p(g) ~ (g + 1) ** (a - 1) (numpy's choice(replace=False, p=p): successive draws, so g_1 ~ p and
  pair 1 tends to be asked first);
- the label at a query position is that key's value, -100 elsewhere; every other position holds a
  token drawn uniformly from [0, vocab).
"""

import random

import pytest
import torch

from ramnet_fla.mqar.data import IGNORE_INDEX, MQARTask, generate_mqar


def zoology_reference(vocab: int, seq_len: int, pairs: int, power_a: float, num_examples: int, seed: int):
    """[N, T] inputs and labels by Zoology's definition, one example at a time with `random`."""
    rng = random.Random(seed)
    space = (seq_len - 2 * pairs) // 2
    weights = [(g + 1) ** (power_a - 1) for g in range(space)]
    inputs, labels = [], []
    for _ in range(num_examples):
        keys = rng.sample(range(1, vocab // 2), pairs)
        values = rng.sample(range(vocab // 2, vocab), pairs)
        remaining, gaps = list(weights), []
        for _ in range(pairs):
            g = rng.choices(range(space), weights=remaining)[0]
            gaps.append(g)
            remaining[g] = 0.0
        x = [rng.randrange(vocab) for _ in range(seq_len)]
        y = [IGNORE_INDEX] * seq_len
        for i, (k, v, g) in enumerate(zip(keys, values, gaps)):
            x[2 * i], x[2 * i + 1] = k, v
            x[2 * pairs + 2 * g], y[2 * pairs + 2 * g] = k, v
        inputs.append(x)
        labels.append(y)
    return torch.tensor(inputs), torch.tensor(labels)


def _statistics(inputs: torch.Tensor, labels: torch.Tensor, vocab: int, pairs: int, space: int) -> dict:
    keys, values = inputs[:, 0:2 * pairs:2], inputs[:, 1:2 * pairs:2]
    query = labels != IGNORE_INDEX
    # gap of pair i: where its key comes back
    later = inputs[:, 2 * pairs:]                                                    # [N, T - 2D]
    match = (later[:, None, :] == keys[:, :, None]) & query[:, None, 2 * pairs:]     # [N, D, T - 2D]
    gaps = match.float().argmax(-1) // 2                                             # [N, D]
    filler = ~query
    filler[:, :2 * pairs] = False
    return {
        'key_range': (keys.min().item(), keys.max().item()),
        'value_range': (values.min().item(), values.max().item()),
        'keys_distinct': bool((keys.sort(1).values.diff(dim=1) > 0).all()),
        'values_distinct': bool((values.sort(1).values.diff(dim=1) > 0).all()),
        'labels_per_example': query.sum(1),
        'queried_once': bool((match.sum(-1) == 1).all()),
        'labels_are_values': bool((labels[query].view(-1, pairs).sort(1).values == values.sort(1).values).all()),
        'gap_histogram': torch.bincount(gaps.flatten(), minlength=space).double() / gaps.numel(),
        'first_gap_histogram': torch.bincount(gaps[:, 0], minlength=space).double() / gaps.shape[0],
        'mean_gap_per_pair': gaps.double().mean(0),
        'filler_low_half': (inputs[filler] < vocab // 2).double().mean().item(),
        'key_mean': keys.double().mean().item(),
    }


@pytest.mark.parametrize('vocab,seq_len,pairs', [(1024, 128, 16), (8192, 256, 64)], ids=['T128-D16', 'T256-D64'])
def test_generator_matches_zoology_statistics(vocab, seq_len, pairs):
    power_a, n = 0.01, 3000
    task = MQARTask(vocab_size=vocab, seq_len=seq_len, num_kv_pairs=pairs, power_a=power_a)
    space = task.num_gaps
    ours = _statistics(*generate_mqar(task, n, seed=0), vocab, pairs, space)
    ref = _statistics(*zoology_reference(vocab, seq_len, pairs, power_a, n, seed=0), vocab, pairs, space)

    half = vocab // 2
    for stats in (ours, ref):
        assert stats['key_range'][0] >= 1 and stats['key_range'][1] <= half - 1
        assert stats['value_range'][0] >= half and stats['value_range'][1] <= vocab - 1
        assert stats['keys_distinct'] and stats['values_distinct'] and stats['queried_once']
        assert stats['labels_are_values']
        assert (stats['labels_per_example'] == pairs).all()
        assert stats['key_mean'] == pytest.approx(half / 2, rel=0.03)         # uniform over [1, vocab/2)
        assert stats['filler_low_half'] == pytest.approx(0.5, abs=0.02)       # filler uniform over [0, vocab)
    # the first pair's gap is one draw from p(g) ~ (g + 1) ** (a - 1), in both
    p = task.gap_probabilities()
    for stats in (ours, ref):
        assert 0.5 * (stats['first_gap_histogram'] - p).abs().sum() < 0.06
    # query positions over all pairs: the same histogram (total variation distance)
    assert 0.5 * (ours['gap_histogram'] - ref['gap_histogram']).abs().sum() < 0.03
    # successive draws: pair 1 is asked sooner than pair D, by the same amount in both
    for stats in (ours, ref):
        assert stats['mean_gap_per_pair'][0] + 3 < stats['mean_gap_per_pair'][-1]
    spread = (ours['mean_gap_per_pair'] - ref['mean_gap_per_pair']).abs()
    assert spread.max() < 0.12 * space, (ours['mean_gap_per_pair'], ref['mean_gap_per_pair'])
