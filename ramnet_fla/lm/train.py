"""The training loop: the same code in one process and under torchrun (DDP or FSDP2).

Per optimiser step: the global batch of that step (`BatchSchedule`, a function of seed and step),
this rank's rows of it, `grad_accum` micro-batches (gradient sync on the last one only), cross
entropy in float32 (bf16 autocast on CUDA), gradient clipping, AdamW, warm-up + cosine. Rank 0
logs (`metrics.jsonl`, tqdm) and writes results; evaluation runs on every rank, checkpoints are
`ramnet_fla.lm.checkpoint`'s. `train(config)` returns the run's record (`results.json`).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ramnet_fla.lm.checkpoint import CheckpointError, CheckpointManager
from ramnet_fla.lm.config import TrainConfig
from ramnet_fla.lm.data import BatchSchedule, TokenData, ensure_prepared
from ramnet_fla.lm.distributed import (World, broadcast_object, close_world, gradient_sync, init_world,
                                       mean_over_ranks, parallelize, world_size_from_env)
from ramnet_fla.lm.evaluate import evaluate
from ramnet_fla.lm.diagnostics import build_diagnostics
from ramnet_fla.lm.hooks import call_hooks
from ramnet_fla.lm.metrics import MetricsLog
from ramnet_fla.lm.model import build_config, build_model, check_mixers, count_params, match_params, spec_label
from ramnet_fla.lm.optim import build_optimizer, build_schedule


@dataclass
class Run:
    """What a hook sees: the config, the (wrapped) model, its optimiser, the world and the data."""

    config: TrainConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    world: World
    data: TokenData
    model_config: object
    params: dict


def run_label(config: TrainConfig) -> str:
    """A short name: the mixers of the layers ('ram', 'ram x3 + attention', ...) unless `label`."""
    if config.label:
        return config.label
    names = [config.mixers[i % len(config.mixers)]['name'] for i in range(config.layers)]
    groups = []
    for name in names:
        if groups and groups[-1][0] == name:
            groups[-1][1] += 1
        else:
            groups.append([name, 1])
    return ' + '.join(n if c == 1 or len(groups) == 1 else f"{n} x{c}" for n, c in groups)


def prepare_data(config: TrainConfig, world: World) -> TokenData:
    """Rank 0 builds the token cache (in a child process) if missing; every rank then maps it."""
    folder, error = None, None
    if world.is_main:
        try:
            folder = ensure_prepared(config.data_spec())
        except (ValueError, RuntimeError) as caught:
            error = str(caught)
    folder, error = broadcast_object((folder, error), world)
    if error is not None:
        raise ValueError(error)
    data = TokenData(folder)
    data.check_fits(config.seq_len)
    return data


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if config.precision == 'bf16' or (config.precision == 'auto' and device.type == 'cuda'):
        return torch.bfloat16
    return None


def _save_model(model: torch.nn.Module, model_config, folder: str, world: World) -> None:
    """The final weights as a transformers folder (config.json + model.safetensors), gathered from
    every rank (`get_model_state_dict(full_state_dict=True)`), written by rank 0."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=world.distributed,
                                                                  cpu_offload=True))
    if world.is_main:
        os.makedirs(folder, exist_ok=True)
        model_config.save_pretrained(folder)
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()},
                  os.path.join(folder, 'model.safetensors'))


def train(config: TrainConfig, hooks=()) -> dict:
    """Train one model as `config` says; return its record (also OUT/results.json on rank 0)."""
    config.validate(world_size_from_env())
    world = init_world(config.device)
    try:
        return _train(config, world, list(hooks) + build_diagnostics(config.diagnostics, config))
    finally:
        close_world()


def _train(config: TrainConfig, world: World, hooks: list) -> dict:
    if config.threads:
        torch.set_num_threads(config.threads)
    log = print if world.is_main else (lambda *a, **k: None)
    check_mixers(config.mixers)
    data = prepare_data(config, world)

    model_config = build_config(config.mixers, data.vocab_size, config.hidden_size, config.layers,
                                config.intermediate_size, max(2048, config.seq_len))
    if config.match_params is not None:
        model_config = match_params(model_config, config.match_params)
    params = count_params(model_config)
    model = build_model(model_config, config.seed, world.device)
    base_model = model
    model = parallelize(model, config.parallel, world)
    optimizer = build_optimizer(model, config.lr, config.weight_decay, (config.beta1, config.beta2))
    schedule = build_schedule(optimizer, config.steps, config.warmup_steps, config.min_lr_ratio)
    autocast_dtype = _autocast_dtype(config, world.device)
    label = run_label(config)

    os.makedirs(config.out, exist_ok=True)
    checkpoints = CheckpointManager(os.path.join(config.out, 'checkpoints'), world, config.keep_checkpoints)
    metrics = MetricsLog(os.path.join(config.out, 'metrics.jsonl'), world.is_main, config.steps, config.progress,
                         label)
    start_step, train_seconds = 0, 0.0
    if config.resume:
        path = checkpoints.latest() if config.resume == 'latest' else config.resume
        if path is None:
            log(f"--resume: no checkpoint in {checkpoints.folder} yet, starting at step 0")
        else:
            extra = checkpoints.load(path, model, optimizer)
            mismatch = config.resume_mismatch(extra['config'])
            if mismatch:
                raise ValueError(f"--resume: {path} was written with other settings: " +
                                 '; '.join(f"--{k.replace('_', '-')} {a!r} there, {b!r} now"
                                           for k, (a, b) in mismatch.items()))
            schedule.load_state_dict(extra['schedule'])
            start_step, train_seconds = extra['step'], extra['train_seconds']
            metrics.truncate_after(start_step)
            log(f"resumed from {path} at step {start_step}")
    elif checkpoints.latest() is not None:
        raise CheckpointError(f"{config.out} already holds checkpoints ({checkpoints.latest()}): pass --resume to "
                              f"continue that run, or choose another --out")
    if start_step == 0 and world.is_main and os.path.exists(metrics.path):
        os.remove(metrics.path)

    log(f"ramnet-fla lm train: {label}, world size {world.world_size} ({config.parallel if world.distributed else 'one process'}), "
        f"device {world.device}, {'bf16 autocast' if autocast_dtype else 'fp32'}")
    log(config.describe())
    log(f"  parameters: {params['total']:,} ({params['non_embedding']:,} without embeddings), "
        f"MLP intermediate size {base_model.model.layers[0].mlp.intermediate_size}, mixers "
        f"{', '.join(spec_label(model_config.mixer_for_layer(i)) for i in range(config.layers))}")
    batches = BatchSchedule(data.train, config.seq_len, config.batch_size, config.seed)
    log(f"  data: {data.meta['train_tokens']:,} training tokens ({data.meta['train_bytes']:,} bytes), "
        f"{data.meta['val_tokens']:,} held out; {config.steps} steps = "
        f"{config.steps * config.batch_size * config.seq_len:,} tokens = {batches.epochs(config.steps):.2f} epochs")

    run = Run(config, model, optimizer, world, data, model_config, params)
    call_hooks(hooks, 'on_train_start', run)
    local = config.batch_size // world.world_size
    micro = local // config.grad_accum
    tokens_per_step = config.batch_size * config.seq_len
    metrics.start_at(start_step)
    model.train()
    diverged = False

    def run_eval(step: int, final: bool) -> dict:
        result = evaluate(model, data, config.seq_len, world, config.eval_batch_size,
                          config.final_eval_windows if final else config.eval_windows,
                          config.copy_examples if final else 0, config.rare_threshold, autocast_dtype, config.seed)
        diagnostics = call_hooks(hooks, 'on_eval', run, step)
        record = {'kind': 'eval', 'step': step, 'tokens': step * tokens_per_step, 'final': final, **result}
        if diagnostics:
            record['diagnostics'] = diagnostics
        metrics.write(record)
        return record

    for step in range(start_step, config.steps):
        call_hooks(hooks, 'on_step_start', run, step)
        began = time.perf_counter()
        rows = batches.rows(step, world.rank * local, (world.rank + 1) * local)
        loss_sum = torch.zeros((), device=world.device)
        for index in range(config.grad_accum):
            batch = rows[index * micro:(index + 1) * micro].to(world.device)
            with gradient_sync(model, index == config.grad_accum - 1):
                with torch.autocast(world.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    logits = model(input_ids=batch[:, :-1]).logits
                loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
                (loss / config.grad_accum).backward()
            loss_sum += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, 'full_tensor') else grad_norm
        extra_log = call_hooks(hooks, 'on_backward_end', run, step + 1)
        lr = schedule.get_last_lr()[0]
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = float(mean_over_ranks(loss_sum / config.grad_accum, world))
        if world.device.type == 'cuda':
            torch.cuda.synchronize()
        train_seconds += time.perf_counter() - began
        done = step + 1
        tokens_per_second = done * tokens_per_step / max(train_seconds, 1e-9)
        if done % config.log_every == 0 or done == config.steps or not math.isfinite(loss_value):
            metrics.write({'kind': 'train', 'step': done, 'tokens': done * tokens_per_step, 'loss': loss_value,
                           'lr': lr, 'grad_norm': float(grad_norm), 'tokens_per_second': tokens_per_second,
                           **({'diagnostics': extra_log} if extra_log else {})})
        metrics.progress(1, loss=f"{loss_value:.3f}", tok_s=f"{tokens_per_second:,.0f}", lr=f"{lr:.2e}")
        if not math.isfinite(loss_value):
            log(f"step {done}: the loss is {loss_value}; stopping this run (diverged)")
            diverged = True
            break
        if config.eval_every and done % config.eval_every == 0 and done < config.steps:
            run_eval(done, final=False)
        if config.ckpt_every and (done % config.ckpt_every == 0 or done == config.steps):
            checkpoints.save(done, model, optimizer, {'step': done, 'schedule': schedule.state_dict(),
                                                      'train_seconds': train_seconds, 'config': config.to_dict(),
                                                      'data_position': {'step': done, 'seed': config.seed}})
    metrics.close()
    done = step + 1 if config.steps > start_step else start_step
    final = run_eval(done, final=True)
    call_hooks(hooks, 'on_train_end', run)
    curve = [[r['tokens'], r['loss']] for r in _eval_records(metrics.path) if world.is_main]
    record = {
        'mixer': label, 'mixer_specs': [model_config.mixer_for_layer(i) for i in range(config.layers)],
        'num_params': params['total'], 'non_embedding_params': params['non_embedding'],
        'intermediate_size': base_model.model.layers[0].mlp.intermediate_size, 'tokens': done * tokens_per_step, 'steps': done,
        'lr': config.lr, 'loss': final['loss'], 'ppl': final['ppl'], 'bits_per_byte': final['bits_per_byte'],
        **{k: final.get(k) for k in ('recall_hit_loss', 'recall_hit_share', 'frequent_hit_loss',
                                     'frequent_hit_share', 'other_loss', 'copy_loss', 'eval_tokens')},
        'tokens_per_second': done * tokens_per_step / max(train_seconds, 1e-9) if done > start_step or train_seconds
        else None,
        'train_seconds': round(train_seconds, 2), 'diverged': diverged, 'world_size': world.world_size,
        'parallel': config.parallel if world.distributed else None, 'device': str(world.device),
        'vocab_size': data.vocab_size, 'data': data.meta['data'], 'tokenizer': data.meta['tokenizer'],
        'curve': curve, 'config': config.to_dict(),
        **({'diagnostics': final['diagnostics']} if 'diagnostics' in final else {}),
    }
    if config.save_model:
        _save_model(model, model_config, os.path.join(config.out, 'model'), world)
    if world.is_main:
        temporary = os.path.join(config.out, 'results.json.tmp')
        with open(temporary, 'w') as f:
            json.dump(record, f, indent=1)
        os.replace(temporary, os.path.join(config.out, 'results.json'))
        log(f"{label}: held-out loss {final['loss']:.4f}, ppl {final['ppl']:.2f}, {final['bits_per_byte']:.4f} bits/byte"
            + (f", recall-hit loss {final['recall_hit_loss']:.3f}, copy loss {final['copy_loss']:.3f}"
               if 'copy_loss' in final else '')
            + (f", {record['tokens_per_second']:,.0f} tokens/s" if record['tokens_per_second'] else '')
            + f" -> {config.out}")
    return record


def _eval_records(path: str) -> list[dict]:
    from ramnet_fla.lm.metrics import read_records
    return [r for r in read_records(path) if r.get('kind') == 'eval']
