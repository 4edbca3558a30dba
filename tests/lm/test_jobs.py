"""--quick and --sweep at a tiny scale: equal parameter counts, the records, table and plot, reuse."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace

import pytest

from ramnet_fla.lm import ablations, jobs

# RAMAttention options that the layer keeps as plain attributes under their own names
SCALAR_OPTIONS = {'num_heads', 'head_dim', 'num_factors', 'factor_dim', 'topk', 'use_short_conv', 'conv_size',
                  'norm_eps', 'tie_address_projections', 'self_read_init', 'address_conv_init', 'address_norm',
                  'address_temperature', 'decay_bias_init'}
FIELDS = ('mixer', 'num_params', 'tokens', 'bits_per_byte', 'recall_hit_loss', 'other_loss', 'copy_loss',
          'tokens_per_second')


@pytest.fixture
def tiny_recipe(monkeypatch, text_file, data_dir):
    pytest.importorskip('matplotlib')
    recipe = replace(jobs.RECIPE, data=(text_file,), tokenizer='bytes', hidden_size=32, seq_len=64, batch_size=2,
                     steps=2, warmup_steps=1, eval_every=1, eval_windows=2, final_eval_windows=3, copy_examples=2,
                     log_every=1, ckpt_every=1)
    monkeypatch.setattr(jobs, 'RECIPE', recipe)
    monkeypatch.setattr(jobs, 'NUM_HEADS', 2)
    monkeypatch.setattr(jobs, 'SWEEP_LRS', (1e-3, 3e-3))


def _args(out, data_dir, **extra):
    options = dict(out=str(out), steps=None, data_dir=data_dir, threads=1, no_progress=True, settings=None)
    return argparse.Namespace(**{**options, **extra})


def test_quick_job_records_every_model_at_equal_size(tiny_recipe, tmp_path, data_dir, capsys):
    assert jobs.run_quick(_args(tmp_path, data_dir)) == 0
    with open(tmp_path / 'results.json') as f:
        records = json.load(f)
    assert [r['mixer'] for r in records] == list(jobs.MODELS)
    for record in records:
        assert all(record[k] is not None for k in FIELDS), record
        assert abs(record['num_params'] / records[1]['num_params'] - 1) < 0.02       # within 2% of gla
        assert record['curve'][-1][0] == record['tokens'] == 2 * 2 * 64
    assert os.path.getsize(tmp_path / 'lm_quick.png') > 10_000
    out = capsys.readouterr().out
    assert 'parameter budget' in out and 'vs gla' in out and '1.00x' in out
    assert jobs.run_quick(_args(tmp_path, data_dir)) == 0                           # finished runs are reused
    assert capsys.readouterr().out.count('reusing') == len(jobs.MODELS)
    assert jobs.run_quick(_args(tmp_path / 'only', data_dir, only=['attention'], steps=3)) == 0   # --only, --steps
    with open(tmp_path / 'only' / 'results.json') as f:
        only = json.load(f)
    assert [(r['mixer'], r['steps']) for r in only] == [('attention', 3)]


def test_sweep_covers_lr_and_short_conv_and_feeds_quick(tiny_recipe, tmp_path, data_dir, capsys, monkeypatch):
    monkeypatch.setattr(jobs, 'MODELS', {k: jobs.MODELS[k] for k in ('ram', 'attention')})
    assert jobs.run_sweep(_args(tmp_path / 'sweep', data_dir)) == 0
    with open(tmp_path / 'sweep' / 'sweep.json') as f:
        records = json.load(f)
    assert [(r["mixer"], r["short_conv"], r["lr"]) for r in records] == [
        ('ram', False, 1e-3), ('ram', False, 3e-3), ('ram', True, 1e-3), ('ram', True, 3e-3),
        ('attention', False, 1e-3), ('attention', False, 3e-3)]
    specs = {r['short_conv']: r['mixer_specs'][0] for r in records if r['mixer'] == 'ram'}
    assert specs[True]['use_short_conv'] is True and specs[False]['use_short_conv'] is False
    best = jobs._settings_from_sweep(str(tmp_path / 'sweep' / 'sweep.json'))
    ram_best = min((r for r in records if r['mixer'] == 'ram'), key=lambda r: r['bits_per_byte'])
    assert best['ram'] == {'lr': ram_best['lr'], 'short_conv': ram_best['short_conv']}
    assert 'best per model' in capsys.readouterr().out


def test_ablations_train_the_variants_at_equal_size_and_collect_them(tiny_recipe, tmp_path, data_dir, capsys):
    only = ['base', 'K=4', 'address norm, temperature 0.25']
    args = _args(tmp_path / 'abl', data_dir, only=only, lrs=[1e-3, 3e-3])
    assert ablations.run_ablations(args) == 0
    with open(tmp_path / 'abl' / 'ablations.json') as f:
        records = json.load(f)
    assert [(r['mixer'], r['lr']) for r in records] == [(label, lr) for label in only for lr in (1e-3, 3e-3)]
    specs = {r['mixer']: r['mixer_specs'][0] for r in records}
    assert specs['K=4']['topk'] == 4 and specs['address norm, temperature 0.25']['address_norm'] is True
    assert all(specs[label]['use_short_conv'] is True for label in only)
    counts = [r['num_params'] for r in records]
    assert max(counts) / min(counts) - 1 < 0.02
    for record in records:                                      # the final evaluation's slot usage
        assert 0 < record['read_used_share'] <= 1 and 0 < record['read_topk_mass'] <= 1
    table = capsys.readouterr().out
    assert '| base | 0.001 |' in table and 'read Top-K mass' in table
    # a second process with another --only reuses nothing it did not train and collects everything
    assert ablations.run_ablations(_args(tmp_path / 'abl', data_dir, only=['K=4'], lrs=[1e-3])) == 0
    assert 'reusing' in capsys.readouterr().out
    with open(tmp_path / 'abl' / 'ablations.json') as f:
        assert len(json.load(f)) == 6
    with pytest.raises(ValueError, match='unknown ablation'):
        ablations.run_ablations(_args(tmp_path / 'abl', data_dir, only=['K=5'], lrs=None))


def test_quick_seeds_train_each_model_at_each_seed_and_summarise(tiny_recipe, tmp_path, data_dir, capsys):
    args = _args(tmp_path, data_dir, only=['gla', 'ram'], seeds=[0, 3])
    assert jobs.run_quick(args) == 0
    with open(tmp_path / 'results.json') as f:
        records = json.load(f)
    assert [(r['mixer'], r['seed']) for r in records] == [('gla', 0), ('ram', 0), ('gla', 3), ('ram', 3)]
    folders = sorted(os.listdir(tmp_path))
    assert any(f.startswith('gla-') and f.endswith('steps') for f in folders), "seed 0 keeps the recipe's folder"
    assert any(f.startswith('gla-') and f.endswith('-seed3') for f in folders)
    by = {(r['mixer'], r['seed']): r['bits_per_byte'] for r in records}
    assert by['gla', 0] != by['gla', 3], "the seed reaches the initialisation and the batches"
    rows = {row['mixer']: row for row in jobs.seed_summary(records)}
    assert rows['ram']['seeds'] == [0, 3]
    assert rows['ram']['mean'] == pytest.approx((by['ram', 0] + by['ram', 3]) / 2)
    assert rows['ram']['min'] == min(by['ram', 0], by['ram', 3])
    assert rows['ram']['vs_best_baseline'] == pytest.approx(rows['ram']['mean'] / rows['gla']['mean'])
    out = capsys.readouterr().out
    assert 'over seeds [0, 3]' in out and '| ram | 0, 3 |' in out


@pytest.mark.parametrize('label', list(ablations.ABLATIONS))
def test_every_ablation_builds_the_ram_layer_it_names(label):
    """Each row of `--ablations` builds (on meta, at the quick width) a layer with the options it changes."""
    import torch
    from ramnet_fla.plugin import build_mixer
    spec = ablations.ablation_spec(label)
    with torch.device('meta'):
        layer = build_mixer(dict(spec), hidden_size=jobs.RECIPE.hidden_size, layer_idx=0)
    for key in SCALAR_OPTIONS & spec.keys():
        assert getattr(layer, key) == spec[key], key
    assert (layer.value_skip is not None) == spec.get('value_skip', False)
