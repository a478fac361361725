"""CARvE end to end on the synthetic hub, with each part switched on and off."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from cmrbench.baselines.carve.router import CarveRouter, TwoPhase, carve_10
from cmrbench.data import Benchmark
from cmrbench.harness import evaluate

TINY = dict(epochs=4, num_candidates=8, hard_negatives=2, semantic_negatives=3, far_negatives=2, mine_every=5,
            dim=32, batch_size=8, max_seq_len=24, freeze_layers=5, lr_projection=0.005, lr_registry=0.05)


@pytest.fixture(scope="module")
def bench(synthetic_hub) -> Benchmark:
    return Benchmark(synthetic_hub)


def test_carve_runs_and_learns(bench, tmp_path):
    res = evaluate(carve_10(seed=0, **TINY), bench, tmp_path, progress=False)
    assert res.status == "complete" and res.router.name == "carve-10"
    assert res.summary["domain"].final_average_accuracy > res.reference_rows["random"]["domain"].final_average_accuracy
    assert res.summary["model"].final_average_accuracy > 2 * res.reference_rows["random"]["model"].final_average_accuracy
    params = res.router.parameters
    assert params["anchoring"] == "both" and params["replay_selection"] == "fps" and params["num_candidates"] == 8


def test_same_seed_same_predictions(bench, tmp_path):
    a = evaluate(carve_10(seed=1, **TINY), bench, tmp_path / "a", seed=1, progress=False)
    b = evaluate(carve_10(seed=1, **TINY), bench, tmp_path / "b", seed=1, progress=False)
    assert pl.read_parquet(tmp_path / "a" / a.predictions_file).equals(pl.read_parquet(tmp_path / "b" / b.predictions_file))


@pytest.mark.parametrize("ablation", [dict(anchoring="none"), dict(anchoring="embedding"),
                                      dict(anchoring="projection", replay_selection="random"),
                                      dict(init="card", replay_selection="herding", two_phase=False),
                                      dict(candidates="all", domains_per_batch=0)])
def test_ablations_run(bench, tmp_path, ablation):
    res = evaluate(carve_10(seed=0, **{**TINY, **ablation}), bench, tmp_path, progress=False)
    assert res.status == "complete"
    assert all(res.router.parameters[k] == v for k, v in ablation.items())


def test_phase_one_freezes_the_backbone_and_boosts_replay(bench):
    router = carve_10(seed=0, **TINY)
    router.learn(bench.train_stream[0])
    seen = []

    phase = router.plugin("two-phase")

    class Spy(TwoPhase):
        def __call__(self, trainer, step, total):
            super().__call__(trainer, step, total)
            seen.append((step, trainer.trainable["backbone"], phase.in_phase1, trainer.extra_weight is not None))

    router.callbacks = lambda experience: [Spy(router.cfg, phase)]
    before = {k: v.clone() for k, v in router.net.tracked_parameters().items() if router.net.group_of(k) == "backbone"}
    router.learn(bench.train_stream[1])
    boundary = next(step for step, _, phase1, _ in seen if not phase1)
    assert boundary > 0
    assert all(not backbone and boost for step, backbone, phase1, boost in seen if step < boundary)
    assert all(backbone and not boost for step, backbone, phase1, boost in seen if step >= boundary)
    after = router.net.tracked_parameters()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # phase 2 trains the backbone


def test_unknown_anchoring_is_rejected():
    with pytest.raises(ValueError, match="anchoring must be one of"):
        CarveRouter(anchoring="sometimes")


def test_candidate_and_batch_switches(bench):
    from cmrbench.baselines.carve.router import CarveCandidates
    from cmrbench.baselines.trainable.training import AllModels, shuffled_batches
    exp = bench.train_stream[0]
    router = carve_10(seed=0, **TINY)
    router.learn(exp)
    assert isinstance(router.candidate_sampler(exp, exp.train), CarveCandidates)
    plain = carve_10(seed=0, **{**TINY, "candidates": "all", "domains_per_batch": 0})
    plain.learn(exp)
    assert isinstance(plain.candidate_sampler(exp, exp.train), AllModels)
    frame = plain.training_examples(exp, plain.current_examples(exp))
    plain_batches = plain.batch_sampler(exp)(frame, 0, torch.Generator().manual_seed(0))
    assert plain_batches == shuffled_batches(TINY["batch_size"])(frame, 0, torch.Generator().manual_seed(0))
    assert router.batch_sampler(exp)(frame, 0, torch.Generator().manual_seed(0)) != plain_batches
