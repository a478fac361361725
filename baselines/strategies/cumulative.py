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

from cmrbench.baselines.trainable.router import TrainableRouter
from cmrbench.baselines.trainable.training import seeded_generator
from cmrbench.data import Experience


class CumulativeRouter(TrainableRouter):
    """Trains on every train set seen so far at each experience, continuing from the previous weights."""

    config_name = "cumulative"
    description = "embedding router trained at each experience on the union of all train sets seen so far"

    def __init__(self, seed: int = 0, config: str | None = None, name: str | None = None, **overrides: Any):
        super().__init__(seed=seed, config=config, name=name, **overrides)
        self.seen: dict[int, pl.DataFrame] = {}

    def training_examples(self, experience: Experience, current: pl.DataFrame) -> pl.DataFrame:
        old = [self.seen[t] for t in sorted(self.seen) if t < experience.current_experience]
        return pl.concat(old + [current], how="vertical_relaxed") if old else current

    def end_experience(self, experience: Experience, current: pl.DataFrame, trained_on: pl.DataFrame) -> None:
        self.seen[experience.current_experience] = current

    def extra_state(self) -> dict[str, Any]:
        return {"frames": {f"seen_{t}": f for t, f in self.seen.items()}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.seen = {int(k.split("_", 1)[1]): f for k, f in state.get("frames", {}).items() if k.startswith("seen_")}


class JointRouter(CumulativeRouter):
    """Cumulative until the last experience, then trained from scratch on all train sets at once."""

    config_name = "joint"
    description = ("joint training upper bound: from scratch on the union of all train sets at the last "
                   "experience (cumulative before it)")

    def is_joint_step(self, experience: Experience) -> bool:
        return experience.current_experience == experience.n_experiences

    def begin_experience(self, experience: Experience, current: pl.DataFrame) -> None:
        if not self.is_joint_step(experience):
            return
        net = self.ensure_net()
        state = dict(self.base)
        # fresh rows for every model, as a new router would draw them
        registry = net.registry
        fresh = type(registry)(registry.dim)
        fresh.extend(registry.ids, experience=experience.current_experience,
                     generator=seeded_generator(self.seed, 0, 3))
        state["registry.weight"] = fresh.weight.detach()
        net.load_tracked(state)
        self.initialise_rows(experience, self.training_examples(experience, current), list(range(len(registry))))

    def epochs(self, experience: Experience) -> int:
        return int(self.cfg["joint_epochs"] if self.is_joint_step(experience) else self.cfg["epochs"])
