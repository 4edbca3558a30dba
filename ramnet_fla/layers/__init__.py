"""fla-style layers of ramnet-fla: RAM-Net's `RAMAttention` and a PyTorch `SoftmaxAttention`.

fla's own layers with a CPU path live in `ramnet_fla.fla_cpu.layers`.
"""

from ramnet_fla.layers.attention import SoftmaxAttention
from ramnet_fla.layers.ram import RAMAttention

__all__ = ['RAMAttention', 'SoftmaxAttention']
