"""Math and kernels (no nn.Module)."""

from ramnet_fla.ops.ram import RAMState, chunk_ram, fused_recurrent_ram, naive_recurrent_ram, ram_address

__all__ = ['RAMState', 'chunk_ram', 'fused_recurrent_ram', 'naive_recurrent_ram', 'ram_address']
