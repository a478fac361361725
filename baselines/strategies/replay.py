"""Random replay: keep a budget p of each previous experience's training set and mix it into training.

``replay-10`` / ``replay-20``: p = 0.1 / 0.2 of each previous experience's train set, drawn uniformly
at the end of that experience (seeded), mixed uniformly into the batches of every later experience.
The buffer (:class:`~cmrbench.baselines.trainable.buffer.ReplayBuffer`) takes any selector, which is
how CARvE's structured replay plugs in (a subclass of :class:`ReplayPlugin`).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from cmrbench.baselines.trainable.plugins import StrategyPlugin, register_plugin
from cmrbench.baselines.trainable.buffer import RandomSelector, ReplayBuffer, Selector
from cmrbench.baselines.trainable.router import TrainableRouter, strategy
from cmrbench.data import Experience


@register_plugin("replay")
class ReplayPlugin(StrategyPlugin):
    """A replay buffer of ``replay_fraction`` of every previous train set, weighted ``replay_weight``."""

    def __init__(self, router: TrainableRouter):
        self.weight = float(router.cfg["replay_weight"])
        self.buffer = ReplayBuffer(router.cfg["replay_fraction"], self.make_selector(router), seed=router.seed)

    def make_selector(self, router: TrainableRouter) -> Selector:
        return RandomSelector()

    def training_examples(self, router: TrainableRouter, experience: Experience, current: pl.DataFrame,
                          examples: pl.DataFrame) -> pl.DataFrame:
        stored = self.buffer.frame()
        if stored is None:
            return examples
        return pl.concat([examples, stored.with_columns(pl.lit(self.weight, dtype=pl.Float32).alias("weight"))],
                         how="vertical_relaxed")

    def after_experience(self, router: TrainableRouter, experience: Experience, current: pl.DataFrame,
                         trained_on: pl.DataFrame | None) -> None:
        # the budget is a share of the experience's training prompts; card examples are not prompts
        self.buffer.add_experience(experience.current_experience, current.filter(~pl.col("card")))

    def state(self) -> dict[str, Any]:
        return {"frames": self.buffer.state_frames()}

    def load_state(self, router: TrainableRouter, state: dict[str, Any]) -> None:
        self.buffer.load_frames(state.get("frames", {}))


replay_10 = strategy("replay", "replay-10", "Random replay, 10 % of each previous experience's train set.",
                     replay_fraction=0.1)
replay_20 = strategy("replay", "replay-20", "Random replay, 20 % of each previous experience's train set.",
                     replay_fraction=0.2)
