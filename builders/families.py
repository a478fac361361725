"""Model-family labels, as the paper defines them (§3.3).

A family groups functionally similar variants of one model: the sizes of one checkpoint, its
fine-tunes on related data sets, its successive versions. The paper computes it in three steps:

1. :func:`normalise_name` strips what only tells variants apart: the owner prefix, standalone
   version tokens (``v2``, ``v1.1``), parameter counts (``7b``, ``1.5b``, ``8x7b``) and size words
   (tiny/mini/small/base/medium/large/xl/xxl/xxxl).
2. :func:`root_token` buckets normalised names by their first token, with a few aliases
   (``distilbert`` → ``bert``, ``xlm`` → ``xlm-roberta``).
3. :func:`cluster_names` clusters each bucket agglomeratively (average linkage, cosine distance of
   character 3–5-gram TF-IDF vectors fitted on the bucket, distance threshold 0.7); a cluster's
   family is its most frequent normalised name.

:func:`assign_families` does this cumulatively over the experiences of a stream, and gives models
seen only at test time the family of their nearest train name. :func:`family_agreement` compares
two labellings (ours against the released ``model_family`` column, say).

Where the paper's text leaves a detail open, the released ``model_family`` labels decide
(``tests/test_families.py`` checks them against the data mirror):

* parameter counts are billions only (``7b``, ``1.5b``, ``7b1``, ``8x7b``): millions stay
  (``opt-350m``, ``bloom-560m``, ``mert-330m`` are released family names);
* a version token has at most one dot (``v2.4.1`` stays), and ``v1_1`` reads as ``v1`` then ``1``;
* any run of characters other than letters, digits and dots separates tokens, not only ``_``
  (``WhisperModel('large-v2')`` → ``whispermodel``);
* the distinct normalised names are clustered (a name shared by several models counts once in the
  linkage) and the per-model counts only choose the family name. With this, the released partitions
  are reproduced exactly; the released names differ only where the top count is tied, which the
  release breaks in an order that the data do not record (here: shortest, then alphabetical);
* the released labels of experience t cluster the train models of experiences t-1 and t only,
  whereas the paper says "cumulatively": :func:`assign_families` follows the paper by default and
  reproduces the release with ``history=1``.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

__all__ = [
    "ROOT_ALIASES",
    "SIZE_WORDS",
    "DISTANCE_THRESHOLD",
    "normalise_name",
    "root_token",
    "cluster_names",
    "assign_families",
    "family_agreement",
]

#: Root-token aliases: buckets that the paper merges (first token → bucket key).
ROOT_ALIASES: dict[str, str] = {
    "distilbert": "bert",
    "xlm": "xlm-roberta",
}

#: Size words dropped when they stand alone as a token.
SIZE_WORDS: frozenset[str] = frozenset(
    {"tiny", "mini", "small", "base", "medium", "large", "xl", "xxl", "xxxl"})

#: Average-linkage cosine-distance threshold of the clustering.
DISTANCE_THRESHOLD = 0.7

# A standalone version token: v2, v1.1, v0.2.
_VERSION = re.compile(r"v\d+(?:\.\d+)?")
# A standalone parameter count in billions: 7b, 1.5b, 8x7b, 7b1 (bloom-7b1); not millions (above).
_PARAM_COUNT = re.compile(r"(?:\d+x)?\d+(?:\.\d+)?b\d*")
# Separators: anything but letters, digits and dots ("_", spaces, brackets, "=", ...).
_SEPARATORS = re.compile(r"[^a-z0-9.]+")


def _droppable(token: str) -> bool:
    return (token in SIZE_WORDS or _VERSION.fullmatch(token) is not None
            or _PARAM_COUNT.fullmatch(token) is not None)


def normalise_name(model_id: str) -> str:
    """The normalised name of an HF repo id, e.g. ``google/tapas-base-finetuned-wtq`` →
    ``tapas-finetuned-wtq``; ``meta-llama/Llama-2-7b-hf`` → ``llama-2-hf``.

    Lowercases, drops the owner (everything up to the last ``/``; a trailing ``/`` is ignored),
    splits into tokens at ``_``, ``-`` and other separators, drops standalone version,
    parameter-count and size tokens and joins the rest with single hyphens. Never empty: a name
    made only of droppable tokens (``base``, ``owner/large_v2``) falls back to the lowercased name
    without its owner (``large_v2``).
    """
    parts = [p.strip() for p in model_id.lower().split("/")]
    parts = [p for p in parts if p]
    if not parts:
        raise ValueError(f"no name in model id {model_id!r}")
    bare = parts[-1]
    kept = [t for t in _SEPARATORS.split(bare) if t and not _droppable(t)]
    return "-".join(kept) or bare


def root_token(norm: str) -> str:
    """The bucket of a normalised name: its first hyphen token, through :data:`ROOT_ALIASES`."""
    first = norm.split("-", 1)[0]
    return ROOT_ALIASES.get(first, first)


def _family_name(counts: Counter[str]) -> str:
    # Most frequent; ties: shortest, then alphabetical.
    return min(counts, key=lambda n: (-counts[n], len(n), n))


@lru_cache(maxsize=1 << 14)
def _partition(names: tuple[str, ...], threshold: float) -> tuple[int, ...]:
    """Cluster labels of a bucket's distinct, sorted names (cached: later stages repeat buckets)."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_distances

    try:
        x = TfidfVectorizer(analyzer="char", ngram_range=(3, 5)).fit_transform(names)
    except ValueError:  # no name has 3 characters: nothing to compare
        return tuple(range(len(names)))
    dist = np.clip(cosine_distances(x), 0.0, None)
    np.fill_diagonal(dist, 0.0)
    labels = AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="average",
                                     distance_threshold=threshold).fit_predict(dist)
    return tuple(int(v) for v in labels)


def _cluster_bucket(names: list[str], counts: Counter[str], threshold: float) -> dict[str, str]:
    """Cluster the distinct names of one bucket; ``counts`` only decides the family names."""
    if len(names) == 1:
        return {names[0]: names[0]}
    members: dict[int, list[str]] = defaultdict(list)
    for name, label in zip(names, _partition(tuple(names), float(threshold))):
        members[label].append(name)
    out: dict[str, str] = {}
    for group in members.values():
        family = _family_name(Counter({n: counts[n] for n in group}))
        for name in group:
            out[name] = family
    return out


def cluster_names(norms: Sequence[str], threshold: float = DISTANCE_THRESHOLD) -> dict[str, str]:
    """Map every distinct normalised name in ``norms`` to its family name.

    ``norms`` has one entry per model, so a name may repeat. The distinct names are clustered (as
    the released labels are: clustering with repeats, which weigh in the average linkage, agrees
    less with them); the repeats decide the family name, the most frequent name of a cluster (ties:
    shortest, then alphabetical). The result does not depend on the order of ``norms``.
    """
    counts = Counter(norms)
    buckets: dict[str, list[str]] = defaultdict(list)
    for name in sorted(counts):
        buckets[root_token(name)].append(name)
    out: dict[str, str] = {}
    for root in sorted(buckets):
        out.update(_cluster_bucket(buckets[root], counts, threshold))
    return out


def _nearest(queries: list[str], choices: list[str]) -> dict[str, str]:
    """Each query's nearest choice by normalised Levenshtein distance (ties: first in order)."""
    if not queries:
        return {}
    d = process.cdist(queries, choices, scorer=Levenshtein.normalized_distance, dtype=np.float64)
    best = np.argmin(d, axis=1)
    return {q: choices[int(i)] for q, i in zip(queries, best)}


def assign_families(stages: Sequence[tuple[Iterable[str], Iterable[str]]],
                    threshold: float = DISTANCE_THRESHOLD,
                    history: int | None = None) -> list[dict[str, str]]:
    """Cumulative family labels over a stream of stages (experiences).

    ``stages[t] = (train_model_ids, test_only_model_ids)``. At stage t the train ids of stages
    1..t (a set: a model recurring in two stages counts once) are clustered with
    :func:`cluster_names`; every other id named so far (test-only ids) takes the family of its
    nearest normalised train name by normalised Levenshtein distance (ties: the first name in sort
    order). Returns, per stage, ``model_id → family`` for every id named in stages ≤ t.

    ``history`` limits the clustered train ids to those of the current and the ``history`` previous
    stages; ids of older stages then also take the family of their nearest train name. ``None``
    (all stages) is the paper's definition; the released ``model_family`` labels of the four
    experiences are reproduced by ``history=1`` (previous + current experience).
    """
    if history is not None and history < 0:
        raise ValueError(f"history must be None or >= 0, got {history}")
    train_sets: list[set[str]] = []
    seen: set[str] = set()
    norm_of: dict[str, str] = {}
    out: list[dict[str, str]] = []
    for train, test_only in stages:
        train_sets.append(set(train))
        for mid in [*train_sets[-1], *test_only]:
            seen.add(mid)
            if mid not in norm_of:
                norm_of[mid] = normalise_name(mid)
        window = train_sets if history is None else train_sets[-(history + 1):]
        train_ids = set().union(*window)
        family_of_norm = cluster_names([norm_of[m] for m in train_ids], threshold)
        choices = sorted(family_of_norm)
        others = sorted({norm_of[m] for m in seen - train_ids} - family_of_norm.keys())
        if choices:
            nearest = _nearest(others, choices)
            family_of_norm.update({q: family_of_norm[c] for q, c in nearest.items()})
        else:
            family_of_norm.update({q: q for q in others})
        out.append({m: family_of_norm[norm_of[m]] for m in sorted(seen)})
    return out


def _pairs(counts: Iterable[int]) -> int:
    return sum(c * (c - 1) // 2 for c in counts)


def family_agreement(ours: Mapping[str, str], released: Mapping[str, str]) -> dict[str, float]:
    """Agreement of two ``model_id → family`` labellings over their common ids.

    ``exact``: share of ids with the same family string; ``ari``: adjusted Rand index of the two
    partitions; ``pair_precision``/``pair_recall``/``pair_f1``: over unordered id pairs, with "same
    family in ``released``" as the truth and "same family in ``ours``" as the prediction (precision
    is 1 where ``ours`` puts no two ids together, recall 1 where ``released`` does not).
    Metrics are NaN when no id is common.
    """
    from sklearn.metrics import adjusted_rand_score

    ids = sorted(ours.keys() & released.keys())
    n = len(ids)
    if n == 0:
        nan = float("nan")
        return {"n": 0, "exact": nan, "ari": nan, "pair_precision": nan, "pair_recall": nan,
                "pair_f1": nan}
    a = [ours[i] for i in ids]
    b = [released[i] for i in ids]
    exact = sum(x == y for x, y in zip(a, b)) / n
    ari = float(adjusted_rand_score(b, a))
    both = _pairs(Counter(zip(a, b)).values())
    pred = _pairs(Counter(a).values())
    true = _pairs(Counter(b).values())
    precision = both / pred if pred else 1.0
    recall = both / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n": n, "exact": exact, "ari": ari, "pair_precision": precision,
            "pair_recall": recall, "pair_f1": f1}

