"""`ramnet-fla mqar`: results file, plot and table, resumed on a second call."""

import json

from ramnet_fla.cli import main
from ramnet_fla.mqar.report import format_table


def test_quick_command_writes_results_plot_and_table(tmp_path, capsys):
    out = tmp_path / 'mqar'
    args = ['mqar', '--quick', '--steps', '2', '--seed', '3', '--out', str(out), '--threads', '1', '--no-progress',
            '--num-test', '64']
    assert main(args) == 0
    records = json.loads((out / 'results.json').read_text())
    assert [r['mixer'] for r in records] == ['ram+prior', 'gla+prior', 'deltanet+prior']
    assert all(r['mixer_specs'][0]['address_prior'] == {'tie': True, 'shift': True} for r in records)
    for record in records:
        assert (record['d_model'], record['seq_len'], record['num_kv_pairs'], record['seed']) == (64, 64, 16, 3)
        assert record['steps'] == 2 and 0.0 <= record['accuracy'] <= 1.0 and record['lr'] == 1e-3
        assert record['state_size'] > 0 and record['active_state'] > 0
    ram = records[0]
    # 2 layers x H=2 heads x M=4**5 slots x (V=32 + 1); active 2 layers x 2 * K=8 * H * V
    assert ram['state_size'] == 2 * 2 * 1024 * 33 and ram['active_state'] == 2 * 2 * 8 * 2 * 32
    assert (out / 'mqar.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    table = capsys.readouterr().out
    assert 'deltanet' in table and 'accuracy' in table

    # a second call finds every run in results.json and trains nothing
    before = (out / 'results.json').read_text()
    assert main(args) == 0
    assert (out / 'results.json').read_text() == before

    plain = tmp_path / 'plain'
    assert main(['mqar', '--steps', '2', '--out', str(plain), '--threads', '1', '--no-progress', '--num-test', '64',
                 '--no-prior', '--mixers', 'ram']) == 0
    record, = json.loads((plain / 'results.json').read_text())
    assert record['mixer'] == 'ram' and 'address_prior' not in record['mixer_specs'][0]


def test_table_lists_every_record():
    records = [{'mixer': 'ram', 'd_model': 64, 'seq_len': 64, 'num_kv_pairs': 16, 'state_size': 8448,
                'active_state': 2048, 'lr': 1e-3, 'accuracy': 0.9876, 'steps': 300, 'seconds': 12.3},
               {'mixer': 'gla', 'd_model': 64, 'seq_len': 64, 'num_kv_pairs': 16, 'state_size': None,
                'active_state': None, 'lr': 3e-3, 'accuracy': 0.5, 'steps': 600, 'seconds': 40.0}]
    lines = format_table(records).splitlines()
    assert len(lines) == 3 and lines[1].split()[0] == 'ram' and '0.988' in lines[1] and '-' in lines[2].split()


def test_quick_gated_deltanet_gets_deltanet_s_state_budget(tmp_path):
    # fla's GatedDeltaNet defaults (head_dim 256, expand_v 2) would dwarf the other mixers at width 64
    out = tmp_path / 'gdn'
    assert main(['mqar', '--steps', '1', '--out', str(out), '--threads', '1', '--no-progress', '--num-test', '64',
                 '--mixers', 'deltanet', 'gated_deltanet']) == 0
    deltanet, gated = json.loads((out / 'results.json').read_text())
    assert gated['mixer'] == 'gated_deltanet+prior'
    assert gated['mixer_specs'][0]['head_dim'] == 32 and gated['mixer_specs'][0]['expand_v'] == 1
    assert gated['state_size'] == deltanet['state_size'] == 2 * 2 * 32 * 32
