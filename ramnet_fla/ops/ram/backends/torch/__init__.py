"""The PyTorch backend of RAM-Net (any device).

- `address.py`: per-factor log-softmax and the exact beam Top-K, with a hand-written backward;
- `chunk.py`: training and prefill, write events scanned as one chain per slot;
- `scan.py`: the depth-major scans of those chains;
- `fused_recurrent.py`: decoding, the touched rows of the state updated in place.
"""

from ramnet_fla.ops.ram.backends.torch.address import address_topk
from ramnet_fla.ops.ram.backends.torch.chunk import chunk_read_write
from ramnet_fla.ops.ram.backends.torch.fused_recurrent import fused_recurrent_inplace

__all__ = ['address_topk', 'chunk_read_write', 'fused_recurrent_inplace']
