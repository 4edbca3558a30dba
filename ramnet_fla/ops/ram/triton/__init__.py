"""Triton kernels of RAM-Net (CUDA tensors, or any tensor under `RAMNET_FLA_BACKEND=triton`).

- `address.py`: fused per-factor log-softmax and exact beam Top-K, with its backward.
- `chunk.py`: training and prefill, the slot-chain algorithm with Triton chain walks and reads.
- `fused_recurrent.py`: decoding, one program per (sequence, head) updating its K slots in place.
- `utils.py`: the beam search as a device function shared by `address.py` and `fused_recurrent.py`.

The public ops in `ramnet_fla.ops.ram` import these lazily, after checking their arguments.
"""

from ramnet_fla.ops.ram.triton.address import ram_address_triton
from ramnet_fla.ops.ram.triton.chunk import chunk_ram_triton
from ramnet_fla.ops.ram.triton.fused_recurrent import fused_recurrent_ram_triton

__all__ = ['chunk_ram_triton', 'fused_recurrent_ram_triton', 'ram_address_triton']
