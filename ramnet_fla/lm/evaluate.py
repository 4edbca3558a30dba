"""Held-out evaluation: loss, perplexity, bits per byte, and in-context recall on real text.

- loss / ppl / bits_per_byte over non-overlapping held-out windows of seq_len + 1 tokens; bits per
  byte = summed loss (nats) / ln 2 / the UTF-8 bytes of the predicted tokens.
- Associative-recall hits as in Zoology: target token x[j] is a hit when the bigram (x[j-1], x[j])
  already occurred earlier in its window. Hits whose bigram is frequent in the training data are
  easy without any memory, so `recall_hit_loss` is the mean loss on hits whose bigram occurs fewer
  than `rare_threshold` times in the training tokens (`recall_hit_share`: their share of all
  targets); `frequent_hit_loss` the rest of the hits; `other_loss` the non-hits.
- Copy: a held-out passage of 64..128 tokens (fewer when seq_len + 1 < 256) placed twice at the end
  of a window filled up with the held-out text before it; `copy_loss` is the mean loss on the
  second copy's tokens after its first (which no model can know).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ramnet_fla.lm.distributed import World


def token_losses(model: torch.nn.Module, windows: torch.Tensor, batch_size: int, device: torch.device,
                 autocast_dtype: torch.dtype | None) -> torch.Tensor:
    """Per-target cross entropy (float32, nats) of windows [N, T + 1] -> [N, T]."""
    out = []
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start:start + batch_size].to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(input_ids=batch[:, :-1]).logits
        out.append(F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten(), reduction='none')
                   .view(batch.shape[0], -1).cpu())
    return torch.cat(out)


def held_out_windows(tokens: np.ndarray, seq_len: int, max_windows: int | None = None) -> torch.Tensor:
    """Non-overlapping windows [N, seq_len + 1] from the start of the held-out tokens."""
    count = (len(tokens) - 1) // seq_len
    if max_windows is not None:
        count = min(count, max_windows)
    return torch.from_numpy(np.stack([np.asarray(tokens[i * seq_len:i * seq_len + seq_len + 1], dtype=np.int64)
                                      for i in range(count)]))


def recall_hits(windows: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(hit [N, T] bool, bigram key [N, T] int64) for the targets x[1..T] of each window: a hit's
    bigram (x[j-1], x[j]) occurred earlier in the same window."""
    keys = windows[:, :-1].astype(np.int64) * vocab_size + windows[:, 1:]
    hit = np.zeros(keys.shape, dtype=bool)
    for row, key in enumerate(keys):
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        hit[row] = first[inverse] != np.arange(len(key))
    return hit, keys


def copy_windows(tokens: np.ndarray, seq_len: int, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(windows [count, seq_len + 1], mask [count, seq_len] over targets in the second copy, its first
    token excluded). Passage lengths are uniform in [64, 128], scaled down for short windows."""
    size = seq_len + 1
    high = min(128, size // 2)
    low = min(64, max(2, high // 2))
    rng = np.random.default_rng(seed)
    windows = np.empty((count, size), dtype=np.int64)
    mask = np.zeros((count, seq_len), dtype=bool)
    for i in range(count):
        length = int(rng.integers(low, high + 1))
        context = size - 2 * length
        start = int(rng.integers(context, len(tokens) - length + 1))
        passage = np.asarray(tokens[start:start + length], dtype=np.int64)
        windows[i] = np.concatenate([np.asarray(tokens[start - context:start], dtype=np.int64), passage, passage])
        second = context + length                       # index of the second copy's first token
        mask[i, second:] = True                         # targets x[second + 1 ..] sit at columns second..
    return torch.from_numpy(windows), torch.from_numpy(mask)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data, seq_len: int, world: World, batch_size: int = 16,
             max_windows: int | None = None, copy_examples: int = 0, rare_threshold: int = 10,
             autocast_dtype: torch.dtype | None = None, seed: int = 0) -> dict:
    """The held-out metrics of `model` (see the module docstring). Every rank runs every window
    (FSDP2 needs all ranks in each forward); the numbers are the same on all ranks."""
    was_training = model.training
    model.eval()
    windows = held_out_windows(data.val, seq_len, max_windows)
    losses = token_losses(model, windows, batch_size, world.device, autocast_dtype).double().numpy()
    targets = windows[:, 1:].numpy()
    nats = float(losses.sum())
    nbytes = float(data.token_bytes[targets].sum())
    mean = nats / losses.size
    result = {'loss': mean, 'ppl': math.exp(min(mean, 700)), 'bits_per_byte': nats / math.log(2) / nbytes,
              'eval_tokens': int(losses.size)}
    if copy_examples:
        hit, keys = recall_hits(windows.numpy(), data.vocab_size)
        rare = hit & (data.bigram_count(keys) < rare_threshold)
        frequent = hit & ~rare

        def mean_of(mask):
            return float(losses[mask].mean()) if mask.any() else float('nan')
        result.update(recall_hit_loss=mean_of(rare), recall_hit_share=float(rare.mean()),
                      frequent_hit_loss=mean_of(frequent), frequent_hit_share=float(frequent.mean()),
                      other_loss=mean_of(~hit))
        copies, mask = copy_windows(data.val, seq_len, copy_examples, seed)
        copy_losses = token_losses(model, copies, batch_size, world.device, autocast_dtype)
        result['copy_loss'] = float(copy_losses[mask].double().mean())
    model.train(was_training)
    return result
