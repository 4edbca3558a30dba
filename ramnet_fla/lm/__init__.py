"""Language modelling on real text with any `RAMNetConfig`: data, tokenizer, training (one process,
DDP or FSDP2 under torchrun), checkpoints, evaluation (bits per byte, in-context recall, copy).

One job per module: `corpus` (where the text comes from), `tokenizer`, `data` (token cache and
batches), `model` (mixer specs, equal parameter counts), `optim`, `distributed`, `checkpoint`,
`evaluate`, `metrics`, `hooks` (the training loop's hook protocol), `diagnostics` (the hooks
`--diagnostics` names: grad_norms, ram_slots), `config` (TrainConfig), `train` (the loop), `jobs`
(--quick and --sweep), `ablations` (--ablations); the command is `ramnet_fla.cli.lm`. Imports stay
lazy: `import ramnet_fla.lm` is cheap.
"""
