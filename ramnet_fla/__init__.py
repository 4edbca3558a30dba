"""ramnet-fla: RAM-Net (arXiv 2602.11958) as a flash-linear-attention plugin."""

__version__ = '0.1.0'
