"""Tokenizers: plain bytes, or a byte-level BPE trained locally with `tokenizers`.

Both map text to ids and know how many UTF-8 bytes each id stands for (`token_bytes`), so every
run reports bits per byte, comparable across tokenizers. A spec is `bytes` or `bpe:VOCAB`.
Training a BPE spins up the `tokenizers` thread pool, which slows later torch CPU steps in the
same process: train and encode in the data-preparation process (`ramnet_fla.lm.data.prepare`),
never in the training process.
"""

from __future__ import annotations

import os

import numpy as np

BYTE_VOCAB = 256


def parse_tokenizer_spec(spec: str) -> tuple[str, int]:
    """'bytes' -> ('bytes', 256); 'bpe:4096' -> ('bpe', 4096)."""
    if spec == 'bytes':
        return 'bytes', BYTE_VOCAB
    kind, _, size = spec.partition(':')
    if kind == 'bpe' and size.isdigit() and int(size) > BYTE_VOCAB:
        return 'bpe', int(size)
    raise ValueError(f"`--tokenizer` must be 'bytes' or 'bpe:VOCAB' with VOCAB > {BYTE_VOCAB} "
                     f"(e.g. bpe:4096), got {spec!r}")


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255; every id is one byte."""

    vocab_size = BYTE_VOCAB

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode('utf-8'), dtype=np.uint8).astype(np.int64)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode('utf-8', errors='replace')

    def token_bytes(self) -> np.ndarray:
        return np.ones(BYTE_VOCAB, dtype=np.int64)

    def save(self, folder: str) -> None:
        pass


class BPETokenizer:
    """A byte-level BPE (`tokenizers`, GPT-2's byte alphabet, no special tokens) trained on the
    training text only. Every byte-level symbol is one byte, so a token's byte count is its length."""

    FILE = 'tokenizer.json'

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def train(cls, text: str, vocab_size: int) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        lines = text.splitlines(keepends=True)
        tokenizer.train_from_iterator((lines[i:i + 1000] for i in range(0, len(lines), 1000)), trainer=trainer)
        return cls(tokenizer)

    @classmethod
    def load(cls, folder: str) -> BPETokenizer:
        from tokenizers import Tokenizer
        return cls(Tokenizer.from_file(os.path.join(folder, cls.FILE)))

    def encode(self, text: str) -> np.ndarray:
        lines = text.splitlines(keepends=True)
        ids = []
        for start in range(0, len(lines), 2000):          # batches of lines: the pre-tokenizer splits there anyway
            for encoding in self.tokenizer.encode_batch(lines[start:start + 2000]):
                ids.extend(encoding.ids)
        return np.asarray(ids, dtype=np.int64)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids])

    def token_bytes(self) -> np.ndarray:
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        for symbol, index in self.tokenizer.get_vocab().items():
            lengths[index] = len(symbol)
        return lengths

    def save(self, folder: str) -> None:
        self.tokenizer.save(os.path.join(folder, self.FILE))


def build_tokenizer(spec: str, train_text: str):
    """The tokenizer a spec names, trained on `train_text` if it is a BPE."""
    kind, vocab_size = parse_tokenizer_spec(spec)
    return ByteTokenizer() if kind == 'bytes' else BPETokenizer.train(train_text, vocab_size)
