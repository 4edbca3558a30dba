"""The recurrent state of RAM-Net: a slot table per sequence and head."""

from __future__ import annotations

from typing import NamedTuple

import torch


class RAMState(NamedTuple):
    """State of the RAM-Net op for N sequences and H heads (M = d_p ** U slots).

    memory:   [N, H, M, V] float32, the value stored in each slot (S in the paper).
    mass:     [N, H, M]    float32, the accumulated write weight of each slot (z).
    position: [N]          int64, tokens consumed so far per sequence (drives CAPE).
    """

    memory: torch.Tensor
    mass: torch.Tensor
    position: torch.Tensor

    @classmethod
    def zeros(
        cls,
        num_sequences: int,
        num_heads: int,
        num_slots: int,
        value_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> RAMState:
        """An empty memory: every slot holds zero value and zero mass, position 0."""
        return cls(
            memory=torch.zeros(num_sequences, num_heads, num_slots, value_dim, device=device, dtype=dtype),
            mass=torch.zeros(num_sequences, num_heads, num_slots, device=device, dtype=dtype),
            position=torch.zeros(num_sequences, device=device, dtype=torch.long),
        )

    def clone(self) -> RAMState:
        """A copy that shares no storage with this state."""
        return RAMState(self.memory.clone(), self.mass.clone(), self.position.clone())

    def index_select(self, index: torch.Tensor) -> RAMState:
        """The states of the sequences in `index` (e.g. for beam search reordering)."""
        return RAMState(self.memory[index], self.mass[index], self.position[index])

