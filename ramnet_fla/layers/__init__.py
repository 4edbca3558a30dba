"""fla-style layers of ramnet-fla."""

from ramnet_fla.layers.ram import RAMAttention

__all__ = ['RAMAttention']
