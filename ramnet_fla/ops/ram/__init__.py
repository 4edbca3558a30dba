"""RAM-Net: linear attention over a table of M = d_p ** U slots with sparse K-hot addresses."""

from ramnet_fla.ops.ram.address import ram_address
from ramnet_fla.ops.ram.chunk import chunk_ram
from ramnet_fla.ops.ram.fused_recurrent import fused_recurrent_ram
from ramnet_fla.ops.ram.naive import naive_recurrent_ram
from ramnet_fla.ops.ram.state import RAMState

__all__ = ['RAMState', 'chunk_ram', 'fused_recurrent_ram', 'naive_recurrent_ram', 'ram_address']
