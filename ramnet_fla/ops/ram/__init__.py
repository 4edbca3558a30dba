"""RAM-Net: linear attention over a table of M = d_p ** U slots with sparse K-hot addresses.

Layout, as in fla's op folders: `naive.py` (the readable reference), `address.py`, `chunk.py` and
`fused_recurrent.py` (thin public ops: check, shared prologue in `common.py`, backend, state),
`state.py` (RAMState), `sparse_state.py` and `tiered_state.py` (SparseRAMState, TieredRAMState: states
for large M at inference, their key -> row indexes in `slot_index.py`) with the ops over them in
`slot_store.py`, `checks.py` and `cape.py` (argument checks, CAPE), and `backends/torch/` and `backends/triton/` with the implementations.
"""

from ramnet_fla.ops.ram.address import ram_address
from ramnet_fla.ops.ram.chunk import chunk_ram
from ramnet_fla.ops.ram.fused_recurrent import fused_recurrent_ram
from ramnet_fla.ops.ram.naive import naive_recurrent_ram
from ramnet_fla.ops.ram.sparse_state import SparseRAMState
from ramnet_fla.ops.ram.state import RAMState
from ramnet_fla.ops.ram.tiered_state import TieredRAMState

__all__ = ['RAMState', 'SparseRAMState', 'TieredRAMState', 'chunk_ram', 'fused_recurrent_ram', 'naive_recurrent_ram',
           'ram_address']
