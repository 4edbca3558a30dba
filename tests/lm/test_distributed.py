"""DDP and FSDP2 (2 gloo processes under torchrun) give the losses and parameters of one process
on the same global batch: a ram + gla + attention hybrid, 3 optimiser steps, float32."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from ramnet_fla.lm.metrics import read_records
from ramnet_fla.lm.train import train
from tests.lm.conftest import subprocess_env, tiny_args, tiny_config


def _losses(out: str) -> list[float]:
    return [r['loss'] for r in read_records(os.path.join(out, 'metrics.jsonl')) if r['kind'] == 'train']


def _params(out: str) -> dict:
    return load_file(os.path.join(out, 'model', 'model.safetensors'))


def assert_same_params(out: str, reference: str) -> None:
    """Every tensor within 1e-5 relative (in norm) and 1e-5 absolute (every element) of the
    reference: summation order differs between layouts, and Adam's first steps turn a float32
    rounding of a near-zero gradient into up to ~1e-6 absolute; a wrong gradient moves weights by ~lr (3e-3)."""
    params, expected = _params(out), _params(reference)
    assert params.keys() == expected.keys()
    for name, value in expected.items():
        difference = params[name] - value
        assert float(difference.norm() / value.norm()) <= 1e-5, name
        assert float(difference.abs().max()) <= 1e-5, name


@pytest.fixture(scope='module')
def single_process(tmp_path_factory, text_file, data_dir):
    out = str(tmp_path_factory.mktemp('single'))
    record = train(tiny_config(text_file, data_dir, out))
    return out, record


def test_gradient_accumulation_matches_one_batch(tmp_path, single_process, text_file, data_dir):
    out = str(tmp_path / 'accum')
    train(tiny_config(text_file, data_dir, out, grad_accum=2))
    reference, _ = single_process
    torch.testing.assert_close(torch.tensor(_losses(out)), torch.tensor(_losses(reference)), rtol=1e-5, atol=0)
    assert_same_params(out, reference)


@pytest.mark.parametrize('parallel', ['ddp', 'fsdp'])
def test_two_gloo_processes_match_one(tmp_path, single_process, text_file, data_dir, parallel):
    out = str(tmp_path / parallel)
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2',
               '-m', 'ramnet_fla.lm', 'train', *tiny_args(text_file, data_dir, out), '--parallel', parallel]
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    reference, record = single_process
    losses = _losses(out)
    assert len(losses) == 3
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(_losses(reference)), rtol=1e-5, atol=0)
    assert_same_params(out, reference)
    assert f"world size 2 ({parallel})" in result.stdout
    import json
    with open(os.path.join(out, 'results.json')) as f:
        distributed = json.load(f)
    assert distributed['world_size'] == 2 and distributed['parallel'] == parallel
    assert abs(distributed['loss'] - record['loss']) < 1e-5 * record['loss']
