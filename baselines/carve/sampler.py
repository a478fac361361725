"""Domain-aware batches (paper §4.3): each batch draws from a couple of domains, so the in-batch and
candidate-set negatives are confusable models; replay examples are mixed into the stream."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def domain_batches(domains: list[str], batch_size: int, rng: np.random.Generator,
                   domains_per_batch: int = 2) -> list[list[int]]:
    """One epoch of index batches over ``domains`` (one entry per example, current and replay alike).

    Examples are shuffled inside their domain; each batch takes its examples from ``domains_per_batch``
    domains chosen at random among those with examples left, until every example is used once.
    """
    queues: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(domains):
        queues[d].append(i)
    for d in queues:
        queues[d] = [queues[d][j] for j in rng.permutation(len(queues[d]))]
    batches: list[list[int]] = []
    while queues:
        names = sorted(queues)
        picked = [names[j] for j in rng.choice(len(names), size=min(domains_per_batch, len(names)), replace=False)]
        batch: list[int] = []
        share = max(1, batch_size // len(picked))
        for d in picked:
            take, queues[d] = queues[d][:share], queues[d][share:]
            batch.extend(take)
            if not queues[d]:
                del queues[d]
        while len(batch) < batch_size and queues:  # top up from any domain left
            d = sorted(queues)[int(rng.integers(len(queues)))]
            need = batch_size - len(batch)
            take, queues[d] = queues[d][:need], queues[d][need:]
            batch.extend(take)
            if not queues[d]:
                del queues[d]
        batches.append(batch)
    return [batches[j] for j in rng.permutation(len(batches))]
