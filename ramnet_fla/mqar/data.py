"""Multi-query associative recall (MQAR) data, generated as Zoology does (Arora, Eyuboglu et al. 2023).

One example of length T with D key/value pairs:

    position:  0   1   2   3  ...  2D-2 2D-1 | 2D ...                                   T-1
    input:     k1  v1  k2  v2 ...  kD   vD   | filler, and every key once at an even offset
    label:     -100 everywhere except at each query position, where it is that key's value

- keys are drawn without replacement from [1, vocab/2), values from [vocab/2, vocab);
- the query of pair i sits at position 2D + 2*g_i, with the gaps g_i drawn without replacement
  from {0, ..., (T - 2D)/2 - 1} with p(g) proportional to (g + 1) ** (a - 1), a = `power_a` (a power
  law: most queries come soon after the pairs, some far away);
- the other positions hold the filler: token 0, or (`filler='random'`, Zoology's default) a token
  drawn uniformly from the whole vocabulary;
- the model must predict, at a query's position, the value that followed that key.

Training and test sets are drawn from disjoint random streams (`split_seed`), so a seed never
yields the same examples for both; the first n examples of a stream do not depend on how many are
drawn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ramnet_fla.utils.checks import check_int

IGNORE_INDEX = -100
FILLERS = ('random', 'zero')
_SPLITS = ('train', 'test')
_CHUNK = 2048          # examples generated per vectorised chunk (bounds memory at large vocabularies)


@dataclass(frozen=True)
class MQARTask:
    """The shape of an MQAR problem.

    vocab_size: tokens in the vocabulary (keys from the lower half without 0, values from the upper).
    seq_len: T, even. num_kv_pairs: D, with 4*D <= T (room for the pairs and the queries).
    power_a: exponent a of the gap law p(g) ~ (g + 1) ** (a - 1). filler: 'random' or 'zero'.
    """

    vocab_size: int = 1024
    seq_len: int = 64
    num_kv_pairs: int = 16
    power_a: float = 0.01
    filler: str = 'random'

    def __post_init__(self) -> None:
        check_int('vocab_size', self.vocab_size)
        check_int('seq_len', self.seq_len)
        check_int('num_kv_pairs', self.num_kv_pairs, minimum=1)
        if self.seq_len < 2 or self.seq_len % 2:
            raise ValueError(f"`seq_len` must be even and >= 2, got {self.seq_len}")
        if 4 * self.num_kv_pairs > self.seq_len:
            raise ValueError(
                f"`seq_len` must be >= 4 * num_kv_pairs (the pairs, then one query per key at an even "
                f"offset), got seq_len={self.seq_len}, num_kv_pairs={self.num_kv_pairs}")
        if self.vocab_size <= self.seq_len:
            raise ValueError(f"`vocab_size` must be > seq_len (as in Zoology), got {self.vocab_size} <= {self.seq_len}")
        if self.vocab_size // 2 - 1 < self.num_kv_pairs or self.vocab_size - self.vocab_size // 2 < self.num_kv_pairs:
            raise ValueError(f"`vocab_size` {self.vocab_size} leaves fewer than num_kv_pairs={self.num_kv_pairs} "
                             "keys or values")
        if not self.power_a > 0:
            raise ValueError(f"`power_a` must be > 0, got {self.power_a}")
        if self.filler not in FILLERS:
            raise ValueError(f"`filler` must be one of {FILLERS}, got {self.filler!r}")

    @property
    def num_gaps(self) -> int:
        """How many even offsets a query can take after the pairs."""
        return (self.seq_len - 2 * self.num_kv_pairs) // 2

    def gap_probabilities(self) -> torch.Tensor:
        """p(g) for g = 0 .. num_gaps - 1 (float64, sums to 1)."""
        gaps = torch.arange(1, self.num_gaps + 1, dtype=torch.float64)
        weights = gaps ** (self.power_a - 1)
        return weights / weights.sum()

    def as_dict(self) -> dict:
        return asdict(self)


def split_seed(seed: int, split: str) -> int:
    """The generator seed of a split: train uses even numbers, test odd ones, so they never meet."""
    if split not in _SPLITS:
        raise ValueError(f"`split` must be one of {_SPLITS}, got {split!r}")
    check_int('seed', seed, minimum=0)
    return 2 * seed + _SPLITS.index(split)


def _sample_without_replacement(weights: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """[N, count] distinct column indices per row, drawn in sequence with probability ~ weights [N, C]."""
    return torch.multinomial(weights, count, replacement=False, generator=generator)


def _generate_chunk(task: MQARTask, num_examples: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    D, T, vocab = task.num_kv_pairs, task.seq_len, task.vocab_size
    half = vocab // 2
    # keys in [1, half), values in [half, vocab): distinct within an example
    keys = 1 + _sample_without_replacement(torch.ones(num_examples, half - 1), D, generator)       # [N, D]
    values = half + _sample_without_replacement(torch.ones(num_examples, vocab - half), D, generator)  # [N, D]
    gap_p = task.gap_probabilities().float().expand(num_examples, -1)
    gaps = _sample_without_replacement(gap_p, D, generator)                                          # [N, D]
    query_position = 2 * D + 2 * gaps                                                                # [N, D]

    if task.filler == 'random':
        inputs = torch.randint(0, vocab, (num_examples, T), generator=generator)
    else:
        inputs = torch.zeros(num_examples, T, dtype=torch.long)
    inputs[:, 0:2 * D:2] = keys
    inputs[:, 1:2 * D:2] = values
    inputs.scatter_(1, query_position, keys)
    labels = torch.full((num_examples, T), IGNORE_INDEX, dtype=torch.long)
    labels.scatter_(1, query_position, values)
    return inputs, labels


def generate_mqar(task: MQARTask, num_examples: int, seed: int,
                  split: str = 'train') -> tuple[torch.Tensor, torch.Tensor]:
    """Draw MQAR examples.

    Args:
        task: the problem (vocabulary, T, D, power law, filler).
        num_examples: N.
        seed: the run's seed; train and test draw from disjoint streams derived from it.
        split: 'train' or 'test'.

    Returns:
        inputs: [N, T] int64 tokens; labels: [N, T] int64, IGNORE_INDEX (-100) except at query positions.
    """
    if not isinstance(task, MQARTask):
        raise TypeError(f"`task` must be an MQARTask, got {type(task).__name__}")
    check_int('num_examples', num_examples, minimum=1)
    generator = torch.Generator().manual_seed(split_seed(seed, split))
    # whole chunks only, so the first n examples never depend on how many were asked for
    chunks = [_generate_chunk(task, _CHUNK, generator) for _ in range(0, num_examples, _CHUNK)]
    return torch.cat([c[0] for c in chunks])[:num_examples], torch.cat([c[1] for c in chunks])[:num_examples]
