"""CARvE's parts on small hand-made inputs: candidate sets, soft targets, mining, replay, anchoring, batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cmrbench.baselines.carve.anchoring import embedding_anchor_loss, projection_anchor_loss
from cmrbench.baselines.carve.candidates import (CandidateConfig, HardNegativeCache, ModelIndex, build_candidates,
                                                 soft_targets)
from cmrbench.baselines.carve.coreset import METHODS, select_replay
from cmrbench.baselines.carve.sampler import domain_batches

CATS = {"CV A": "CV", "CV B": "CV", "NLP C": "NLP", "NLP D": "NLP", "Audio E": "Audio"}


def _index(n_per_domain: int = 20) -> ModelIndex:
    return ModelIndex([d for d in CATS for _ in range(n_per_domain)], CATS)


def test_candidate_mix_positive_first_no_duplicates():
    index = _index()
    rng = np.random.default_rng(0)
    cands = build_candidates(5, "CV A", index, CandidateConfig(k=32, hard=4, semantic=12, far=6), rng,
                             hard_pool=[21, 22, 23, 24, 25])
    assert cands[0] == 5 and len(cands) == 32 and len(set(cands.tolist())) == 32
    assert set(cands[1:5].tolist()) <= {21, 22, 23, 24, 25}                 # hard first
    domains = [index.domain_of[r] for r in cands]
    assert domains.count("CV A") >= 12                                        # semantic: same domain
    assert sum(d.startswith(("NLP", "Audio")) for d in domains) >= 6          # far: other categories


def test_category_pool_draws_semantic_negatives_across_the_whole_category():
    """The authors' code: semantic negatives uniform over the gold domain's category, so most come from its
    sibling domains, not from the gold domain first as in the default pool."""
    index = _index(n_per_domain=60)
    config = CandidateConfig(k=40, hard=0, semantic=30, far=6, semantic_pool="category")
    same, sibling = [], []
    for seed in range(20):
        cands = build_candidates(5, "CV A", index, config, np.random.default_rng(seed))
        assert cands[0] == 5 and len(set(cands.tolist())) == 40
        domains = [index.domain_of[r] for r in cands[1:]]
        same.append(domains.count("CV A"))
        sibling.append(domains.count("CV B"))
    assert 10 < np.mean(same) < 20 and 10 < np.mean(sibling) < 20       # half of 30 (+ a few far / fill)
    default = build_candidates(5, "CV A", index, CandidateConfig(k=40, hard=0, semantic=30, far=6),
                               np.random.default_rng(0))
    assert [index.domain_of[r] for r in default[1:31]].count("CV A") == 30
    with pytest.raises(ValueError, match="semantic_pool"):
        build_candidates(5, "CV A", index, CandidateConfig(semantic_pool="nearby"), np.random.default_rng(0))


@settings(max_examples=40, deadline=None)
@given(k=st.integers(2, 120), gold=st.integers(0, 99), seed=st.integers(0, 10),
       pool=st.sampled_from(["domain", "category"]))
def test_candidates_never_exceed_the_registry(k, gold, seed, pool):
    index = _index()
    cands = build_candidates(gold, index.domain_of[gold], index, CandidateConfig(k=k, semantic_pool=pool),
                             np.random.default_rng(seed))
    assert cands[0] == gold and len(cands) == min(k, 100) and len(set(cands.tolist())) == len(cands)


@settings(max_examples=40, deadline=None)
@given(k=st.integers(2, 80), seed=st.integers(0, 10), pool=st.sampled_from(["domain", "category"]),
       kept=st.sets(st.integers(0, 99), min_size=1, max_size=60))
def test_scoped_candidates_stay_in_their_pool(k, seed, pool, kept):
    """softmax_scope: an example is never contrasted with a model outside its pool, not even a mined one."""
    gold = min(kept)
    domains = [d for d in CATS for _ in range(20)]
    index = ModelIndex(domains, CATS, pool=kept)
    cands = build_candidates(gold, domains[gold], index, CandidateConfig(k=k, semantic_pool=pool),
                             np.random.default_rng(seed), hard_pool=list(range(100)))
    assert cands[0] == gold and set(cands.tolist()) <= kept
    assert len(cands) == min(k, len(kept)) and len(set(cands.tolist())) == len(cands)


def test_soft_targets_sum_to_one_and_favour_neighbours():
    index = _index(4)
    families = [f"fam{r % 3}" for r in range(index.size)]
    cands = np.array([0, 1, 2, 9, 13])
    t = soft_targets(cands, "CV A", index, families, families[0], epsilon=0.02)
    assert t.sum() == pytest.approx(1.0) and t[0] == pytest.approx(0.98)
    assert t[1] == t[2] > 0 and t[4] == 0  # same domain rows share epsilon; row 13 is neither
    assert soft_targets(np.array([0, 16]), "CV A", index, ["x"] * 20, "y")[0] == 1.0


def test_hard_negative_cache_mines_top_confusers():
    cache = HardNegativeCache(top=2, every=100)
    scores = np.array([[5.0, 4.0, 1.0, 3.0]])
    assert cache.due(0)
    cache.mine(0, [("CV A", 0)], scores)
    assert cache.get("CV A", 0) == [1, 3] and not cache.due(99) and cache.due(100)


@pytest.mark.parametrize("method", METHODS)
def test_replay_budget_quotas_and_model_cap(method):
    rng = np.random.default_rng(1)
    n = 400
    domains = ["big"] * 300 + ["small"] * 100
    models = [f"m{i % 40}" for i in range(300)] + [f"s{i % 5}" for i in range(100)]
    emb = rng.normal(size=(n, 8))
    picked = select_replay(emb, models, domains, budget=0.1, method=method, floor=5, per_model=3, seed=0)
    assert len(picked) == 40 and len(set(picked)) == 40
    assert sum(domains[i] == "small" for i in picked) >= 5
    per_model = {}
    for i in picked:
        per_model[models[i]] = per_model.get(models[i], 0) + 1
    assert max(per_model.values()) <= 3
    assert picked == select_replay(emb, models, domains, budget=0.1, method=method, seed=0)


def test_fps_spreads_out_more_than_random():
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(300, 16))
    ids, doms = [str(i) for i in range(300)], ["d"] * 300
    def spread(idx):
        x = emb[idx] / np.linalg.norm(emb[idx], axis=1, keepdims=True)
        sims = x @ x.T
        return -np.max(sims - 2 * np.eye(len(idx)), axis=1).mean()
    fps = select_replay(emb, ids, doms, 0.1, "fps")
    rnd = select_replay(emb, ids, doms, 0.1, "random")
    assert spread(fps) > spread(rnd)


def test_anchoring_losses_zero_at_the_snapshot_and_positive_after_drift():
    rows = torch.randn(10, 4)
    snap = rows[:6].clone()
    assert embedding_anchor_loss(rows, snap).item() == pytest.approx(0.0, abs=1e-6)
    moved = rows.clone()
    moved[7:] += 5  # new rows are free
    assert embedding_anchor_loss(moved, snap).item() == pytest.approx(0.0, abs=1e-6)
    moved[0] = -moved[0]
    assert embedding_anchor_loss(moved, snap).item() == pytest.approx(2 / 6, rel=1e-5)
    w = {"w": torch.ones(2, 2)}
    assert projection_anchor_loss(w, {"w": torch.ones(2, 2)}).item() == 0.0
    assert projection_anchor_loss({"w": torch.full((2, 2), 3.0)}, w).item() == pytest.approx(4.0)


def test_domain_batches_cover_each_example_once_with_few_domains():
    rng = np.random.default_rng(0)
    domains = ["a"] * 50 + ["b"] * 30 + ["c"] * 20 + ["d"] * 3
    batches = domain_batches(domains, 16, rng, domains_per_batch=2)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(domains)))
    assert sum(len({domains[i] for i in b}) <= 2 for b in batches) >= len(batches) - 2
