"""Options that torch.compile cannot trace here, reported by name instead of a silent fallback.

`reject_under_compile(option)` is called from traced code (where `torch.compiler.is_compiling()`)
when such an option is used. It is a `torch.compiler.disable`d function that raises, so either
`fullgraph=True` fails at trace time on a call whose reason names the option, or, without
`fullgraph`, the compiled code raises the ValueError when it runs: never an eager fallback.
"""

from __future__ import annotations

import torch

UNSUPPORTED = {
    'cu_seqlens': "packed sequences (`cu_seqlens`) are checked and laid out on the host, with shapes that depend "
                  "on the offsets; run the packed call eagerly (e.g. wrap it in torch.compiler.disable) or "
                  "compile batches of equal-length sequences",
    'attention_mask': "a padding mask is removed by unpadding, with shapes that depend on the mask; compile "
                      "unpadded batches (attention_mask=None) or run padded ones eagerly",
}


def _raiser(option: str):
    message = f"`{option}` is not supported under torch.compile: {UNSUPPORTED[option]}"

    def reject() -> None:
        raise ValueError(message)

    return torch.compiler.disable(reject, reason=message)


_REJECT = {option: _raiser(option) for option in UNSUPPORTED}


def reject_under_compile(option: str) -> None:
    """Raise (see the module docstring) that `option` cannot be compiled. Call only while compiling."""
    _REJECT[option]()
