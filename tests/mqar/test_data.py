"""The MQAR generator: Zoology's layout, label placement, seeds and the power law of query gaps."""

import pytest
import torch

from ramnet_fla.mqar.data import IGNORE_INDEX, MQARTask, generate_mqar, split_seed


def _check_example_layout(task: MQARTask, inputs: torch.Tensor, labels: torch.Tensor) -> None:
    D, half = task.num_kv_pairs, task.vocab_size // 2
    keys, values = inputs[:, 0:2 * D:2], inputs[:, 1:2 * D:2]
    assert ((keys >= 1) & (keys < half)).all(), "keys come from the lower half of the vocabulary, without 0"
    assert ((values >= half) & (values < task.vocab_size)).all(), "values come from the upper half"
    assert (keys.sort(1).values.diff(dim=1) > 0).all(), "the D keys of an example are distinct"
    assert (values.sort(1).values.diff(dim=1) > 0).all(), "the D values of an example are distinct"
    assert (labels[:, :2 * D] == IGNORE_INDEX).all(), "no label inside the key/value prefix"
    for row in range(inputs.shape[0]):
        query_positions = (labels[row] != IGNORE_INDEX).nonzero().squeeze(1)
        assert len(query_positions) == D, "exactly one query per key"
        assert ((query_positions - 2 * D) % 2 == 0).all(), "queries sit at even offsets after the pairs"
        queried = inputs[row, query_positions]
        assert sorted(queried.tolist()) == sorted(keys[row].tolist()), "every key is queried exactly once"
        pair = dict(zip(keys[row].tolist(), values[row].tolist()))
        assert labels[row, query_positions].tolist() == [pair[k] for k in queried.tolist()], \
            "the label at a query is the value written after that key"


@pytest.mark.parametrize('filler', ['zero', 'random'])
@pytest.mark.parametrize('seq_len,pairs,vocab', [(64, 16, 1024), (16, 4, 20), (32, 1, 64), (256, 64, 8192)],
                         ids=['T64-D16', 'T16-D4-full', 'T32-D1', 'T256-D64'])
def test_layout_and_labels(filler, seq_len, pairs, vocab):
    task = MQARTask(vocab_size=vocab, seq_len=seq_len, num_kv_pairs=pairs, filler=filler)
    inputs, labels = generate_mqar(task, 300, seed=3)
    assert inputs.shape == labels.shape == (300, seq_len)
    assert inputs.dtype == labels.dtype == torch.int64
    _check_example_layout(task, inputs, labels)
    filler_mask = labels == IGNORE_INDEX
    filler_mask[:, :2 * pairs] = False
    if filler == 'zero':
        assert (inputs[filler_mask] == 0).all()
    else:
        fill = inputs[filler_mask]
        assert ((fill >= 0) & (fill < vocab)).all()
        if fill.numel() > 1000:   # uniform over the whole vocabulary: both halves show up, 0 is not special
            assert (fill < vocab // 2).float().mean().item() == pytest.approx(0.5, abs=0.05)


def test_seeds_are_reproducible_and_splits_disjoint():
    task = MQARTask(vocab_size=1024, seq_len=64, num_kv_pairs=8)
    a, b = generate_mqar(task, 64, seed=5), generate_mqar(task, 64, seed=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    test = generate_mqar(task, 64, seed=5, split='test')
    other = generate_mqar(task, 64, seed=6)
    assert not torch.equal(a[0], test[0]) and not torch.equal(a[0], other[0])
    train_rows = {tuple(r) for r in a[0].tolist()}
    assert not train_rows & {tuple(r) for r in test[0].tolist()}
    # the streams of train and test never share a generator seed, whatever the two run seeds are
    train_seeds = {split_seed(s, 'train') for s in range(200)}
    test_seeds = {split_seed(s, 'test') for s in range(200)}
    assert not train_seeds & test_seeds and len(train_seeds) == len(test_seeds) == 200


def test_more_examples_than_one_chunk_keep_their_prefix():
    task = MQARTask(vocab_size=128, seq_len=32, num_kv_pairs=4)
    small, large = generate_mqar(task, 100, seed=1), generate_mqar(task, 5000, seed=1)
    assert torch.equal(large[0][:100], small[0]) and large[0].shape == (5000, 32)
    _check_example_layout(task, large[0][::97], large[1][::97])


def test_query_gaps_follow_the_power_law():
    # with one pair the gap of its query is a single draw from p(g) ~ (g + 1) ** (a - 1)
    task = MQARTask(vocab_size=256, seq_len=40, num_kv_pairs=1, power_a=0.01, filler='zero')
    _, labels = generate_mqar(task, 20000, seed=0)
    gaps = ((labels != IGNORE_INDEX).nonzero()[:, 1] - 2) // 2
    counts = torch.bincount(gaps, minlength=task.num_gaps).double()
    expected = task.gap_probabilities() * 20000
    assert counts.shape[0] == task.num_gaps == 19
    # every bin within 5 standard deviations of its binomial count; the law is steep: p(0) ~ 37 p(18)
    sigma = (expected * (1 - expected / 20000)).sqrt()
    assert ((counts - expected).abs() < 5 * sigma).all(), (counts, expected)
    assert expected[0] / expected[-1] == pytest.approx(19 ** 0.99, rel=1e-6)
    # with several pairs (no replacement) short gaps still dominate
    task = MQARTask(vocab_size=1024, seq_len=128, num_kv_pairs=8)
    _, labels = generate_mqar(task, 2000, seed=0)
    gaps = ((labels != IGNORE_INDEX).nonzero()[:, 1] - 16) // 2
    counts = torch.bincount(gaps, minlength=task.num_gaps)
    assert counts[:8].sum() > 2 * counts[-8:].sum()


def test_power_a_one_is_uniform():
    task = MQARTask(vocab_size=256, seq_len=40, num_kv_pairs=1, power_a=1.0)
    assert torch.allclose(task.gap_probabilities(), torch.full((19,), 1 / 19, dtype=torch.float64))


@pytest.mark.parametrize('kwargs,match', [
    (dict(seq_len=63), 'seq_len'),
    (dict(seq_len=64, num_kv_pairs=17), 'seq_len'),
    (dict(num_kv_pairs=0), 'num_kv_pairs'),
    (dict(vocab_size=64), 'vocab_size'),
    (dict(filler='ones'), 'filler'),
    (dict(power_a=0.0), 'power_a'),
    (dict(seq_len=64.0), 'seq_len'),
])
def test_bad_tasks_are_rejected(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        MQARTask(**kwargs)


def test_bad_generate_arguments_are_rejected():
    with pytest.raises(ValueError, match='split'):
        generate_mqar(MQARTask(), 4, seed=0, split='validation')
    with pytest.raises(ValueError, match='num_examples'):
        generate_mqar(MQARTask(), 0, seed=0)
    with pytest.raises(ValueError, match='seed'):
        generate_mqar(MQARTask(), 4, seed=-1)
    with pytest.raises(TypeError, match='task'):
        generate_mqar({'seq_len': 64}, 4, seed=0)
