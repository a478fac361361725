"""Cumulative training and joint training: the data-hungry references of the continual table.

**cumulative** ("replay 100 %"): at experience t, keep training the current router on the union of
the train sets of experiences 1..t.

**joint** (the upper bound, evaluated with the same protocol): the learner only ever sees
experiences in order, so joint training is realised at the last experience. For t < T the router is
trained exactly as ``cumulative`` (so the rows A[t, .] for t < T are cumulative's); at t = T every
tracked parameter is reset to its initial value (pre-trained backbone, seeded projection, fresh
registry rows: prototypes over every train set, or Xavier draws with ``init=random``) and the router is trained from scratch on the union of all T train
sets for ``joint_epochs`` epochs. The final row A[T, .] (final average accuracy) is therefore that of
a router trained on all four experiences at once; its forgetting compares it with cumulative's
earlier rows and is not meaningful on its own.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from cmrbench.baselines.trainable.plugins import StrategyPlugin, register_plugin
from cmrbench.baselines.trainable.router import TrainableRouter, strategy
from cmrbench.baselines.trainable.training import seeded_generator
from cmrbench.data import Experience


@register_plugin("cumulative")
class CumulativePlugin(StrategyPlugin):
    """Adds every earlier experience's examples to the training set, continuing from the previous weights."""

    def __init__(self, router: TrainableRouter):
        self.seen: dict[int, pl.DataFrame] = {}

    def training_examples(self, router: TrainableRouter, experience: Experience, current: pl.DataFrame,
                          examples: pl.DataFrame) -> pl.DataFrame:
        old = [self.seen[t] for t in sorted(self.seen) if t < experience.current_experience]
        return pl.concat(old + [examples], how="vertical_relaxed") if old else examples

    def after_experience(self, router: TrainableRouter, experience: Experience, current: pl.DataFrame,
                         trained_on: pl.DataFrame | None) -> None:
        self.seen[experience.current_experience] = current

    def state(self) -> dict[str, Any]:
        return {"frames": {f"seen_{t}": f for t, f in self.seen.items()}}

    def load_state(self, router: TrainableRouter, state: dict[str, Any]) -> None:
        self.seen = {int(k.split("_", 1)[1]): f for k, f in state.get("frames", {}).items() if k.startswith("seen_")}


@register_plugin("joint")
class JointPlugin(StrategyPlugin):
    """At the last experience: every tracked parameter back to its initial value, fresh registry rows, then
    ``joint_epochs`` epochs on the training set (with ``cumulative`` before it: every train set)."""

    @staticmethod
    def is_joint_step(experience: Experience) -> bool:
        return experience.current_experience == experience.n_experiences

    def __init__(self, router: TrainableRouter):
        pass

    def before_experience(self, router: TrainableRouter, experience: Experience, current: pl.DataFrame) -> None:
        if not self.is_joint_step(experience):
            return
        net = router.ensure_net()
        state = dict(router.base)
        # fresh rows for every model, as a new router would draw them
        registry = net.registry
        fresh = type(registry)(registry.dim)
        fresh.extend(registry.ids, experience=experience.current_experience,
                     generator=seeded_generator(router.seed, 0, 3))
        state["registry.weight"] = fresh.weight.detach()
        net.load_tracked(state)
        router.initialise_rows(experience, router.training_examples(experience, current), list(range(len(registry))))

    def epochs(self, router: TrainableRouter, experience: Experience) -> int | None:
        return int(router.cfg["joint_epochs"]) if self.is_joint_step(experience) else None


cumulative = strategy("cumulative", "cumulative", "Trains on every train set seen so far at each experience.")
joint = strategy("joint", "joint", "Cumulative until the last experience, then from scratch on all train sets.")
