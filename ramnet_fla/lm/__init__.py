"""Language modelling on real text with any `RAMNetConfig`: data, tokenizer, training (one process,
DDP or FSDP2 under torchrun), checkpoints, evaluation (bits per byte, in-context recall, copy).

One job per module: `corpus` (where the text comes from), `tokenizer`, `data` (token cache and
batches), `model` (mixer specs, equal parameter counts), `optim`, `distributed`, `checkpoint`,
`evaluate`, `metrics`, `hooks` (diagnostics), `config` (TrainConfig), `train` (the loop), `jobs`
(--quick and --sweep), `cli` (the command). Imports stay lazy: `import ramnet_fla.lm` is cheap.
"""
