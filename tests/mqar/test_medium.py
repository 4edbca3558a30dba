"""`ramnet-fla mqar --medium`: the run list, the seed/lr protocol, the seed summary and its plots."""

import json

import pytest

import ramnet_fla.mqar.experiments as mqar_experiments
from ramnet_fla.cli import main
from ramnet_fla.mqar.data import MQARTask
from ramnet_fla.mqar.experiments import (MEDIUM_LEARNING_RATES, MEDIUM_SEEDS, medium_plan, medium_points,
                                         run_medium)
from ramnet_fla.mqar.report import plot_accuracy_vs_m, plot_medium, summarize_seeds
from ramnet_fla.mqar.train import MQARRun, mixer_state_size

PNG = b'\x89PNG\r\n\x1a\n'


def _sizes(run: MQARRun) -> dict:
    from ramnet_fla.mqar.train import MQARModel
    model = MQARModel(run.task.vocab_size, run.d_model, run.layer_specs())
    sizes = [mixer_state_size(s, m, run.d_model, run.task.seq_len) for s, m in zip(run.layer_specs(), model.mixers)]
    return {'total': sum(s['total'] for s in sizes), 'active': sum(s['active'] for s in sizes)}


def test_medium_points_cover_the_grid():
    points = medium_points()
    names = [(p.name, p.task.num_kv_pairs) for p in points]
    assert len(set(names)) == len(names), "no point twice"
    for p in points:
        assert (p.task.seq_len, p.task.vocab_size, p.d_model) == (256, 8192, 64)
        assert p.task.num_kv_pairs in (32, 64) and p.steps == 150 and p.seed == 0
    at_64 = [n for n, pairs in names if pairs == 64]
    assert at_64[:2] == ['ram-M4096+prior', 'deltanet-d32+prior'], "the target comparison comes first"
    assert [n for n in at_64 if n.startswith('ram') and n.endswith('+prior')] == [
        'ram-M4096+prior', 'ram-M65536+prior', 'ram-M512+prior', 'ram-M64+prior']
    assert names.index(('ram-M4096', 64)) < names.index(('ram-M4096+prior', 32)), "the 64-pair panel first"
    assert {'gla-d32+prior', 'deltanet-d32+prior', 'gated_deltanet-d32+prior', 'ram-M4096'} <= set(at_64)
    assert {n for n, pairs in names if pairs == 32} == {'ram-M4096+prior', 'deltanet-d32+prior'}
    # two shards (points 0, 2, ... and 1, 3, ...) each get RAM points and baselines
    for share in (points[0::2], points[1::2]):
        assert {p.name.split('-')[0] for p in share} >= {'ram', 'deltanet'}
    assert MEDIUM_SEEDS == (0, 1, 2) and sorted(MEDIUM_LEARNING_RATES) == [3e-4, 1e-3, 3e-3]


def test_medium_state_sizes_span_ram_and_bound_the_baselines():
    points = {p.name: p for p in medium_points() if p.task.num_kv_pairs == 64}
    ram = {m: _sizes(points[f"ram-M{m}+prior"]) for m in (64, 512, 4096, 65536)}
    # 2 layers x H=2 x M x (V=32 + 1); active 2 layers x 2 * K=8 * H * V, whatever M
    assert {m: s['total'] for m, s in ram.items()} == {m: 2 * 2 * m * 33 for m in ram}
    assert {s['active'] for s in ram.values()} == {2 * 2 * 8 * 2 * 32}
    for name in ('gla-d32+prior', 'deltanet-d32+prior', 'gated_deltanet-d32+prior'):
        sizes = _sizes(points[name])
        assert sizes['total'] == sizes['active'] == 2 * 2 * 32 * 32, name
        assert sizes['total'] <= 4 * ram[64]['active'], "the baselines the issue's target compares against"
    # the address logits per head (parameters): 12 at M=64, 24 at 512 and 4,096, 32 at 65,536
    specs = {m: points[f"ram-M{m}+prior"].mixer.spec for m in ram}
    assert {m: s['num_factors'] * s['factor_dim'] for m, s in specs.items()} == {64: 12, 512: 24, 4096: 24, 65536: 32}


def test_medium_plan_states_its_reductions_and_estimate():
    plan = medium_plan(medium_points())
    assert 'does not fit 3 h' in plan and 'width 128 (2x' in plan and 'dropped: 16 pairs' in plan and 'seed 0' in plan
    assert 'estimated time on 1 idle core' in plan


def _tiny_point(label: str, mixer, **kwargs) -> MQARRun:
    task = MQARTask(vocab_size=64, seq_len=16, num_kv_pairs=2)
    return MQARRun(mixer=mixer, label=label, d_model=16, task=task, steps=2, batch_size=8, num_test=16,
                   eval_every=1, target_accuracy=1.1, **kwargs)


def test_run_medium_sweeps_lrs_on_the_first_seed_then_reuses_the_best(tmp_path):
    ram = {'name': 'ram', 'num_heads': 2, 'use_short_conv': True, 'num_factors': 2, 'factor_dim': 4, 'topk': 2}
    point = _tiny_point('ram-M16', ram)
    path = tmp_path / 'results.json'
    records = run_medium([point], path, seeds=(0, 1, 2), learning_rates=(1e-3, 3e-3), device='cpu', progress=False,
                         seed_floor=0)
    assert [(r['seed'], r['lr']) for r in records][:2] == [(0, 1e-3), (0, 3e-3)]
    best = max(records[:2], key=lambda r: r['accuracy'])['lr']
    assert [(r['seed'], r['lr']) for r in records[2:]] == [(1, best), (2, best)]
    assert json.loads(path.read_text()) == records
    # resumed: nothing trained again
    before = path.read_text()
    assert run_medium([point], path, seeds=(0, 1, 2), learning_rates=(1e-3, 3e-3), device='cpu',
                      progress=False, seed_floor=0) == records
    assert path.read_text() == before

    rows = summarize_seeds(records)
    row, = rows
    accuracies = [max(r['accuracy'] for r in records if r['seed'] == s) for s in (0, 1, 2)]
    assert row['seeds'] == [0, 1, 2] and row['accuracy'] == pytest.approx(sum(accuracies) / 3)
    assert (row['accuracy_min'], row['accuracy_max']) == (min(accuracies), max(accuracies))
    assert row['num_slots'] == 16 and row['family'] == 'ram'
    plot_medium(rows, str(tmp_path / 'a.png'))
    plot_accuracy_vs_m(rows, str(tmp_path / 'b.png'))
    assert (tmp_path / 'a.png').read_bytes()[:8] == PNG and (tmp_path / 'b.png').read_bytes()[:8] == PNG


def test_run_medium_skips_the_other_seeds_of_a_point_at_chance_level(tmp_path):
    ram = {'name': 'ram', 'num_heads': 2, 'use_short_conv': True, 'num_factors': 2, 'factor_dim': 4, 'topk': 2}
    records = run_medium([_tiny_point('ram-M16', ram)], tmp_path / 'r.json', seeds=(0, 1), learning_rates=(1e-3,),
                         device='cpu', progress=False, seed_floor=1.01)
    assert [(r['seed'], r['lr']) for r in records] == [(0, 1e-3)]
    row, = summarize_seeds(records)
    assert row['seeds'] == [0]


def test_medium_command_runs_its_points_and_writes_plots(tmp_path, monkeypatch, capsys):
    ram = {'name': 'ram', 'num_heads': 2, 'use_short_conv': True, 'num_factors': 2, 'factor_dim': 4, 'topk': 2}
    tiny = [_tiny_point('ram-M16', ram), _tiny_point('deltanet', {'name': 'deltanet', 'num_heads': 2})]
    monkeypatch.setattr(mqar_experiments, "medium_points", lambda *args: tiny)
    monkeypatch.setattr(mqar_experiments, "MEDIUM_SEED_FLOOR", 0)  # tiny runs stay at chance level
    out = tmp_path / 'medium'
    assert main(['mqar', '--medium', '--out', str(out), '--threads', '1', '--no-progress', '--lr', '1e-3']) == 0
    records = json.loads((out / 'results.json').read_text())
    assert sorted((r['mixer'], r['seed']) for r in records) == sorted(
        (name, s) for name in ('ram-M16', 'deltanet') for s in (0, 1, 2))
    assert all(r['lr'] == 1e-3 for r in records)
    assert (out / 'mqar_medium.png').read_bytes()[:8] == PNG
    assert (out / 'mqar_medium_vs_m.png').read_bytes()[:8] == PNG
    printed = capsys.readouterr().out
    assert 'does not fit 3 h' in printed and 'ram-M16' in printed


def test_shards_share_one_results_file_and_a_plain_run_then_trains_nothing(tmp_path, monkeypatch):
    ram = {'name': 'ram', 'num_heads': 2, 'use_short_conv': True, 'num_factors': 2, 'factor_dim': 4, 'topk': 2}
    tiny = [_tiny_point('ram-M16', ram), _tiny_point('deltanet', {'name': 'deltanet', 'num_heads': 2}),
            _tiny_point('gla', {'name': 'gla', 'num_heads': 2})]
    monkeypatch.setattr(mqar_experiments, "medium_points", lambda *args: tiny)
    monkeypatch.setattr(mqar_experiments, "MEDIUM_SEED_FLOOR", 0)  # tiny runs stay at chance level
    out = tmp_path / 'medium'
    common = ['mqar', '--medium', '--out', str(out), '--threads', '1', '--no-progress', '--lr', '1e-3']
    assert main(common + ['--shard', '1/2']) == 0
    assert {r['mixer'] for r in json.loads((out / 'results.json').read_text())} == {'deltanet'}
    assert main(common + ['--shard', '0/2']) == 0
    records = json.loads((out / 'results.json').read_text())
    assert sorted({r['mixer'] for r in records}) == ['deltanet', 'gla', 'ram-M16'] and len(records) == 9
    trained = []
    monkeypatch.setattr('ramnet_fla.mqar.train.train_mqar', lambda run, **kw: trained.append(run))
    assert main(common) == 0
    assert trained == [] and json.loads((out / 'results.json').read_text()) == records
    (out / 'mqar_medium.png').unlink()
    assert main(['mqar', '--medium', '--report', '--out', str(out)]) == 0      # trains nothing either
    assert trained == [] and (out / 'mqar_medium.png').read_bytes()[:8] == PNG


def test_report_needs_runs_and_no_shard(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(['mqar', '--medium', '--report', '--out', str(tmp_path / 'empty')])
    err = capsys.readouterr().err
    assert 'argument --report' in err and 'holds no runs yet' in err
    with pytest.raises(SystemExit):
        main(['mqar', '--medium', '--report', '--shard', '0/2', '--out', str(tmp_path / 'empty')])
    assert 'drop --shard' in capsys.readouterr().err


def test_append_result_keeps_records_another_process_wrote_meanwhile(tmp_path):
    from ramnet_fla.mqar.train import append_result, load_results, save_results

    def record(name):
        return {'key': json.dumps({'mixer': name}), 'mixer': name, 'accuracy': 0.5}

    path = tmp_path / 'results.json'
    append_result(path, record('a'))
    save_results(path, load_results(path) + [record('b')])  # the other shard, after this one started
    append_result(path, record('c'))
    append_result(path, record('a'))  # already there: not added twice
    assert [r['mixer'] for r in load_results(path)] == ['a', 'b', 'c']


@pytest.mark.parametrize('value, expected', [('2/2', '0 <= I < N'), ('1/0', 'N >= 1'), ('a/2', 'I/N'), ('-1/2', 'I/N')])
def test_shard_values_are_checked(value, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(['mqar', '--medium', '--shard', value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert 'argument --shard' in err and expected in err


def test_shard_needs_a_sweep(capsys):
    with pytest.raises(SystemExit):
        main(['mqar', '--shard', '0/2'])
    assert '--shard: only applies to --medium and --full' in capsys.readouterr().err
