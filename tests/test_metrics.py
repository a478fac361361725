"""Tests for cmrbench.metrics: hand-computed cases and property-based checks."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmrbench import metrics as M
from cmrbench.metrics import (
    accuracy_matrix,
    backward_transfer,
    final_average_accuracy,
    forgetting,
    forward_transfer,
    future_leak_rate,
    future_only_ids,
    hallucination_rate,
    hits_at_k,
    latency_summary,
    max_forgetting,
    mean_std,
    paired_bootstrap,
    per_experience_forgetting,
    reciprocal_rank,
    stream_average_accuracy,
)

nan = float("nan")

# --------------------------------------------------------------------------------------------
# Hand-computed accuracy matrices
# --------------------------------------------------------------------------------------------

A1 = np.array([[0.8, nan, nan], [0.6, 0.7, nan], [0.5, 0.65, 0.9]])
# Accuracy on experience 0 goes up after experience 1, so max-forgetting differs from forgetting.
A2 = np.array([[0.5, nan, nan], [0.9, 0.6, nan], [0.7, 0.8, 0.4]])


def test_matrix_a1_by_hand():
    assert final_average_accuracy(A1) == pytest.approx((0.5 + 0.65 + 0.9) / 3)  # 0.68333
    assert stream_average_accuracy(A1) == pytest.approx((0.8 + (0.6 + 0.7) / 2 + (0.5 + 0.65 + 0.9) / 3) / 3)
    assert stream_average_accuracy(A1) == pytest.approx(0.711111111)
    assert forgetting(A1) == pytest.approx(((0.8 - 0.5) + (0.7 - 0.65)) / 2)  # 0.175
    assert max_forgetting(A1) == pytest.approx(((0.8 - 0.5) + (0.7 - 0.65)) / 2)  # max(0.8, 0.6) = 0.8
    assert backward_transfer(A1) == pytest.approx(-0.175)
    np.testing.assert_allclose(per_experience_forgetting(A1), [0.3, 0.05])
    # zero_shot[0] is ignored (may be NaN)
    assert forward_transfer(A1, [nan, 0.5, 0.6]) == pytest.approx(((0.7 - 0.5) + (0.9 - 0.6)) / 2)  # 0.25


def test_matrix_a2_by_hand():
    assert final_average_accuracy(A2) == pytest.approx((0.7 + 0.8 + 0.4) / 3)
    assert stream_average_accuracy(A2) == pytest.approx((0.5 + 0.75 + 1.9 / 3) / 3)
    assert forgetting(A2) == pytest.approx(((0.5 - 0.7) + (0.6 - 0.8)) / 2)  # -0.2
    # j=0: max(A[0,0], A[1,0]) = 0.9 -> 0.9 - 0.7 = 0.2 ; j=1: A[1,1] = 0.6 -> 0.6 - 0.8 = -0.2
    assert max_forgetting(A2) == pytest.approx(0.0)
    np.testing.assert_allclose(per_experience_forgetting(A2, "max"), [0.2, -0.2])
    assert backward_transfer(A2) == pytest.approx(0.2)


def test_upper_triangle_is_ignored():
    B = A1.copy()
    B[np.triu_indices(3, 1)] = 123.0
    for f in (final_average_accuracy, stream_average_accuracy, forgetting, max_forgetting, backward_transfer):
        assert f(B) == f(A1)


def test_single_experience_gives_nan_not_errors():
    A = np.array([[0.42]])
    assert final_average_accuracy(A) == pytest.approx(0.42)
    assert stream_average_accuracy(A) == pytest.approx(0.42)
    assert math.isnan(forgetting(A))
    assert math.isnan(max_forgetting(A))
    assert math.isnan(backward_transfer(A))
    assert math.isnan(forward_transfer(A, [0.1]))
    assert per_experience_forgetting(A).shape == (0,)


def test_matrix_validation():
    with pytest.raises(ValueError):
        forgetting(np.array([[0.5, 0.1]]))  # not square
    with pytest.raises(ValueError):
        forgetting(np.array([[0.5, nan], [nan, 0.4]]))  # NaN in the lower triangle
    with pytest.raises(ValueError):
        forward_transfer(A1, [0.1, 0.2])  # wrong length
    with pytest.raises(ValueError):
        per_experience_forgetting(A1, "bogus")


def test_accuracy_matrix_builds_lower_triangle():
    acc = {(0, 0): 0.8, (1, 0): 0.6, (1, 1): 0.7, (2, 0): 0.5, (2, 1): 0.65, (2, 2): 0.9}
    A = accuracy_matrix(acc, 3)
    np.testing.assert_array_equal(np.isnan(A), np.isnan(A1))
    np.testing.assert_allclose(A[np.tril_indices(3)], A1[np.tril_indices(3)])


def test_accuracy_matrix_errors_name_the_cell():
    acc = {(0, 0): 0.8, (1, 0): 0.6, (1, 1): 0.7, (2, 0): 0.5, (2, 2): 0.9}
    with pytest.raises(ValueError, match=r"\(t=2, j=1\)"):
        accuracy_matrix(acc, 3)
    with pytest.raises(ValueError, match=r"\(t=0, j=1\)"):
        accuracy_matrix({(0, 0): 0.5, (0, 1): 0.3}, 1)
    with pytest.raises(ValueError, match=r"\(t=0, j=0\)"):
        accuracy_matrix({(0, 0): nan}, 1)
    with pytest.raises(ValueError):
        accuracy_matrix({}, 0)


# --------------------------------------------------------------------------------------------
# Hits and reciprocal rank
# --------------------------------------------------------------------------------------------

RANKED = [["m1", "m2", "m3"], ["m4", "m1"], [], ["m2", "m2", "m3"]]
GOLD = ["m2", "m1", "m1", "m3"]


def test_model_level_hits_with_duplicates_and_empty_lists():
    assert hits_at_k(RANKED, GOLD, 1).tolist() == [False, False, False, False]
    # the repeated "m2" occupies two slots, pushing "m3" to position 3
    assert hits_at_k(RANKED, GOLD, 2).tolist() == [True, True, False, False]
    assert hits_at_k(RANKED, GOLD, 3).tolist() == [True, True, False, True]
    assert hits_at_k(RANKED, GOLD, 10).dtype == bool


def test_reciprocal_rank_by_hand():
    np.testing.assert_allclose(reciprocal_rank(RANKED, GOLD), [1 / 2, 1 / 2, 0.0, 1 / 3])
    np.testing.assert_allclose(reciprocal_rank(RANKED, GOLD, k=2), [1 / 2, 1 / 2, 0.0, 0.0])
    # first occurrence counts
    np.testing.assert_allclose(reciprocal_rank([["a", "b", "a"]], ["a"]), [1.0])


def test_family_and_domain_hits_with_multilabel_registry():
    families = {"m1": {"llama", "mistral"}, "m2": {"bert"}, "m3": set()}
    domains = {"m1": {"nlp", "vision"}, "m2": {"audio"}, "m3": {"nlp"}}
    ranked = [["mX", "m1"], ["mX", "m1"], ["m3", "m2"], ["mX"], ["m2", "m3"]]
    fam_gold = ["llama", "mistral", "llama", "mX", "bert"]
    assert hits_at_k(ranked, fam_gold, 1, families).tolist() == [False, False, False, False, True]
    # m1 carries both llama and mistral; m3 carries no family; unknown mX never counts,
    # even when the gold string equals its id
    assert hits_at_k(ranked, fam_gold, 2, families).tolist() == [True, True, False, False, True]
    dom_gold = ["vision", "nlp", "nlp", "nlp", "nlp"]
    assert hits_at_k(ranked, dom_gold, 1, domains).tolist() == [False, False, True, False, False]
    assert hits_at_k(ranked, dom_gold, 2, domains).tolist() == [True, True, True, False, True]


def test_hits_validation():
    with pytest.raises(ValueError):
        hits_at_k(RANKED, GOLD, 0)
    with pytest.raises(ValueError):
        hits_at_k(RANKED, GOLD[:2], 1)
    with pytest.raises(ValueError):
        reciprocal_rank(RANKED, GOLD, k=0)


# --------------------------------------------------------------------------------------------
# Routing error rates
# --------------------------------------------------------------------------------------------


def test_hallucination_rate():
    assert hallucination_rate(["a", "b", "z", ""], {"a", "b"}) == 0.5
    assert hallucination_rate(["a"], ["a", "b"]) == 0.0
    assert math.isnan(hallucination_rate([], {"a"}))


def test_future_leak_rate():
    per_exp = [{"a", "b"}, {"c"}, {"d", "a"}]
    assert future_only_ids(per_exp, 0) == {"c", "d"}  # "a" reappears later but was already seen
    assert future_only_ids(per_exp, 2) == set()
    assert future_only_ids(per_exp, -1) == {"a", "b", "c", "d"}
    assert future_leak_rate(["a", "c", "d", "b"], future_only_ids(per_exp, 0)) == 0.5
    assert future_leak_rate(["a", "c", "d", "b"], future_only_ids(per_exp, 1)) == 0.25
    assert math.isnan(future_leak_rate([], {"c"}))


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def test_bootstrap_identical_arrays():
    a = np.array([1, 0, 1, 1, 0, 1])
    r = paired_bootstrap(a, a.copy(), n_resamples=500)
    assert r["mean_diff"] == 0.0 and r["ci_low"] == 0.0 and r["ci_high"] == 0.0
    assert r["p_value"] == 1.0


def test_bootstrap_all_better():
    a, b = np.ones(50), np.zeros(50)
    r = paired_bootstrap(a, b, n_resamples=999)
    assert r["mean_diff"] == 1.0 and r["ci_low"] == 1.0 and r["ci_high"] == 1.0
    assert r["p_value"] == pytest.approx(1 / 1000)  # (1 + 0) / (B + 1)
    assert r["mean_a"] == 1.0 and r["mean_b"] == 0.0 and r["n"] == 50


def test_bootstrap_matches_normal_approximation():
    rng = np.random.default_rng(1)
    a = (rng.random(400) < 0.7).astype(int)
    b = (rng.random(400) < 0.6).astype(int)
    r = paired_bootstrap(a, b, n_resamples=4000, seed=3)
    d = a - b
    se = d.std(ddof=1) / math.sqrt(d.size)
    assert r["mean_diff"] == pytest.approx(d.mean())
    assert r["ci_low"] < r["mean_diff"] < r["ci_high"]
    assert (r["ci_high"] - r["ci_low"]) == pytest.approx(2 * 1.96 * se, rel=0.15)
    z = abs(d.mean()) / se
    p_normal = math.erfc(z / math.sqrt(2))
    assert r["p_value"] == pytest.approx(p_normal, abs=0.02)


def test_bootstrap_chunking_and_determinism(monkeypatch):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 20)
    b = rng.integers(0, 2, 20)
    r1 = paired_bootstrap(a, b, n_resamples=300, seed=7)
    assert paired_bootstrap(a, b, n_resamples=300, seed=7) == r1
    monkeypatch.setattr(M, "_BOOTSTRAP_CHUNK_ELEMENTS", 10)  # one resample per chunk
    r2 = paired_bootstrap(a, b, n_resamples=300, seed=7)
    assert r2["mean_diff"] == r1["mean_diff"]
    assert 0.0 < r2["p_value"] <= 1.0 and r2["ci_low"] <= r2["mean_diff"] <= r2["ci_high"]


def test_stratified_bootstrap_is_of_the_mean_over_strata():
    """With strata (a prompt's test experience) the statistic is the final average accuracy: the mean over
    experiences of each one's accuracy, however unequal their sizes; one stratum is the plain bootstrap."""
    rng = np.random.default_rng(2)
    a = (rng.random(300) < 0.6).astype(int)
    b = (rng.random(300) < 0.5).astype(int)
    strata = np.repeat([1, 2, 3], [200, 60, 40])
    r = paired_bootstrap(a, b, n_resamples=2000, seed=1, strata=strata)
    per = [(a[strata == s] - b[strata == s]).mean() for s in (1, 2, 3)]
    assert r["mean_diff"] == pytest.approx(np.mean(per)) and r["mean_diff"] != pytest.approx((a - b).mean())
    assert r["mean_a"] == pytest.approx(np.mean([a[strata == s].mean() for s in (1, 2, 3)]))
    assert r["ci_low"] < r["mean_diff"] < r["ci_high"]
    assert paired_bootstrap(a, b, n_resamples=300, seed=4, strata=np.zeros(300)) == \
        paired_bootstrap(a, b, n_resamples=300, seed=4)
    assert paired_bootstrap(a, a, n_resamples=300, strata=strata)["p_value"] == 1.0
    with pytest.raises(ValueError, match="one label per prompt"):
        paired_bootstrap(a, b, strata=strata[:10])


def test_bootstrap_validation():
    with pytest.raises(ValueError):
        paired_bootstrap(np.array([1, 0]), np.array([1]))
    with pytest.raises(ValueError):
        paired_bootstrap(np.array([]), np.array([]))
    with pytest.raises(ValueError):
        paired_bootstrap(np.array([1]), np.array([0]), confidence=1.0)
    with pytest.raises(ValueError):
        paired_bootstrap(np.array([1]), np.array([0]), n_resamples=0)


def test_mean_std():
    assert mean_std([0.5]) == (0.5, 0.0)
    m, s = mean_std([1.0, 2.0, 4.0])
    assert m == pytest.approx(7 / 3)
    assert s == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    with pytest.raises(ValueError):
        mean_std([])


def test_latency_summary_by_hand():
    # per-prompt latencies: call 0 -> 10 prompts at 0.1 s, call 1 -> 4 at 0.5 s, call 2 -> 1 at 0.5 s
    r = latency_summary([1.0, 2.0, 0.5], [10, 4, 1])
    assert r["p50_seconds_per_prompt"] == pytest.approx(0.1)  # position 7 of 15
    assert r["p95_seconds_per_prompt"] == pytest.approx(0.5)
    assert r["throughput_prompts_per_second"] == pytest.approx(15 / 3.5)
    assert r["mean_seconds_per_prompt"] == pytest.approx(3.5 / 15)
    assert r["n_prompts"] == 15 and r["n_calls"] == 3 and r["total_seconds"] == pytest.approx(3.5)
    r = latency_summary([1.0, 3.0], [1, 1])
    assert r["p50_seconds_per_prompt"] == pytest.approx(2.0)
    assert r["p95_seconds_per_prompt"] == pytest.approx(1.0 + 0.95 * 2.0)
    assert latency_summary([0.0], [3])["throughput_prompts_per_second"] == math.inf
    with pytest.raises(ValueError):
        latency_summary([1.0], [0])
    with pytest.raises(ValueError):
        latency_summary([1.0, 2.0], [1])


# --------------------------------------------------------------------------------------------
# Property-based tests
# --------------------------------------------------------------------------------------------

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@st.composite
def lower_triangular(draw, max_T: int = 6):
    T = draw(st.integers(1, max_T))
    acc = {(t, j): draw(unit) for t in range(T) for j in range(t + 1)}
    return accuracy_matrix(acc, T)


@settings(max_examples=100, deadline=None)
@given(lower_triangular())
def test_matrix_properties(A):
    T = A.shape[0]
    assert 0.0 <= final_average_accuracy(A) <= 1.0
    assert 0.0 <= stream_average_accuracy(A) <= 1.0
    f, bwt, mf = forgetting(A), backward_transfer(A), max_forgetting(A)
    if T == 1:
        assert math.isnan(f) and math.isnan(bwt) and math.isnan(mf)
        return
    assert f == -bwt
    assert -1.0 <= f <= 1.0
    assert mf >= f - 1e-12
    assert np.all(per_experience_forgetting(A, "max") >= per_experience_forgetting(A) - 1e-12)
    assert f == pytest.approx(float(np.mean(per_experience_forgetting(A))))
    assert forward_transfer(A, np.diagonal(A)) == pytest.approx(0.0)


ids = st.sampled_from(["m1", "m2", "m3", "m4", "m5"])
ranked_lists = st.lists(st.lists(ids, max_size=8), min_size=1, max_size=12)
registry = st.dictionaries(ids, st.sets(st.sampled_from(["f1", "f2", "f3"]), max_size=3))


@settings(max_examples=100, deadline=None)
@given(ranked_lists, st.data())
def test_hits_properties(ranked, data):
    gold = data.draw(st.lists(ids, min_size=len(ranked), max_size=len(ranked)))
    labels = data.draw(registry)
    fam_gold = data.draw(st.lists(st.sampled_from(["f1", "f2", "f3"]), min_size=len(ranked), max_size=len(ranked)))
    prev = np.zeros(len(ranked), bool)
    prev_fam = np.zeros(len(ranked), bool)
    for k in range(1, 10):
        h = hits_at_k(ranked, gold, k)
        hf = hits_at_k(ranked, fam_gold, k, labels)
        assert np.all(h >= prev) and np.all(hf >= prev_fam)  # monotone in k
        np.testing.assert_array_equal(h, reciprocal_rank(ranked, gold, k) > 0)
        # a registry mapping every id to itself reproduces model-level hits
        np.testing.assert_array_equal(h, hits_at_k(ranked, gold, k, {m: {m} for m in ["m1", "m2", "m3", "m4", "m5"]}))
        prev, prev_fam = h, hf
    rr = reciprocal_rank(ranked, gold)
    assert np.all((rr >= 0) & (rr <= 1))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 1), min_size=1, max_size=60), st.integers(0, 2**32 - 1))
def test_bootstrap_identical_property(values, seed):
    a = np.array(values)
    r = paired_bootstrap(a, a, n_resamples=200, seed=seed)
    assert r["mean_diff"] == 0.0 and r["p_value"] == 1.0


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=60),
    st.integers(0, 2**32 - 1),
)
def test_bootstrap_seed_reproduces_and_bounds(pairs, seed):
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    r1 = paired_bootstrap(a, b, n_resamples=200, seed=seed)
    r2 = paired_bootstrap(a, b, n_resamples=200, seed=seed)
    assert r1 == r2
    assert -1.0 <= r1["ci_low"] <= r1["ci_high"] <= 1.0
    assert 1 / 201 <= r1["p_value"] <= 1.0
    assert r1["mean_diff"] == pytest.approx(a.mean() - b.mean())


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.0, 100.0, allow_nan=False), st.integers(1, 30)), min_size=1, max_size=15
    )
)
def test_latency_percentiles_equal_expanded_prompts(calls):
    s = np.array([c[0] for c in calls])
    n = np.array([c[1] for c in calls])
    r = latency_summary(s, n)
    expanded = np.repeat(s / n, n)
    assert r["p50_seconds_per_prompt"] == pytest.approx(float(np.percentile(expanded, 50)), rel=1e-12, abs=1e-12)
    assert r["p95_seconds_per_prompt"] == pytest.approx(float(np.percentile(expanded, 95)), rel=1e-12, abs=1e-12)
    assert r["n_prompts"] == int(n.sum())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=20))
def test_mean_std_matches_statistics(values):
    m, s = mean_std(values)
    assert m == pytest.approx(statistics.fmean(values), abs=1e-6)
    assert s == pytest.approx(statistics.stdev(values), rel=1e-6, abs=1e-6)
