"""The PyTorch backend of RAM-Net (any device).

- `address.py`: per-factor log-softmax and the exact beam Top-K, with a hand-written backward;
- `chunk.py`: training and prefill, write events scanned as one chain per slot;
- `scan.py`: the depth-major scans of those chains;
- `fused_recurrent.py`: decoding, the touched rows of the state updated in place;
- `library.py`: the three registered as `torch.library` custom ops (opaque to torch.compile), which
  the host functions below call while compiling (eagerly: the autograd Functions directly).
"""

from ramnet_fla.ops.ram.backends.torch.library import address_topk, chunk_read_write, fused_recurrent_inplace

__all__ = ['address_topk', 'chunk_read_write', 'fused_recurrent_inplace']
