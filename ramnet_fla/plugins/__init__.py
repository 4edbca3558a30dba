"""ramnet-fla's built-in mixer plugins, loaded through the entry-point group `ramnet_fla` exactly
like third-party plugins (see `ramnet_fla.plugin.BUILTIN_PLUGINS` and pyproject.toml).

- `ram`: RAM-Net (`ramnet_fla.layers.RAMAttention`).
- `gla`, `deltanet`, `gated_deltanet`: fla's layers, subclassed to also run on the CPU.
- `attention`: causal softmax attention with RoPE and a KV cache, no flash-attn needed.
"""
