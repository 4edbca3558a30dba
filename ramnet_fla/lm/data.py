"""Tokenised, cached token streams and the batches cut from them.

`prepare` (its own process: `python -m ramnet_fla.lm prepare`) reads a corpus, trains or builds the
tokenizer, encodes both splits and writes them beside the tokenizer:

    DATA_DIR/<corpus key>-<tokenizer>/
        train.bin, val.bin      token ids, raw little-endian uint16 (uint32 above 65,536 ids)
        token_bytes.npy         UTF-8 bytes per id (bits per byte)
        bigrams.npz             every training bigram (a * V + b, sorted) and its count
        tokenizer.json          the BPE (none for bytes)
        meta.json               corpus source, licence, split, sizes; written last (marks it complete)

Training reads that folder only (`TokenData.load`), memory-mapped, and never imports `tokenizers`.
Batches: the training tokens are cut into non-overlapping windows of seq_len + 1; epoch e visits
them in a permutation seeded by (seed, e), so the global batch of step s is a function of (seed, s):
that is the data position a checkpoint stores, and every world size sees the same global batches.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

META = 'meta.json'


def default_data_dir() -> str:
    """$RAMNET_FLA_DATA, else $XDG_CACHE_HOME/ramnet-fla/lm (~/.cache/ramnet-fla/lm)."""
    if os.environ.get('RAMNET_FLA_DATA'):
        return os.environ['RAMNET_FLA_DATA']
    cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(cache, 'ramnet-fla', 'lm')


@dataclass(frozen=True)
class DataSpec:
    """What to tokenise: the corpus (`ramnet_fla.lm.corpus`), the tokenizer and where to cache it."""

    data: tuple = ('kjv',)
    tokenizer: str = 'bpe:4096'
    data_dir: str | None = None
    val_fraction: float = 0.05
    text_column: str = 'text'
    max_chars: int | None = None

    def folder(self) -> str:
        from ramnet_fla.lm.corpus import data_key
        key = data_key(list(self.data), self.val_fraction, self.max_chars)
        tokenizer = self.tokenizer.replace(':', '')
        return os.path.join(self.data_dir or default_data_dir(), f"{key}-{tokenizer}")


def _write_tokens(path: str, ids: np.ndarray, dtype) -> None:
    ids.astype(dtype).tofile(path)


def bigram_counts(ids: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(keys, counts): every bigram a * V + b of the stream, sorted, and how often it occurs."""
    ids = ids.astype(np.int64)
    return np.unique(ids[:-1] * vocab_size + ids[1:], return_counts=True)


def prepare(spec: DataSpec, log=print) -> str:
    """Build the cached token folder of `spec` if it is missing; return its path.

    Run this in its own process (see the module docstring); `ensure_prepared` does.
    """
    from ramnet_fla.lm.corpus import load_corpus
    from ramnet_fla.lm.tokenizer import build_tokenizer

    folder = spec.folder()
    if os.path.exists(os.path.join(folder, META)):
        return folder
    start = time.perf_counter()
    corpus = load_corpus(list(spec.data), spec.val_fraction, spec.text_column, spec.max_chars)
    log(f"corpus {corpus.name}: {corpus.info['train_bytes']:,} training bytes, {corpus.info['val_bytes']:,} held out")
    tokenizer = build_tokenizer(spec.tokenizer, corpus.train)
    train, val = tokenizer.encode(corpus.train), tokenizer.encode(corpus.val)
    dtype = np.uint16 if tokenizer.vocab_size <= 2 ** 16 else np.uint32
    temporary = folder + f".tmp{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    _write_tokens(os.path.join(temporary, 'train.bin'), train, dtype)
    _write_tokens(os.path.join(temporary, 'val.bin'), val, dtype)
    token_bytes = tokenizer.token_bytes()
    np.save(os.path.join(temporary, 'token_bytes.npy'), token_bytes)
    keys, counts = bigram_counts(train, tokenizer.vocab_size)
    np.savez(os.path.join(temporary, 'bigrams.npz'), keys=keys, counts=counts)
    tokenizer.save(temporary)
    meta = {'data': list(spec.data), 'tokenizer': spec.tokenizer, 'vocab_size': tokenizer.vocab_size,
            'dtype': np.dtype(dtype).name, 'train_tokens': int(len(train)), 'val_tokens': int(len(val)),
            'train_bytes': int(token_bytes[train].sum()), 'val_bytes': int(token_bytes[val].sum()),
            'corpus': corpus.info, 'seconds': round(time.perf_counter() - start, 1)}
    with open(os.path.join(temporary, META), 'w') as f:
        json.dump(meta, f, indent=1)
    if os.path.exists(folder):                     # an older incomplete folder (no meta.json)
        shutil.rmtree(folder)
    os.replace(temporary, folder)
    log(f"tokenised with {spec.tokenizer} (vocab {tokenizer.vocab_size:,}): {len(train):,} training tokens, "
        f"{len(val):,} held out, in {meta['seconds']} s -> {folder}")
    return folder


def prepare_command(spec: DataSpec) -> list[str]:
    """The command line of `python -m ramnet_fla.lm prepare` for `spec`."""
    command = [sys.executable, '-m', 'ramnet_fla.lm', 'prepare', '--data', *spec.data, '--tokenizer', spec.tokenizer,
               '--val-fraction', repr(spec.val_fraction), '--text-column', spec.text_column]
    if spec.data_dir:
        command += ['--data-dir', spec.data_dir]
    if spec.max_chars is not None:
        command += ['--max-chars', str(spec.max_chars)]
    return command


def ensure_prepared(spec: DataSpec) -> str:
    """The cached token folder of `spec`, built first in a child process if missing and a BPE is
    to be trained (keeps the tokenizer's thread pool out of the training process). Raises ValueError with the child's error."""
    folder = spec.folder()
    if os.path.exists(os.path.join(folder, META)):
        return folder
    if spec.tokenizer == 'bytes':                      # no tokenizer library, no thread pool: in process
        return prepare(spec)
    env = dict(os.environ, TOKENIZERS_PARALLELISM='true')
    result = subprocess.run(prepare_command(spec), env=env, stdout=sys.stdout, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise ValueError(lines[-1].removeprefix('ramnet-fla lm prepare: error: ') if lines else
                         f"data preparation failed (exit {result.returncode})")
    return folder


class TokenData:
    """A prepared folder: memory-mapped `train` / `val` ids, `token_bytes`, `vocab_size`, `meta`."""

    def __init__(self, folder: str) -> None:
        meta_path = os.path.join(folder, META)
        if not os.path.exists(meta_path):
            raise ValueError(f"{folder} is not a prepared data folder (no {META}); run `ramnet-fla lm prepare`")
        with open(meta_path) as f:
            self.meta = json.load(f)
        self.folder = folder
        self.vocab_size = int(self.meta['vocab_size'])
        dtype = np.dtype(self.meta['dtype'])
        self.train = np.memmap(os.path.join(folder, 'train.bin'), dtype=dtype, mode='r')
        self.val = np.memmap(os.path.join(folder, 'val.bin'), dtype=dtype, mode='r')
        self.token_bytes = np.load(os.path.join(folder, 'token_bytes.npy'))
        self._bigrams = None

    def bigram_count(self, keys: np.ndarray) -> np.ndarray:
        """How often each bigram key a * V + b occurs in the training tokens."""
        if self._bigrams is None:
            with np.load(os.path.join(self.folder, 'bigrams.npz')) as f:
                self._bigrams = (f['keys'], f['counts'])
        known, counts = self._bigrams
        index = np.clip(np.searchsorted(known, keys), 0, len(known) - 1)
        return np.where(known[index] == keys, counts[index], 0)

    def check_fits(self, seq_len: int) -> None:
        """Both splits must hold at least one window of seq_len + 1 tokens."""
        for split in ('train', 'val'):
            size = len(getattr(self, split))
            if size < seq_len + 1:
                raise ValueError(f"`--seq-len`: the {split} split of {self.meta['data']} holds {size:,} tokens, "
                                 f"fewer than one sequence of seq_len + 1 = {seq_len + 1}; use a shorter "
                                 f"--seq-len or a larger corpus")


class BatchSchedule:
    """The global batch of every step, as a function of (seed, step).

    windows: len(tokens - 1) // seq_len non-overlapping windows of seq_len + 1 tokens. Sample k of
    the run (k = step * batch_size + row) is window perm_e[k mod n] of epoch e = k // n.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int) -> None:
        self.tokens, self.seq_len, self.batch_size, self.seed = tokens, seq_len, batch_size, seed
        self.num_windows = (len(tokens) - 1) // seq_len
        self._perm_epoch, self._perm = -1, None

    def _window(self, sample: int) -> int:
        epoch, position = divmod(sample, self.num_windows)
        if epoch != self._perm_epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.num_windows, generator=generator).numpy(), epoch
        return int(self._perm[position])

    def rows(self, step: int, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of step `step`'s global batch: [stop - start, seq_len + 1] int64."""
        first = step * self.batch_size
        out = np.empty((stop - start, self.seq_len + 1), dtype=np.int64)
        for i, row in enumerate(range(start, stop)):
            offset = self._window(first + row) * self.seq_len
            out[i] = self.tokens[offset:offset + self.seq_len + 1]
        return torch.from_numpy(out)

    def epochs(self, steps: int) -> float:
        return steps * self.batch_size / self.num_windows
