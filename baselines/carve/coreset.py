"""Structured replay for CARvE (paper §4.4): a domain- and model-balanced coreset of each previous
experience, chosen in a fixed embedding space. Random, herding and "representative" selection are the
ablation alternatives to farthest-point sampling."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

METHODS = ("fps", "random", "herding", "representative")


def farthest_point(x: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    """Greedy farthest-point sampling on rows of ``x`` (cosine geometry: rows are L2-normalised)."""
    if n >= len(x):
        return list(range(len(x)))
    first = int(np.argmax(np.linalg.norm(x - x.mean(0), axis=1))) if len(x) > 1 else 0
    chosen = [first]
    dist = 1.0 - x @ x[first]
    for _ in range(n - 1):
        dist[chosen] = -np.inf
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, 1.0 - x @ x[nxt])
    return chosen


def herding(x: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    """iCaRL herding: pick points whose running mean tracks the class mean."""
    if n >= len(x):
        return list(range(len(x)))
    mu = x.mean(0)
    chosen: list[int] = []
    total = np.zeros_like(mu)
    for k in range(1, n + 1):
        gaps = np.linalg.norm(mu - (total + x) / k, axis=1)
        gaps[chosen] = np.inf
        i = int(np.argmin(gaps))
        chosen.append(i)
        total += x[i]
    return chosen


def representative(x: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    """Centre-first, plus 25 % boundary points (farthest from the centre)."""
    if n >= len(x):
        return list(range(len(x)))
    d = np.linalg.norm(x - x.mean(0), axis=1)
    order = np.argsort(d, kind="stable")
    n_edge = n // 4
    picks = list(order[:n - n_edge]) + list(order[::-1][:n_edge])
    return [int(i) for i in dict.fromkeys(picks)][:n]


def random_pick(x: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    return [int(i) for i in rng.choice(len(x), size=min(n, len(x)), replace=False)]


_PICK = {"fps": farthest_point, "random": random_pick, "herding": herding, "representative": representative}


def select_replay(embeddings: np.ndarray, model_ids: list[str], domains: list[str], budget: float,
                  method: str = "fps", floor: int = 5, per_model: int = 3, seed: int = 0) -> list[int]:
    """Indices of the replay coreset of one experience's training set.

    Budget B = ceil(budget * n). Each domain gets a quota proportional to its frequency, at least
    ``floor`` (or all it has); inside a domain at most ``per_model`` prompts per model; prompts are picked
    by ``method`` in the embedding space. Quotas are filled or trimmed to B by the same method globally.
    """
    if method not in METHODS:
        raise ValueError(f"replay selection must be one of {METHODS}")
    n = len(model_ids)
    if n == 0 or budget <= 0:
        return []
    rng = np.random.default_rng(seed)
    pick = _PICK[method]
    x = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    target = min(n, math.ceil(budget * n))
    by_domain: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(domains):
        by_domain[d].append(i)
    chosen: list[int] = []
    for d in sorted(by_domain):
        rows = by_domain[d]
        quota = min(len(rows), max(floor, round(target * len(rows) / n)))
        capped, seen = [], defaultdict(int)
        for i in rows:  # per-model cap, keeping the domain's own order
            if seen[model_ids[i]] < per_model:
                capped.append(i)
                seen[model_ids[i]] += 1
        local = pick(x[capped], min(quota, len(capped)), rng)
        chosen.extend(capped[j] for j in local)
    if len(chosen) > target:  # global trim in the same geometry
        keep = pick(x[chosen], target, rng)
        chosen = [chosen[j] for j in keep]
    elif len(chosen) < target:  # fill from what the caps left out
        rest = [i for i in range(n) if i not in set(chosen)]
        extra = pick(x[rest], target - len(chosen), rng) if rest else []
        chosen.extend(rest[j] for j in extra)
    return sorted(chosen)
