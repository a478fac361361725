"""Metrics for Continual Model Routing: ranking hits, continual-learning matrices, statistics.

Small, functional helpers in the spirit of ``ranx``/BEIR. Everything takes plain Python
sequences or numpy arrays and returns numpy arrays or Python floats/dicts; nothing keeps state.

Conventions used throughout
---------------------------
* **Experiences are 0-based.** A stream of ``T`` experiences is indexed ``0 .. T-1``.
* **Accuracy matrix** ``A`` (Avalanche convention): ``A[t, j]`` is the accuracy on the test set of
  experience ``j`` measured right after training on experience ``t``. It is defined only for
  ``j <= t`` (lower triangle, diagonal included); cells with ``j > t`` are ``NaN`` and are never
  read by the functions below.
* **Signs:** forgetting is *positive when the router got worse* on old experiences; backward
  transfer (BWT) is its negation, *positive when it improved*; forward transfer is positive when
  the router beats the reference.
* **Ranked lists** are taken exactly as stored, in the stored order: the order *is* the tie-break
  (ties between scores must be broken by the router before the list is stored). Entries are not
  de-duplicated: a repeated id occupies each slot it appears in, so duplicates can only push
  other ids out of the top ``k`` and never help. A prompt counts as a hit at most once.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Literal

import numpy as np

__all__ = [
    "SUMMARY_METRICS",
    "hits_at_k",
    "reciprocal_rank",
    "accuracy_matrix",
    "final_average_accuracy",
    "stream_average_accuracy",
    "per_experience_forgetting",
    "forgetting",
    "max_forgetting",
    "backward_transfer",
    "forward_transfer",
    "hallucination_rate",
    "future_only_ids",
    "future_leak_rate",
    "paired_bootstrap",
    "mean_std",
    "latency_summary",
    "percent",
]

# The continual summaries stored per level in every results file, with the direction that is better.
SUMMARY_METRICS: dict[str, dict[str, object]] = {
    "final_average_accuracy": {"higher_is_better": True, "label": "accuracy after the last experience"},
    "stream_average_accuracy": {"higher_is_better": True, "label": "accuracy averaged over the stream"},
    "forgetting": {"higher_is_better": False, "label": "forgetting (drop since first learned)"},
    "max_forgetting": {"higher_is_better": False, "label": "forgetting from the best earlier accuracy"},
    "backward_transfer": {"higher_is_better": True, "label": "backward transfer (-forgetting)"},
}

def percent(value: float | None, digits: int = 1) -> str:
    """How every surface (command line, tables, page, figures) prints a fraction as a percentage: one decimal,
    two below 1 % so that small rates do not read as 0.0 (0.0015 -> "0.15"); "–" for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    x = 100 * value
    return f"{x:.2f}" if digits == 1 and x != 0 and abs(x) < 1 else f"{x:.{digits}f}"


# Upper bound on the number of resampled indices held in memory at once by ``paired_bootstrap``
# (int64, so 2**22 indices are 32 MiB). Changing it changes the random stream, hence the results.
_BOOTSTRAP_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------
# Ranking metrics (per prompt)
# --------------------------------------------------------------------------------------------


def _check_parallel(ranked: Sequence[Sequence[str]], gold: Sequence[str]) -> None:
    if len(ranked) != len(gold):
        raise ValueError(f"ranked has {len(ranked)} prompts but gold has {len(gold)}")


def hits_at_k(
    ranked: Sequence[Sequence[str]],
    gold: Sequence[str],
    k: int,
    labels_of: Mapping[str, Collection[str]] | None = None,
) -> np.ndarray:
    """Per-prompt Hit@k, as a boolean array of length ``len(gold)``.

    Definition, for prompt ``i`` with ranked predictions ``ranked[i]`` and gold label ``gold[i]``:

    * **model level** (``labels_of is None``): hit iff ``gold[i] in ranked[i][:k]``;
    * **family / domain level** (``labels_of`` given, mapping each model id to the *set* of
      families, or of domains, it carries): ``gold[i]`` is then a family (or domain) string and
      the prompt is a hit iff some ``p in ranked[i][:k]`` has ``gold[i] in labels_of.get(p, ())``.
      A model carrying several labels counts for each of them. Predicted ids unknown to
      ``labels_of`` never count.

    ``ranked[i][:k]`` is positional: the list is not de-duplicated, so a repeated id uses up every
    slot it occupies; order ties must already be broken in the stored order. A list shorter than
    ``k`` is used as is; an empty list is a miss. ``k`` must be ``>= 1``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    _check_parallel(ranked, gold)
    out = np.zeros(len(gold), dtype=bool)
    if labels_of is None:
        for i, (preds, g) in enumerate(zip(ranked, gold)):
            out[i] = g in list(preds[:k])
    else:
        for i, (preds, g) in enumerate(zip(ranked, gold)):
            out[i] = any(g in labels_of.get(p, ()) for p in preds[:k])
    return out


def reciprocal_rank(ranked: Sequence[Sequence[str]], gold: Sequence[str], k: int = 10) -> np.ndarray:
    """Per-prompt reciprocal rank at the model level, as a float array of length ``len(gold)``.

    ``RR_i = 1 / r_i`` where ``r_i`` is the 1-based position of the *first* occurrence of
    ``gold[i]`` in ``ranked[i]``, if ``r_i <= k``; otherwise ``RR_i = 0``. The mean of the array is
    MRR@k. Lists are positional (no de-duplication; see :func:`hits_at_k`). ``k`` must be ``>= 1``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    _check_parallel(ranked, gold)
    out = np.zeros(len(gold), dtype=float)
    for i, (preds, g) in enumerate(zip(ranked, gold)):
        for pos, p in enumerate(preds[:k], start=1):
            if p == g:
                out[i] = 1.0 / pos
                break
    return out


# --------------------------------------------------------------------------------------------
# Continual-learning matrix metrics
# --------------------------------------------------------------------------------------------


def accuracy_matrix(acc: Mapping[tuple[int, int], float], T: int) -> np.ndarray:
    """Build the ``T x T`` accuracy matrix from ``{(t, j): accuracy}`` (0-based indices).

    ``A[t, j] = acc[(t, j)]`` for every ``0 <= j <= t <= T-1`` and ``A[t, j] = NaN`` for ``j > t``.
    Raises ``ValueError`` naming the first missing cell ``(t, j)`` with ``j <= t``, any key outside
    the lower triangle (``j > t`` or an index outside ``0 .. T-1``), and any non-finite value.
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    for key in acc:
        t, j = key
        if not (0 <= j <= t < T):
            raise ValueError(f"cell (t={t}, j={j}) is outside the lower triangle of a {T}x{T} matrix")
    A = np.full((T, T), np.nan, dtype=float)
    for t in range(T):
        for j in range(t + 1):
            if (t, j) not in acc:
                raise ValueError(f"missing accuracy cell (t={t}, j={j})")
            v = float(acc[(t, j)])
            if not math.isfinite(v):
                raise ValueError(f"accuracy cell (t={t}, j={j}) is not finite: {v}")
            A[t, j] = v
    return A


def _check_matrix(A: np.ndarray) -> np.ndarray:
    A = np.asarray(A, dtype=float)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] < 1:
        raise ValueError(f"accuracy matrix must be a non-empty square 2-D array, got shape {A.shape}")
    lower = A[np.tril_indices(A.shape[0])]
    if not np.all(np.isfinite(lower)):
        raise ValueError("accuracy matrix has non-finite values on or below the diagonal")
    return A


def final_average_accuracy(A: np.ndarray) -> float:
    """Average accuracy at the end of the stream: ``(1/T) * sum_{j=0}^{T-1} A[T-1, j]``."""
    A = _check_matrix(A)
    return float(np.mean(A[-1, :]))


def stream_average_accuracy(A: np.ndarray) -> float:
    """Average of the running average accuracy over the stream.

    ``(1/T) * sum_{t=0}^{T-1} [ (1/(t+1)) * sum_{j=0}^{t} A[t, j] ]``: after each experience ``t``
    the accuracy is averaged over the experiences seen so far, then those ``T`` values are averaged.
    """
    A = _check_matrix(A)
    T = A.shape[0]
    return float(np.mean([np.mean(A[t, : t + 1]) for t in range(T)]))


def per_experience_forgetting(
    A: np.ndarray, reference: Literal["diagonal", "max"] = "diagonal"
) -> np.ndarray:
    """Forgetting of each experience but the last, as a float array of length ``T-1``.

    Entry ``j`` (for ``j = 0 .. T-2``) is ``ref_j - A[T-1, j]``, positive when accuracy on
    experience ``j`` dropped, where

    * ``reference="diagonal"`` (Avalanche): ``ref_j = A[j, j]``, accuracy right after learning ``j``;
    * ``reference="max"`` (Chaudhry et al., 2018): ``ref_j = max_{t in [j, T-2]} A[t, j]``, the
      best accuracy on ``j`` before the last experience.

    The last experience has no forgetting and is not included; for ``T == 1`` the array is empty.
    """
    A = _check_matrix(A)
    T = A.shape[0]
    final = A[T - 1, : T - 1]
    if reference == "diagonal":
        ref = np.diagonal(A)[: T - 1]
    elif reference == "max":
        ref = np.array([np.max(A[j : T - 1, j]) for j in range(T - 1)], dtype=float)
    else:
        raise ValueError(f"reference must be 'diagonal' or 'max', got {reference!r}")
    return ref - final


def forgetting(A: np.ndarray) -> float:
    """Average forgetting (Avalanche): ``(1/(T-1)) * sum_{j=0}^{T-2} (A[j, j] - A[T-1, j])``.

    Positive = worse (accuracy on old experiences dropped). ``NaN`` when ``T == 1``.
    """
    f = per_experience_forgetting(A, "diagonal")
    return float(np.mean(f)) if f.size else math.nan


def max_forgetting(A: np.ndarray) -> float:
    """Average max-forgetting (Chaudhry et al., 2018).

    ``(1/(T-1)) * sum_{j=0}^{T-2} (max_{t in [j, T-2]} A[t, j] - A[T-1, j])``. Positive = worse;
    always ``>= forgetting(A)`` since ``t = j`` is in the max. ``NaN`` when ``T == 1``.
    """
    f = per_experience_forgetting(A, "max")
    return float(np.mean(f)) if f.size else math.nan


def backward_transfer(A: np.ndarray) -> float:
    """Backward transfer (Lopez-Paz & Ranzato, 2017): ``(1/(T-1)) * sum_{j=0}^{T-2} (A[T-1, j] - A[j, j])``.

    Equals ``-forgetting(A)``: positive = learning later experiences improved earlier ones.
    ``NaN`` when ``T == 1``.
    """
    A = _check_matrix(A)
    T = A.shape[0]
    if T == 1:
        return math.nan
    return float(np.mean(A[T - 1, : T - 1] - np.diagonal(A)[: T - 1]))


def forward_transfer(A: np.ndarray, zero_shot: Sequence[float]) -> float:
    """Forward transfer against a reference: ``(1/(T-1)) * sum_{j=1}^{T-1} (A[j, j] - zero_shot[j])``.

    ``zero_shot[j]`` is the accuracy on the test set of experience ``j`` of a reference router that
    received no training on experience ``j`` (e.g. a zero-shot router over the same hub, or the
    router as it stood before experience ``j``); ``len(zero_shot)`` must be ``T`` and
    ``zero_shot[0]`` is ignored (it may be ``NaN``), since experience 0 has nothing before it.
    Positive = the continual router, just after learning ``j``, beats the reference on ``j``.
    Note this is *not* GEM's FWT (``A[j-1, j] - b_j``), which needs cells above the diagonal.
    ``NaN`` when ``T == 1``.
    """
    A = _check_matrix(A)
    T = A.shape[0]
    z = np.asarray(zero_shot, dtype=float)
    if z.shape != (T,):
        raise ValueError(f"zero_shot must have length T={T}, got shape {z.shape}")
    if T == 1:
        return math.nan
    if not np.all(np.isfinite(z[1:])):
        raise ValueError("zero_shot[1:] must be finite")
    return float(np.mean(np.diagonal(A)[1:] - z[1:]))


# --------------------------------------------------------------------------------------------
# Routing-specific error rates
# --------------------------------------------------------------------------------------------


def hallucination_rate(top1: Sequence[str], pool: Collection[str]) -> float:
    """Fraction of top-1 predictions that are not in the candidate pool (Gorilla-style).

    ``#{i : top1[i] not in pool} / len(top1)``. Any id outside ``pool`` counts, empty strings
    included. ``NaN`` for an empty ``top1``.
    """
    if len(top1) == 0:
        return math.nan
    pool = pool if isinstance(pool, (set, frozenset, dict)) else set(pool)
    return sum(1 for p in top1 if p not in pool) / len(top1)


def future_only_ids(ids_per_experience: Sequence[Collection[str]], t: int) -> set[str]:
    """Ids that appear only in experiences after ``t`` (0-based).

    ``union(ids_per_experience[t+1:]) - union(ids_per_experience[:t+1])``: the set to pass as
    ``future_ids`` to :func:`future_leak_rate` when evaluating after experience ``t``.
    ``t = -1`` means nothing has been seen yet.
    """
    if t < -1:
        raise ValueError(f"t must be >= -1, got {t}")
    seen: set[str] = set().union(*ids_per_experience[: t + 1])
    later: set[str] = set().union(*ids_per_experience[t + 1 :])
    return later - seen


def future_leak_rate(top1: Sequence[str], future_ids: Collection[str]) -> float:
    """Fraction of top-1 predictions that are ids appearing only in later experiences.

    ``#{i : top1[i] in future_ids} / len(top1)``, where ``future_ids`` is the set of ids that are
    first seen after the current experience (see :func:`future_only_ids`). A non-zero rate means
    the router had access to models from the future. ``NaN`` for an empty ``top1``.
    """
    if len(top1) == 0:
        return math.nan
    future = future_ids if isinstance(future_ids, (set, frozenset, dict)) else set(future_ids)
    return sum(1 for p in top1 if p in future) / len(top1)


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    n_resamples: int = 10000,
    seed: int = 0,
    confidence: float = 0.95,
    strata: np.ndarray | None = None,
) -> dict:
    """Paired bootstrap of the mean difference ``mean(a) - mean(b)`` over the same prompts.

    ``a`` and ``b`` are per-prompt scores of two systems on the same ``n`` prompts, aligned by
    position (0/1 correctness, or any real score such as reciprocal rank). Let ``d = a - b`` and
    ``delta = mean(d)``. For ``B = n_resamples`` resamples, ``n`` prompt indices are drawn
    uniformly with replacement (the same indices for both systems) and ``delta*_b`` is the mean of
    ``d`` over them.

    With ``strata`` (one label per prompt, e.g. its test experience) the statistic is the mean over
    strata of the mean of ``d`` within each, as the final average accuracy averages experiences, and
    each resample draws every stratum's prompts within that stratum (its size kept).

    * ``ci_low``, ``ci_high``: percentile interval, the ``(1-confidence)/2`` and
      ``(1+confidence)/2`` quantiles (numpy "linear" method) of ``delta*_1 .. delta*_B``.
    * ``p_value`` (two-sided, for H0: no difference): the bootstrap distribution is centred on
      ``delta`` to mimic the null, and
      ``p = (1 + #{b : |delta*_b - delta| >= |delta|}) / (B + 1)``
      (Davison & Hinkley, 1997, with the ``+1`` correction so that ``p > 0``). Identical inputs give
      ``delta = 0`` and ``p = 1``.

    Indices are drawn with ``numpy.random.default_rng(seed)`` in chunks of at most
    ``2**22`` indices, strata in sorted order, so the result is deterministic given ``seed``
    (and the inputs). A confidence interval of one system alone is ``paired_bootstrap(a, zeros)``.
    Returns ``{"mean_diff", "ci_low", "ci_high", "p_value", "mean_a", "mean_b", "n",
    "n_resamples", "confidence", "seed"}`` (means are stratified when ``strata`` is given).
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"a and b must be 1-D arrays of the same length, got {a.shape} and {b.shape}")
    n = a.shape[0]
    if n == 0:
        raise ValueError("paired_bootstrap needs at least one prompt")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    d = a - b
    if not np.all(np.isfinite(d)):
        raise ValueError("a and b must be finite")
    if strata is None:
        groups = [np.arange(n)]
    else:
        strata = np.asarray(strata)
        if strata.shape != a.shape:
            raise ValueError(f"strata must give one label per prompt ({n}), got shape {strata.shape}")
        groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]

    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_resamples, _BOOTSTRAP_CHUNK_ELEMENTS // n))
    stats = np.empty(n_resamples, dtype=float)
    done = 0
    while done < n_resamples:
        c = min(chunk, n_resamples - done)
        # sums first (exact integers for 0/1 data), so "at least as extreme" is not decided by rounding
        sums = [d[g][rng.integers(0, g.size, size=(c, g.size))].sum(axis=1) for g in groups]
        stats[done : done + c] = np.mean([s / g.size for s, g in zip(sums, groups)], axis=0)
        done += c
    delta = float(np.mean([d[g].sum() / g.size for g in groups]))
    tol = 8.0 * n * np.finfo(float).eps * max(1.0, float(np.max(np.abs(d)))) / min(g.size for g in groups)
    extreme = np.abs(stats - delta) >= abs(delta) - tol
    p_value = (1.0 + float(np.count_nonzero(extreme))) / (n_resamples + 1.0)

    alpha = 1.0 - confidence
    lo, hi = np.quantile(stats, [alpha / 2.0, 1.0 - alpha / 2.0])

    def stratified_mean(x: np.ndarray) -> float:
        return float(np.mean([x[g].mean() for g in groups]))

    return {
        "mean_diff": delta,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "p_value": p_value,
        "mean_a": stratified_mean(a),
        "mean_b": stratified_mean(b),
        "n": int(n),
        "n_resamples": int(n_resamples),
        "confidence": float(confidence),
        "seed": seed,
    }


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) of per-seed results.

    Returns ``(mean, std)``; a single value gives ``std = 0.0``. Raises ``ValueError`` when empty.
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size == 0:
        raise ValueError("mean_std needs a non-empty 1-D sequence of values")
    mean = float(np.mean(v))
    std = float(np.std(v, ddof=1)) if v.size > 1 else 0.0
    return mean, std


def _repeated_quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    """``np.quantile(np.repeat(x, w), q)`` (linear method) without materialising the repeat."""
    order = np.argsort(x, kind="stable")
    xs, ws = x[order], w[order]
    cum = np.cumsum(ws)  # cum[i] - 1 is the last 0-based position occupied by xs[i]
    N = int(cum[-1])
    h = (N - 1) * q
    lo = int(math.floor(h))
    hi = min(lo + 1, N - 1)
    v_lo = xs[np.searchsorted(cum, lo, side="right")]
    v_hi = xs[np.searchsorted(cum, hi, side="right")]
    return float(v_lo + (h - lo) * (v_hi - v_lo))


def latency_summary(seconds_per_call: Sequence[float], prompts_per_call: Sequence[int]) -> dict:
    """Per-prompt latency percentiles and throughput from batched routing calls.

    Call ``i`` took ``s_i`` seconds for ``n_i >= 1`` prompts. Each of its ``n_i`` prompts is given
    latency ``s_i / n_i``; ``p50``/``p95`` are the 50th/95th percentiles (numpy "linear" method)
    of those ``sum_i n_i`` per-prompt latencies, i.e. per-call latencies weighted by prompts.
    Throughput is ``sum_i n_i / sum_i s_i`` prompts per second (``inf`` if no time was recorded).

    Returns ``{"p50_seconds_per_prompt", "p95_seconds_per_prompt", "mean_seconds_per_prompt",
    "throughput_prompts_per_second", "total_seconds", "n_prompts", "n_calls"}``.
    """
    s = np.asarray(seconds_per_call, dtype=float)
    n = np.asarray(prompts_per_call)
    if s.ndim != 1 or s.shape != n.shape or s.size == 0:
        raise ValueError("seconds_per_call and prompts_per_call must be non-empty and of equal length")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("seconds_per_call must be finite and >= 0")
    if not np.all(n == np.round(n)) or np.any(n < 1):
        raise ValueError("prompts_per_call must be integers >= 1")
    n = n.astype(np.int64)
    per_prompt = s / n
    total_s = float(np.sum(s))
    total_n = int(np.sum(n))
    return {
        "p50_seconds_per_prompt": _repeated_quantile(per_prompt, n, 0.50),
        "p95_seconds_per_prompt": _repeated_quantile(per_prompt, n, 0.95),
        "mean_seconds_per_prompt": total_s / total_n,
        "throughput_prompts_per_second": total_n / total_s if total_s > 0 else math.inf,
        "total_seconds": total_s,
        "n_prompts": total_n,
        "n_calls": int(s.size),
    }
