"""Checkpoints: SIGKILL after a checkpoint and --resume continue the uninterrupted loss curve
exactly; a truncated or altered checkpoint is refused with its file named, the previous one kept;
a half-written checkpoint folder (.tmp) is ignored."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal

import pytest
import torch

from ramnet_fla.lm.checkpoint import CheckpointError, verify
from ramnet_fla.cli.lm import main
from ramnet_fla.lm.metrics import read_records
from ramnet_fla.lm.train import train
from tests.lm.conftest import tiny_args, tiny_config

STEPS = 6


class SigkillAt:
    """Kills its own process with SIGKILL when step `step` (0-based) is about to start."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_start(self, run, step: int) -> None:
        if step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def _train_until_killed(config, step: int) -> None:
    train(config, hooks=[SigkillAt(step)])


def _losses(out: str) -> list[float]:
    return [r['loss'] for r in read_records(os.path.join(out, 'metrics.jsonl')) if r['kind'] == 'train']


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, text_file, data_dir):
    out = str(tmp_path_factory.mktemp('whole'))
    train(tiny_config(text_file, data_dir, out, steps=STEPS, ckpt_every=2))
    return out


def test_sigkill_then_resume_continues_exactly(tmp_path, uninterrupted, text_file, data_dir):
    out = str(tmp_path / 'killed')
    config = tiny_config(text_file, data_dir, out, steps=STEPS, ckpt_every=2)
    process = multiprocessing.get_context('spawn').Process(target=_train_until_killed, args=(config, 4))
    process.start()
    process.join(timeout=300)
    assert process.exitcode == -signal.SIGKILL
    checkpoints = os.path.join(out, 'checkpoints')
    assert sorted(os.listdir(checkpoints)) == ['step_00000002', 'step_00000004']
    assert len(_losses(out)) == 4 and not os.path.exists(os.path.join(out, 'results.json'))

    os.makedirs(os.path.join(checkpoints, 'step_00000006.tmp'))           # as a kill mid-save leaves it
    with open(os.path.join(checkpoints, 'step_00000006.tmp', '__0_0.distcp'), 'wb') as f:
        f.write(b'partial')
    record = train(tiny_config(text_file, data_dir, out, steps=STEPS, ckpt_every=2, resume='latest'))
    assert record['steps'] == STEPS
    resumed, whole = _losses(out), _losses(uninterrupted)
    assert len(resumed) == STEPS
    torch.testing.assert_close(torch.tensor(resumed), torch.tensor(whole), rtol=1e-6, atol=0)
    with open(os.path.join(uninterrupted, 'results.json')) as f:
        assert record['loss'] == pytest.approx(json.load(f)['loss'], rel=1e-6)
    assert sorted(os.listdir(checkpoints)) == ['step_00000004', 'step_00000006']   # the .tmp is gone


def _copy_run(source: str, target: str) -> str:
    shutil.copytree(source, target)
    return os.path.join(target, 'checkpoints')


@pytest.mark.parametrize('damage', ['truncate', 'flip'])
def test_a_damaged_checkpoint_is_refused_naming_the_file(tmp_path, uninterrupted, text_file, data_dir, damage, capsys):
    out = str(tmp_path / 'run')
    checkpoints = _copy_run(uninterrupted, out)
    broken = os.path.join(checkpoints, 'step_00000006', '__0_0.distcp')
    with open(broken, 'r+b') as f:
        if damage == 'truncate':
            f.truncate(os.path.getsize(broken) // 2)
        else:
            f.seek(100)
            byte = f.read(1)
            f.seek(100)
            f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CheckpointError, match=broken.replace('.', r'\.')):
        train(tiny_config(text_file, data_dir, out, steps=STEPS, ckpt_every=2, resume='latest'))
    verify(os.path.join(checkpoints, 'step_00000004'))                 # the previous one is intact
    with pytest.raises(SystemExit) as exit_info:
        main(['train', *tiny_args(text_file, data_dir, out, steps=STEPS), '--ckpt-every', '2', '--resume'])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert broken in err and 'Traceback' not in err
    # resuming from the previous checkpoint explicitly works and ends where the whole run did
    record = train(tiny_config(text_file, data_dir, out, steps=STEPS, ckpt_every=2,
                               resume=os.path.join(checkpoints, 'step_00000004')))
    torch.testing.assert_close(torch.tensor(_losses(out)), torch.tensor(_losses(uninterrupted)), rtol=1e-6, atol=0)
    assert record['steps'] == STEPS


def test_resume_refuses_other_settings_and_fresh_runs_refuse_old_checkpoints(tmp_path, uninterrupted, text_file,
                                                                             data_dir):
    out = str(tmp_path / 'run')
    _copy_run(uninterrupted, out)
    with pytest.raises(ValueError, match='--lr 0.003 there, 0.001 now'):
        train(tiny_config(text_file, data_dir, out, steps=STEPS, ckpt_every=2, resume='latest', lr=1e-3))
    with pytest.raises(CheckpointError, match='pass --resume'):
        train(tiny_config(text_file, data_dir, out, steps=STEPS, ckpt_every=2))
