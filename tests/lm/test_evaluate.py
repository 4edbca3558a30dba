"""Held-out metrics: bits per byte, Zoology recall hits split by training frequency, the copy test."""

from __future__ import annotations

import math

import numpy as np
import torch

from ramnet_fla.lm.distributed import World
from ramnet_fla.lm.evaluate import copy_windows, evaluate, recall_hits


def test_recall_hits_are_bigrams_seen_earlier_in_the_window():
    window = np.array([[5, 1, 2, 3, 1, 2, 4, 1, 2, 3]])       # targets are x[1:]
    hit, keys = recall_hits(window, vocab_size=10)
    # target x[5]=2 after x[4]=1: the bigram (1, 2) first ended at x[2]; (2, 3) again at x[9]
    assert hit[0].tolist() == [False, False, False, False, True, False, False, True, True]
    assert keys[0, 0] == 5 * 10 + 1


def test_copy_windows_repeat_a_held_out_passage():
    tokens = np.arange(10_000) % 997
    windows, mask = copy_windows(tokens, seq_len=256, count=20, seed=0)
    assert windows.shape == (20, 257) and mask.shape == (20, 256)
    for window, row in zip(windows.numpy(), mask.numpy()):
        length = int(row.sum()) + 1                      # the second copy less its first token
        assert 64 <= length <= 128
        assert (window[-length:] == window[-2 * length:-length]).all()
        assert row[-(length - 1):].all() and not row[:-(length - 1)].any()
        assert (np.diff(window[:-length]) % 997 == 1).all()   # context + first copy: contiguous held-out text


class _Uniform(torch.nn.Module):
    """Predicts every token with probability 1 / V: loss ln V everywhere."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids):
        logits = torch.zeros(*input_ids.shape, self.vocab_size) + self.weight
        return type('Out', (), {'logits': logits})()


class _Data:
    def __init__(self, val: np.ndarray, vocab_size: int, token_bytes: np.ndarray) -> None:
        self.val, self.vocab_size, self.token_bytes = val, vocab_size, token_bytes

    def bigram_count(self, keys):
        return np.where(keys % 2 == 0, 100, 0)            # even keys frequent in training, odd ones never seen


def test_bits_per_byte_and_split_losses_of_a_uniform_model():
    vocab = 16
    rng = np.random.default_rng(0)
    val = rng.integers(0, vocab, 5000)
    token_bytes = rng.integers(1, 4, vocab)
    data = _Data(val, vocab, token_bytes)
    result = evaluate(_Uniform(vocab), data, seq_len=256, world=World(), batch_size=8, copy_examples=4)
    targets = np.stack([val[i * 256 + 1:i * 256 + 257] for i in range(len(val) // 256)])
    expected = targets.size * math.log(vocab) / math.log(2) / token_bytes[targets].sum()
    assert math.isclose(result['bits_per_byte'], expected, rel_tol=1e-6)
    assert math.isclose(result['loss'], math.log(vocab), rel_tol=1e-6)
    for key in ('recall_hit_loss', 'frequent_hit_loss', 'other_loss', 'copy_loss'):
        assert math.isclose(result[key], math.log(vocab), rel_tol=1e-6), key
    windows = np.stack([val[i * 256:i * 256 + 257] for i in range(len(val) // 256)])
    hit, keys = recall_hits(windows, vocab)
    assert math.isclose(result['recall_hit_share'], (hit & (keys % 2 == 1)).mean(), rel_tol=1e-12)
    assert 0 < result['recall_hit_share'] < result['recall_hit_share'] + result['frequent_hit_share'] < 1
