"""Random replay: keep a budget p of each previous experience's training set and mix it into training.

``replay-10`` / ``replay-20``: p = 0.1 / 0.2 of each previous experience's train set, drawn uniformly
at the end of that experience (seeded), mixed uniformly into the batches of every later experience.
The buffer (:class:`~cmrbench.baselines.trainable.replay.ReplayBuffer`) takes any selector, which is
how CARvE's structured replay plugs in.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from cmrbench.baselines.trainable.replay import RandomSelector, ReplayBuffer, Selector
from cmrbench.baselines.trainable.router import TrainableRouter
from cmrbench.data import Experience


class ReplayRouter(TrainableRouter):
    """Sequential fine-tuning plus a replay buffer of ``replay_fraction`` of every previous train set."""

    config_name = "replay"
    description = "embedding router with random replay of a fixed share of each previous experience"

    def __init__(self, seed: int = 0, config: str | None = None, name: str | None = None, **overrides: Any):
        super().__init__(seed=seed, config=config, name=name, **overrides)
        self.buffer = ReplayBuffer(self.cfg["replay_fraction"], self.make_selector(), seed=self.seed)

    def make_selector(self) -> Selector:
        return RandomSelector()

    def training_examples(self, experience: Experience, current: pl.DataFrame) -> pl.DataFrame:
        stored = self.buffer.frame()
        if stored is None:
            return current
        return pl.concat([current, stored.with_columns(pl.lit(float(self.cfg["replay_weight"]),
                                                              dtype=pl.Float32).alias("weight"))],
                         how="vertical_relaxed")

    def end_experience(self, experience: Experience, current: pl.DataFrame, trained_on: pl.DataFrame) -> None:
        # the budget is a share of the experience's training prompts; card examples are not prompts
        self.buffer.add_experience(experience.current_experience, current.filter(~pl.col("card")))

    def extra_state(self) -> dict[str, Any]:
        return {"frames": self.buffer.state_frames()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.buffer.load_frames(state.get("frames", {}))


def with_budget(router_class: type[ReplayRouter], fraction: float, name: str, doc: str):
    """A registered factory: ``router_class`` with a fixed replay budget and name (both overridable)."""
    def factory(seed: int = 0, **overrides: Any) -> ReplayRouter:
        overrides.setdefault("replay_fraction", fraction)
        overrides.setdefault("name", name)
        return router_class(seed=seed, **overrides)
    factory.__name__ = factory.__qualname__ = name.replace("-", "_")
    factory.__doc__ = doc
    return factory


replay_10 = with_budget(ReplayRouter, 0.1, "replay-10", "Random replay, 10 % of each previous experience's train set.")
replay_20 = with_budget(ReplayRouter, 0.2, "replay-20", "Random replay, 20 % of each previous experience's train set.")
