"""Checkpoints of a run: model, optimiser, schedule, data position and RNG, written atomically.

Format: torch.distributed.checkpoint (DCP), through `get_state_dict` / `set_state_dict`, so one
process, DDP and FSDP2 (sharded, each rank writes its shards) share one format and a checkpoint
can be resumed at another world size. Around it:

    OUT/checkpoints/step_00000040/
        .metadata, __*_*.distcp    DCP: {'model': ..., 'optim': ...}
        rng_rank<r>.pt             each rank's torch RNG states
        extra.pt                   step, schedule state, data position, the run's config
        manifest.json              size and sha256 of every file above; written last

A checkpoint is written into `step_XXXXXXXX.tmp/` and renamed once every rank has finished and
the manifest is written, so a crash mid-write leaves only a `.tmp` folder (ignored and removed
later) and the previous checkpoint untouched. Older complete checkpoints beyond `keep` are
deleted only after the new one is in place. Loading checks the manifest first: a missing,
truncated or altered file raises `CheckpointError` naming it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import warnings

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from ramnet_fla.lm.distributed import World, barrier, broadcast_object

MANIFEST = 'manifest.json'
STEP_DIR = re.compile(r'^step_(\d{8})$')


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the file and what is wrong with it."""


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _rng_state() -> dict:
    state = {'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


@contextlib.contextmanager
def _single_process_quiet(world: World):
    """DCP warns that it assumes one process when there is no process group: that is the intent here."""
    with warnings.catch_warnings():
        if not world.distributed:
            warnings.filterwarnings('ignore', message='torch.distributed is disabled')
        yield


def verify(path: str) -> dict:
    """The manifest of checkpoint `path` after checking every file in it; CheckpointError if not whole."""
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest_path):
        raise CheckpointError(f"checkpoint {path} is incomplete: {manifest_path} is missing")
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
        files = manifest['files']
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint file {manifest_path} is corrupted ({error})") from None
    for name, expected in files.items():
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            raise CheckpointError(f"checkpoint file {file} is missing")
        size = os.path.getsize(file)
        if size != expected['size']:
            raise CheckpointError(f"checkpoint file {file} is truncated or corrupted: {size:,} bytes, "
                                  f"{expected['size']:,} expected (from {MANIFEST})")
        if _sha256(file) != expected['sha256']:
            raise CheckpointError(f"checkpoint file {file} is corrupted: its sha256 differs from {MANIFEST}")
    return manifest


class CheckpointManager:
    """Saves and restores the checkpoints under `folder` (see the module docstring)."""

    def __init__(self, folder: str, world: World, keep: int = 2) -> None:
        self.folder, self.world, self.keep = folder, world, max(1, keep)

    def path(self, step: int) -> str:
        return os.path.join(self.folder, f"step_{step:08d}")

    def complete(self) -> list[str]:
        """The checkpoint folders that were renamed into place (oldest first)."""
        if not os.path.isdir(self.folder):
            return []
        names = sorted(n for n in os.listdir(self.folder) if STEP_DIR.match(n))
        return [os.path.join(self.folder, n) for n in names]

    def latest(self) -> str | None:
        done = self.complete()
        return done[-1] if done else None

    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, extra: dict) -> str:
        final = self.path(step)
        temporary = final + '.tmp'
        if self.world.is_main:
            for name in os.listdir(self.folder) if os.path.isdir(self.folder) else ():
                if name.endswith('.tmp'):                     # left by an interrupted save
                    shutil.rmtree(os.path.join(self.folder, name), ignore_errors=True)
            os.makedirs(temporary)
        barrier(self.world)
        model_state, optim_state = get_state_dict(model, optimizer)
        with _single_process_quiet(self.world):
            dcp.save({'model': model_state, 'optim': optim_state}, checkpoint_id=temporary)
        torch.save(_rng_state(), os.path.join(temporary, f"rng_rank{self.world.rank}.pt"))
        barrier(self.world)
        if self.world.is_main:
            torch.save(extra, os.path.join(temporary, 'extra.pt'))
            files = {name: {'size': os.path.getsize(os.path.join(temporary, name)),
                            'sha256': _sha256(os.path.join(temporary, name))}
                     for name in sorted(os.listdir(temporary))}
            with open(os.path.join(temporary, MANIFEST), 'w') as f:
                json.dump({'step': step, 'world_size': self.world.world_size, 'files': files}, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            if os.path.exists(final):                          # the same step saved again (a rerun)
                shutil.rmtree(final)
            os.replace(temporary, final)
            for old in self.complete()[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        barrier(self.world)
        return final

    def load(self, path: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """Restore model, optimiser and this rank's RNG from `path`; return its `extra` dict."""
        error = None
        if self.world.is_main:
            try:
                verify(path)
            except CheckpointError as caught:
                error = str(caught)
        error = broadcast_object(error, self.world)
        if error is not None:
            raise CheckpointError(error)
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {'model': model_state, 'optim': optim_state}
        with _single_process_quiet(self.world):
            dcp.load(state, checkpoint_id=path)
        set_state_dict(model, optimizer, model_state_dict=state['model'], optim_state_dict=state['optim'])
        rng_path = os.path.join(path, f"rng_rank{self.world.rank}.pt")
        if os.path.exists(rng_path):                  # absent when resumed at a larger world size
            rng = torch.load(rng_path, weights_only=True)
            torch.set_rng_state(rng['torch'])
            if 'cuda' in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng['cuda'])
        return torch.load(os.path.join(path, 'extra.pt'), weights_only=False)
