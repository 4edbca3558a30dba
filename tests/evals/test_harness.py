"""`python -m ramnet_fla.evals` / `ramnet-fla eval`: lm-eval on a saved tiny checkpoint with a local task."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ramnet_fla.evals import cli as eval_cli
from ramnet_fla.evals import run_lm_eval

WORDS = [f'w{i}' for i in range(30)]
TASK = 'ramnet_tiny_continuation'
REPO_ROOT = Path(__file__).resolve().parents[2]


def save_tiny_checkpoint(path: Path):
    """A random 2-layer ram+gla RAMNetForCausalLM with a word-level tokenizer, saved to `path`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from ramnet_fla import RAMNetConfig, RAMNetForCausalLM

    vocab = {'<unk>': 0, '<s>': 1, '</s>': 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token='<unk>'))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token='<unk>', bos_token='<s>',
                                        eos_token='</s>', pad_token='</s>')
    torch.manual_seed(0)
    config = RAMNetConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, hidden_ratio=2,
                          mixers=[{'name': 'ram', 'num_heads': 2, 'num_factors': 2, 'factor_dim': 4, 'topk': 3},
                                  {'name': 'gla', 'num_heads': 2}],
                          pad_token_id=2, bos_token_id=1, eos_token_id=2)
    model = RAMNetForCausalLM(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model, tokenizer


def write_task(directory: Path, docs: list[dict]) -> None:
    """A loglikelihood task reading `docs` from a local jsonl file (no hub)."""
    directory.mkdir()
    data = directory / 'docs.jsonl'
    data.write_text(''.join(json.dumps(doc) + '\n' for doc in docs))
    (directory / f'{TASK}.yaml').write_text(f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{context}}}}"
doc_to_target: " {{{{continuation}}}}"      # loglikelihood requests get no target_delimiter
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
""")


def own_log_likelihood(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context) by the model itself: the sum over the continuation's tokens."""
    context_ids = tokenizer(context)['input_ids']
    ids = tokenizer(f'{context} {continuation}')['input_ids']
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    log_probs = logits[:-1].log_softmax(-1)
    positions = range(len(context_ids) - 1, len(ids) - 1)
    return sum(log_probs[t, ids[t + 1]].item() for t in positions)


def test_lm_eval_scores_a_saved_checkpoint_on_a_local_task(tmp_path):
    pytest.importorskip('lm_eval', reason='lm-eval is not installed (pip install "ramnet-fla[eval]")')
    model, tokenizer = save_tiny_checkpoint(tmp_path / 'ckpt')
    generator = torch.Generator().manual_seed(1)
    docs = []
    for _ in range(6):
        words = [WORDS[i] for i in torch.randint(0, len(WORDS), (7,), generator=generator)]
        docs.append({'context': ' '.join(words[:5]), 'continuation': ' '.join(words[5:])})
    write_task(tmp_path / 'tasks', docs)
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', HF_HOME=str(tmp_path / 'hf'),
               TOKENIZERS_PARALLELISM='false',
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get('PYTHONPATH', '')]))
    command = [sys.executable, '-m', 'ramnet_fla.evals', '--model', 'ramnet',
               '--model_args', f"pretrained={tmp_path / 'ckpt'},dtype=float32", '--tasks', TASK,
               '--include_path', str(tmp_path / 'tasks'), '--device', 'cpu', '--batch_size', '2',
               '--output_path', str(tmp_path / 'out')]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results_files = list((tmp_path / 'out').rglob('results_*.json'))
    assert len(results_files) == 1, done.stderr[-3000:]
    reported = json.loads(results_files[0].read_text())['results'][TASK]['perplexity,none']
    assert isinstance(reported, float) and reported > 1
    log_likelihoods = [own_log_likelihood(model, tokenizer, d['context'], d['continuation']) for d in docs]
    expected = torch.tensor(log_likelihoods).mean().neg().exp().item()
    assert reported == pytest.approx(expected, rel=1e-4)


def test_without_lm_eval_it_exits_naming_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'lm_eval', None)
    with pytest.raises(SystemExit) as exit_info:
        run_lm_eval(['--model', 'hf', '--tasks', 'wikitext'])
    assert exit_info.value.code == ("error: python -m ramnet_fla.evals needs the optional extra 'eval' "
                                    '(missing: lm_eval): pip install "ramnet-fla[eval]"')


def test_the_eval_command_passes_every_argument_through(monkeypatch):
    parser = argparse.ArgumentParser(prog='ramnet-fla')
    eval_cli.register(parser.add_subparsers(dest='command', required=True))
    argv = ['--model', 'hf', '--model_args', 'pretrained=x,dtype=float32', '--tasks', 'a,b', '-h']
    args = parser.parse_args(['eval', *argv])
    assert args.lm_eval_args == argv
    monkeypatch.setitem(sys.modules, 'lm_eval', None)
    with pytest.raises(SystemExit, match=r"ramnet-fla eval needs the optional extra 'eval'"):
        args.func(args)
