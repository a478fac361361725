"""CARvE's fixed-size candidate sets: positive + hard + semantic + far negatives (paper §4.3).

Training scores each example against K candidates instead of every registered model, so the cost per
example is O(K d) whatever the registry size. Candidates are registry indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CandidateConfig:
    k: int = 64
    hard: int = 15
    semantic: int = 38
    far: int = 10
    max_related_domains: int = 8
    semantic_pool: str = "domain"        # domain: gold domain, then related ones | category: the whole category


@dataclass
class ModelIndex:
    """Registry rows grouped for sampling: by domain, and domains grouped by category.

    ``pool``: the rows candidates may be drawn from (default: every row), e.g. the models of the current
    experience only, so that an example is never contrasted with a model outside its scope.
    """

    domain_of: list[str]                 # registry row -> its (first) domain
    category_of: dict[str, str]          # domain -> category
    pool: Sequence[int] | None = None

    def __post_init__(self) -> None:
        self.rows = np.arange(len(self.domain_of)) if self.pool is None else np.asarray(sorted(self.pool), dtype=int)
        self.members = set(self.rows.tolist())
        self.by_domain: dict[str, np.ndarray] = {}
        for row in self.rows.tolist():
            self.by_domain.setdefault(self.domain_of[row], []).append(row)
        self.by_domain = {d: np.asarray(rows) for d, rows in self.by_domain.items()}
        self.related: dict[str, list[str]] = {}
        for d in sorted(self.by_domain):
            cat = self.category_of.get(d)
            self.related[d] = [o for o in sorted(self.by_domain) if o != d and self.category_of.get(o) == cat]
        self.by_category: dict[str | None, np.ndarray] = {}
        for d in sorted(self.by_domain):
            cat = self.category_of.get(d)
            self.by_category[cat] = np.concatenate([self.by_category.get(cat, np.zeros(0, dtype=int)),
                                                    self.by_domain[d]])

    @property
    def size(self) -> int:
        """How many rows candidates are drawn from."""
        return len(self.rows)


def _take(pool: np.ndarray, n: int, taken: set[int], rng: np.random.Generator) -> list[int]:
    free = [int(x) for x in pool if int(x) not in taken]
    if not free or n <= 0:
        return []
    picks = rng.choice(len(free), size=min(n, len(free)), replace=False)
    return [free[i] for i in picks]


def build_candidates(gold: int, domain: str, index: ModelIndex, config: CandidateConfig,
                     rng: np.random.Generator, hard_pool: list[int] | None = None) -> np.ndarray:
    """Candidate registry rows for one example; the positive is at position 0, no duplicates, every negative
    in ``index``'s pool.

    Hard negatives come from ``hard_pool`` (the mined confusers of this (domain, gold)). Then, with
    ``semantic_pool="domain"``: semantic ones from the gold domain, then from up to ``max_related_domains``
    domains of the same category, far ones from other domains. With ``semantic_pool="category"`` (the
    authors' code): semantic ones uniformly from the gold domain's whole category, far ones (plus the
    semantic shortfall) uniformly from every model outside the gold domain. Any shortfall is filled
    uniformly from the rest of the registry.
    """
    k = min(config.k, index.size)
    chosen = [gold]
    taken = {gold}

    def add(rows: list[int]) -> None:
        for r in rows:
            if r not in taken and len(chosen) < k:
                chosen.append(r)
                taken.add(r)

    add(_take(np.asarray([r for r in hard_pool or [] if r in index.members], dtype=int), config.hard, taken, rng))
    if config.semantic_pool == "category":
        before = len(chosen)
        add(_take(index.by_category.get(index.category_of.get(domain), np.zeros(0, dtype=int)), config.semantic,
                  taken, rng))
        shortfall = config.semantic - (len(chosen) - before)
        outside = np.asarray([r for d, rows in index.by_domain.items() if d != domain for r in rows], dtype=int)
        add(_take(outside, config.far + shortfall, taken, rng))
        add(_take(index.rows, k - len(chosen), taken, rng))
        return np.asarray(chosen, dtype=np.int64)
    if config.semantic_pool != "domain":
        raise ValueError(f"semantic_pool must be 'domain' or 'category', not {config.semantic_pool!r}")
    same = index.by_domain.get(domain, np.zeros(0, dtype=int))
    add(_take(same, config.semantic, taken, rng))
    want = 1 + config.hard + config.semantic
    for related in index.related.get(domain, [])[:config.max_related_domains]:
        if len(chosen) >= min(want, k):
            break
        add(_take(index.by_domain[related], min(want, k) - len(chosen), taken, rng))
    near = set(index.related.get(domain, [])[:config.max_related_domains]) | {domain}
    far_rows = np.asarray([r for d, rows in index.by_domain.items() if d not in near for r in rows], dtype=int)
    add(_take(far_rows, config.far + max(0, want - len(chosen)), taken, rng))
    add(_take(index.rows, k - len(chosen), taken, rng))  # shortfalls
    return np.asarray(chosen, dtype=np.int64)


def soft_targets(candidates: np.ndarray, gold_domain: str, index: ModelIndex, family_of: list[str],
                 gold_family: str, epsilon: float = 0.02, max_neighbours: int = 10) -> np.ndarray:
    """Target distribution over a candidate set: 1 - epsilon on the positive (position 0) and epsilon
    spread over up to ``max_neighbours`` taxonomy neighbours in the set (same domain first, then same
    family). Without neighbours the target is one-hot."""
    target = np.zeros(len(candidates), dtype=np.float32)
    same_domain = [i for i, r in enumerate(candidates[1:], start=1) if index.domain_of[r] == gold_domain]
    same_family = [i for i, r in enumerate(candidates[1:], start=1)
                   if family_of[r] == gold_family and i not in same_domain]
    neighbours = (same_domain + same_family)[:max_neighbours]
    if not neighbours or epsilon <= 0:
        target[0] = 1.0
        return target
    target[0] = 1.0 - epsilon
    target[neighbours] = epsilon / len(neighbours)
    return target


class HardNegativeCache:
    """The ``top`` highest-scoring wrong models per (domain, gold model), re-mined every ``every`` steps
    without gradients from the router's current scores."""

    def __init__(self, top: int = 50, every: int = 100):
        self.top, self.every = top, every
        self.pools: dict[tuple[str, int], list[int]] = {}
        self.mined_at: int | None = None

    def due(self, step: int) -> bool:
        return self.mined_at is None or step - self.mined_at >= self.every

    def mine(self, step: int, keys: list[tuple[str, int]], scores: np.ndarray) -> None:
        """``scores[i]`` are the router's scores of example i (key ``keys[i]``) over all registry rows."""
        for (domain, gold), row in zip(keys, scores):
            row = row.copy()
            row[gold] = -np.inf
            top = np.argpartition(-row, min(self.top, len(row) - 1))[:self.top]
            self.pools[(domain, gold)] = [int(i) for i in top[np.argsort(-row[top])] if np.isfinite(row[i])]
        self.mined_at = step

    def get(self, domain: str, gold: int) -> list[int]:
        return self.pools.get((domain, gold), [])
