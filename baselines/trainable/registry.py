"""The append-only model registry: one learned d-vector per model id.

Ids get consecutive row indices in the order they are first registered and are never re-indexed:
rows of models seen earlier keep their index (and their values) when new models arrive, so a
checkpoint, a Fisher matrix, an anchor snapshot or a replay buffer that stores row indices stays
valid. New rows are Xavier-uniform initialised from a seeded generator, with the bound of a table of
the registry's new size (as if the whole table were initialised and the old rows copied back).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from torch import nn
import torch.nn.functional as F


class ModelRegistry(nn.Module):
    """Model ids -> rows of ``weight`` (num_models, dim), plus per-model metadata."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = int(dim)
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.first_experience: list[int] = []
        self.weight = nn.Parameter(torch.empty(0, self.dim))

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self.index

    def extend(self, model_ids: Iterable[str], *, experience: int, generator: torch.Generator) -> list[int]:
        """Register the ids not seen yet (in the given order); return their new row indices."""
        new = [m for m in dict.fromkeys(model_ids) if m not in self.index]
        if not new:
            return []
        total = len(self.ids) + len(new)
        bound = math.sqrt(6.0 / (total + self.dim))
        rows = (torch.rand(len(new), self.dim, generator=generator, dtype=torch.float32) * 2 - 1) * bound
        start = len(self.ids)
        for offset, model_id in enumerate(new):
            self.index[model_id] = start + offset
            self.ids.append(model_id)
            self.first_experience.append(int(experience))
        old = self.weight.detach()
        self.weight = nn.Parameter(torch.cat([old, rows.to(old.device, old.dtype)]),
                                   requires_grad=self.weight.requires_grad)
        return list(range(start, total))

    def rows(self, model_ids: Sequence[str]) -> torch.Tensor:
        return torch.tensor([self.index[m] for m in model_ids], dtype=torch.long, device=self.weight.device)

    def normalized(self) -> torch.Tensor:
        return F.normalize(self.weight, dim=-1)

    def resize_to(self, ids: Sequence[str], first_experience: Sequence[int]) -> None:
        """Take the id list of a checkpoint (values come with the state dict afterwards)."""
        self.ids = list(ids)
        self.index = {m: i for i, m in enumerate(self.ids)}
        self.first_experience = [int(x) for x in first_experience]
        self.weight = nn.Parameter(torch.zeros(len(self.ids), self.dim, device=self.weight.device,
                                               dtype=self.weight.dtype), requires_grad=self.weight.requires_grad)

    def state(self) -> dict:
        return {"dim": self.dim, "ids": list(self.ids), "first_experience": list(self.first_experience)}
