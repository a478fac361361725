"""Replay buffers: a budget p of each previous experience's training set, kept for later experiences.

The buffer stores, per finished experience, the selected example rows (every column, so strategies
can use domain / family / experience). How rows are chosen is a :class:`Selector`: uniformly at
random here (the paper's random replay); CARvE plugs in its domain-model coreset (farthest-point
sampling in a fixed embedding space, per-domain quotas, at most 3 prompts per model).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import polars as pl


class Selector(Protocol):
    """Choose ``budget`` row positions of ``frame`` (the finished experience's training examples)."""

    def __call__(self, frame: pl.DataFrame, budget: int, rng: np.random.Generator) -> list[int]: ...


class RandomSelector:
    """Uniform sampling without replacement (seeded)."""

    name = "random"

    def __call__(self, frame: pl.DataFrame, budget: int, rng: np.random.Generator) -> list[int]:
        budget = min(budget, frame.height)
        return sorted(rng.choice(frame.height, size=budget, replace=False).tolist()) if budget else []


def replay_budget(n_examples: int, fraction: float) -> int:
    """p x |train set|, rounded, at least one example when the set and p are non-empty."""
    if n_examples == 0 or fraction <= 0:
        return 0
    return max(1, min(n_examples, int(round(fraction * n_examples))))


class ReplayBuffer:
    """Per-experience memory of training examples, filled at the end of each experience."""

    def __init__(self, fraction: float, selector: Selector | None = None, seed: int = 0):
        self.fraction = float(fraction)
        self.selector = selector or RandomSelector()
        self.seed = int(seed)
        self.parts: dict[int, pl.DataFrame] = {}

    def add_experience(self, experience: int, frame: pl.DataFrame) -> pl.DataFrame:
        """Select this experience's share from its training examples ``frame`` and store it."""
        budget = replay_budget(frame.height, self.fraction)
        rng = np.random.default_rng([self.seed, experience, 0x5EED])
        rows = self.selector(frame, budget, rng)
        self.parts[experience] = frame[rows].with_columns(pl.lit(True).alias("replay"))
        return self.parts[experience]

    def frame(self) -> pl.DataFrame | None:
        """Every stored example, experience by experience (None when empty)."""
        parts = [self.parts[t] for t in sorted(self.parts)]
        return pl.concat(parts, how="vertical_relaxed") if parts else None

    def __len__(self) -> int:
        return sum(p.height for p in self.parts.values())

    # checkpoints
    def state_frames(self) -> dict[str, pl.DataFrame]:
        return {f"replay_{t}": f for t, f in self.parts.items()}

    def load_frames(self, frames: dict[str, pl.DataFrame]) -> None:
        self.parts = {int(k.split("_", 1)[1]): f for k, f in frames.items() if k.startswith("replay_")}
