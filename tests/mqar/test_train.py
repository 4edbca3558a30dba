"""The MQAR harness: it learns an easy task, reproduces itself, and resumes sweeps from its results file."""

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import ramnet_fla.mqar.train as train_module
from ramnet_fla.mqar.data import IGNORE_INDEX, MQARTask, generate_mqar
from ramnet_fla.mqar.train import MQARModel, MQARRun, best_per_config, evaluate, load_results, run_sweep, train_mqar


class ShiftAttention(nn.Module):
    """A stand-in mixer: one causal softmax-attention head whose key at t is read from token t-1.

    That is an induction head in one layer, so MQAR is easy for it: the harness must find that.
    """

    def __init__(self, hidden_size: int, layer_idx: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def state_size(self, seq_len: int) -> dict:
        return {'total': 2 * seq_len * self.q_proj.in_features, 'active': 2 * seq_len * self.q_proj.in_features}

    def forward(self, x: torch.Tensor):
        previous = F.pad(x, (0, 0, 1, 0))[:, :-1]
        o = F.scaled_dot_product_attention(self.q_proj(x), self.k_proj(previous), self.v_proj(x), is_causal=True)
        return o, None, None


EASY = MQARTask(vocab_size=64, seq_len=16, num_kv_pairs=2)


def _easy_run(**kwargs) -> MQARRun:
    settings = dict(mixer=ShiftAttention, d_model=32, num_layers=1, task=EASY, lr=3e-3, steps=300,
                    batch_size=32, num_test=256, eval_every=50, target_accuracy=0.95)
    settings.update(kwargs)
    return MQARRun(**settings)


def test_easy_task_is_learned_recorded_and_ends_the_lr_sweep(tmp_path):
    records = run_sweep([_easy_run()], tmp_path / 'r.json', learning_rates=[3e-3, 1e-2], device='cpu', progress=False)
    assert len(records) == 1, "the lr sweep stops at the first rate that reaches the target"
    record = records[0]
    assert record['accuracy'] >= 0.95, record['curve']
    assert record['steps'] < 300, "early stop at the target accuracy"
    assert record['curve'][-1] == [record['steps'], record['accuracy']]
    assert record['mixer'] == 'ShiftAttention' and record['state_size'] == 2 * 16 * 32
    assert (record['seq_len'], record['num_kv_pairs'], record['d_model'], record['lr']) == (16, 2, 32, 3e-3)


def test_training_is_reproducible_and_depends_on_the_seed():
    run = _easy_run(steps=6, eval_every=3, num_test=64, target_accuracy=1.1)
    a, b = train_mqar(run, device='cpu', progress=False), train_mqar(run, device='cpu', progress=False)
    other_seed = _easy_run(steps=6, eval_every=3, num_test=64, target_accuracy=1.1, seed=1)
    c = train_mqar(other_seed, device='cpu', progress=False)
    assert a['curve'] == b['curve'] and a['steps'] == b['steps'] == 6
    assert a['curve'] != c['curve']


def test_evaluate_scores_only_query_positions():
    inputs, labels = generate_mqar(EASY, 50, seed=0, split='test')

    class Oracle(nn.Module):
        """Predicts the label at query positions, a wrong token elsewhere."""

        def __init__(self):
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            target = torch.where(self.labels != IGNORE_INDEX, self.labels, 0)
            return F.one_hot(target, EASY.vocab_size).float() + self.dummy

    oracle = Oracle()
    oracle.labels = labels
    assert evaluate(oracle, inputs, labels, batch_size=50) == 1.0
    half = labels.clone()
    rows = torch.arange(50) < 25
    oracle.labels = torch.where(rows[:, None] & (labels != IGNORE_INDEX), (labels + 1) % EASY.vocab_size, labels)
    assert evaluate(oracle, inputs, half, batch_size=50) == pytest.approx(0.5)


def test_sweep_resumes_from_its_results_file(tmp_path, monkeypatch):
    path = tmp_path / 'results.json'
    runs = [_easy_run(steps=4, eval_every=2, num_test=64, target_accuracy=1.1, seed=s) for s in (0, 1)]
    first = run_sweep(runs, path, learning_rates=[1e-3, 3e-3], device='cpu', progress=False)
    assert len(first) == 4 and len(load_results(path)) == 4
    assert [r['lr'] for r in first] == [1e-3, 3e-3, 1e-3, 3e-3]

    calls = []
    real = train_module.train_mqar
    monkeypatch.setattr(train_module, 'train_mqar', lambda run, **kw: calls.append(run) or real(run, **kw))
    again = run_sweep(runs, path, learning_rates=[1e-3, 3e-3], device='cpu', progress=False)
    assert calls == [] and again == first, "everything recorded is skipped"

    # an interrupted sweep: drop the last record, resume, and only that run is trained again
    save = json.loads(path.read_text())[:-1]
    path.write_text(json.dumps(save))
    resumed = run_sweep(runs, path, learning_rates=[1e-3, 3e-3], device='cpu', progress=False)
    assert len(calls) == 1 and calls[0].seed == 1 and calls[0].lr == 3e-3
    assert resumed[-1]['curve'] == first[-1]['curve'], "the retrained run reproduces the lost record"
    assert len(best_per_config(resumed)) == 2


def test_model_shapes_and_tied_head():
    model = MQARModel(EASY.vocab_size, 32, [ShiftAttention, ShiftAttention], mlp=True)
    assert model.head.weight is model.embedding.weight and len(model.mlps) == 2
    assert model(torch.randint(0, 64, (3, 16))).shape == (3, 16, 64)


@pytest.mark.parametrize('kwargs,match', [
    (dict(steps=0), 'steps'), (dict(lr=-1.0), 'lr'), (dict(mixers=()), 'mixers'), (dict(task={'seq_len': 8}), 'task'),
])
def test_bad_runs_are_rejected(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _easy_run(**kwargs)


def test_mixers_repeat_per_layer():
    run = MQARRun(mixers=('ram', 'gla'), num_layers=3)
    assert run.layer_specs() == ['ram', 'gla', 'ram'] and run.name == 'ram+gla'
