"""The implementations behind the public RAM-Net ops: `torch/` (any device) and `triton/` (CUDA,
or any device under TRITON_INTERPRET=1).

Both backend packages export the same host functions, each around one autograd Function or kernel:
- `address_topk(logits [R, U*d_p], num_factors, topk)` -> (index [R, K] int64, log_prob [R, K]);
- `chunk_read_write(read_weight, write_weight, v, gamma, memory0, mass0, read_slot, write_slot,
  sequence_ids, num_sequences, num_slots, output_final_state)` -> (o, memory, mass);
- `fused_recurrent_inplace(q, k, v, gamma, call, state)` -> o, advancing `state` (not its position;
  `state` comes from `RAMCall.writable_state`).

Nothing here imports the public ops: data flows op -> backend only.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from ramnet_fla.utils.backend import select_backend

if TYPE_CHECKING:
    from torch import Tensor


def backend_for(x: Tensor) -> ModuleType:
    """The backend package for an op whose inputs live where `x` lives (see `select_backend`)."""
    # no module-level `import torch` here: the subpackage `backends.torch` would shadow it
    if select_backend(x) == 'triton':
        from ramnet_fla.ops.ram.backends import triton as backend
    else:
        from ramnet_fla.ops.ram.backends import torch as backend
    return backend
