"""Reference routers that bracket every result: random, most-frequent, oracle and domain-oracle.

random and most-frequent are ordinary routers. oracle and domain-oracle need the answer key: they are
the only routers the evaluator hands test labels to (through ``route_with_gold``), and their meta says
``reference_row=True`` so no leaderboard mistakes them for real routers.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import polars as pl

from cmrbench.data import Experience
from cmrbench.protocol import Ranking, RouterMeta


class _SeenModels:
    """Keeps the models seen so far and their domains, from the learner's view only."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self.rng = np.random.default_rng(seed)
        self.models: list[str] = []
        self.by_domain: dict[str, list[str]] = {}

    def learn(self, experience: Experience) -> None:
        # one generator per experience: the draws after learning E_t depend on (seed, t) alone, so a run resumed
        # after E_t (which re-learns but does not re-route the finished experiences) draws what an unbroken run does
        self.rng = np.random.default_rng([self.seed, experience.current_experience])
        self.models = list(experience.classes_seen_so_far)
        self.by_domain = {}
        for model_id, domains in experience.models.select("model_id", "domains").rows():
            for d in domains:
                self.by_domain.setdefault(d, []).append(model_id)

    def sample(self, pool: Sequence[str], top_k: int) -> Ranking:
        picks = self.rng.choice(len(pool), size=min(top_k, len(pool)), replace=False)
        return [(pool[i], float(top_k - r)) for r, i in enumerate(picks)]


class RandomRouter(_SeenModels):
    """Uniformly random ranking of the models seen so far (seeded)."""

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.meta = RouterMeta(name="random", version="1", zero_shot=True, reference_row=True,
                               description="uniformly random ranking over the models seen so far",
                               parameters={"seed": seed})

    def route(self, prompts: Sequence[str], top_k: int) -> list[Ranking]:
        return [self.sample(self.models, top_k) for _ in prompts]


class MostFrequentRouter:
    """Always the most frequent training labels seen so far (counts accumulate over experiences)."""

    def __init__(self, seed: int = 0):
        self.counts: Counter[str] = Counter()
        self.meta = RouterMeta(name="most-frequent", version="1", zero_shot=False, reference_row=True,
                               description="the most frequent training models so far, for every prompt")

    def learn(self, experience: Experience) -> None:
        self.counts.update(experience.train["model_id"].to_list())

    def route(self, prompts: Sequence[str], top_k: int) -> list[Ranking]:
        top = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
        return [[(m, float(n)) for m, n in top] for _ in prompts]


class OracleRouter(_SeenModels):
    """The gold model first, then random seen models: the upper bound."""

    needs_gold = True

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.meta = RouterMeta(name="oracle", version="1", zero_shot=True, reference_row=True,
                               description="gold model at rank 1 (reads the answer key)")

    def route(self, prompts: Sequence[str], top_k: int) -> list[Ranking]:
        raise RuntimeError("the oracle needs the answer key; the evaluator calls route_with_gold")

    def route_with_gold(self, prompts: Sequence[str], top_k: int, gold: pl.DataFrame) -> list[Ranking]:
        out = []
        for model_id in gold["model_id"]:
            rest = [m for m in self.sample(self.models, top_k + 1) if m[0] != model_id][:top_k - 1]
            out.append([(model_id, float(top_k + 1))] + rest)
        return out


class DomainOracleRouter(_SeenModels):
    """Right domain, random model inside it: what knowing the domain alone is worth."""

    needs_gold = True

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.meta = RouterMeta(name="domain-oracle", version="1", zero_shot=True, reference_row=True,
                               description="random seen models of the gold domain (reads the answer key)",
                               parameters={"seed": seed})

    def route(self, prompts: Sequence[str], top_k: int) -> list[Ranking]:
        raise RuntimeError("the domain oracle needs the answer key; the evaluator calls route_with_gold")

    def route_with_gold(self, prompts: Sequence[str], top_k: int, gold: pl.DataFrame) -> list[Ranking]:
        return [self.sample(self.by_domain.get(d) or self.models, top_k) for d in gold["domain"]]
