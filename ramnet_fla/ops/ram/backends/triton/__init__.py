"""The Triton backend of RAM-Net (CUDA tensors, or any tensor under `RAMNET_FLA_BACKEND=triton`).

- `address.py`: fused per-factor log-softmax and exact beam Top-K, with its backward;
- `chunk.py`: training and prefill, the slot segments walked by Triton programs;
- `fused_recurrent.py`: decoding, one program per (sequence, head) updating its K slots in place;
- `utils.py`: device functions (the beam search, PDMA) shared by the kernels;
- `library.py`: the three registered as `torch.library` custom ops (opaque to torch.compile), which
  the host functions below call while compiling (eagerly: the autograd Functions directly).
"""

from ramnet_fla.ops.ram.backends.triton.library import address_topk, chunk_read_write, fused_recurrent_inplace

__all__ = ['address_topk', 'chunk_read_write', 'fused_recurrent_inplace']
