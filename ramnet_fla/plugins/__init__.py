"""ramnet-fla's built-in mixer plugins: registrations only, loaded like third-party plugins.

Each module imports its layer and registers it with its state accounting (`ramnet_fla.accounting`):
- `ram`: RAM-Net (`ramnet_fla.layers.RAMAttention`).
- `gla`, `deltanet`, `gated_deltanet`: fla's layers with a CPU path (`ramnet_fla.fla_cpu.layers`).
- `attention`: causal softmax attention with RoPE and a KV cache (`ramnet_fla.layers.SoftmaxAttention`).
"""
