"""Working with finished results files: re-scoring from stored predictions and paired comparisons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from . import metrics as M
from .data import Benchmark
from .results import LEVELS, Results, load_results

_GOLD = {"model": "model_id", "family": "family", "domain": "domain"}


def _predictions(results: Results, results_path: Path) -> pl.DataFrame:
    path = Path(results_path).parent / results.predictions_file
    if not path.is_file():
        raise FileNotFoundError(f"{path} (predictions of {results_path}) is missing")
    return pl.read_parquet(path)


def _benchmark_for(results: Results, data: Path) -> Benchmark:
    bench = Benchmark(data, eval_split=results.dataset.eval_split)
    if bench.manifest_sha256 != results.dataset.manifest_sha256:
        raise ValueError(f"{data} is not the dataset build these results were computed on "
                         f"(manifest sha256 {bench.manifest_sha256[:12]} vs {results.dataset.manifest_sha256[:12]})")
    return bench


def rescore(results_path: Path, data: Path) -> dict[str, dict[str, list[list[float | None]]]]:
    """Recompute the accuracy matrices of a results file from its predictions Parquet."""
    from .evaluate import _matrix_json, score_predictions
    results = load_results(results_path)
    bench = _benchmark_for(results, data)
    scores = score_predictions(_predictions(results, results_path), bench, results.finished_experiences)
    return {lv: {k: _matrix_json(m) for k, m in per.items()} for lv, per in scores.matrices.items()}


def per_prompt_correct(results_path: Path, bench: Benchmark) -> dict[str, pl.DataFrame]:
    """Top-1 correctness per test prompt after the last finished experience, per level."""
    results = load_results(results_path)
    t = results.finished_experiences
    preds = _predictions(results, results_path).filter(pl.col("after_experience") == t)
    registry = bench.label_registry(t)
    gold = pl.concat([bench.test_set(j) for j in range(1, t + 1)])
    joined = gold.join(preds.select("prompt_id", "model_ids"), on="prompt_id", how="inner")
    out = {}
    for level in LEVELS:
        labels = None if level == "model" else (registry.families if level == "family" else registry.domains)
        hits = M.hits_at_k(joined["model_ids"].to_list(), joined[_GOLD[level]].to_list(), 1, labels)
        out[level] = pl.DataFrame({"prompt_id": joined["prompt_id"], "correct": hits.astype(np.float64)})
    return out


def compare(a_path: Path, b_path: Path, data: Path, n_resamples: int = 10000, seed: int = 0) -> dict[str, dict]:
    """Paired bootstrap of a minus b on the prompts both results files routed after their last experience."""
    a, b = load_results(a_path), load_results(b_path)
    if a.dataset.manifest_sha256 != b.dataset.manifest_sha256:
        raise ValueError(f"{a_path} and {b_path} were computed on different dataset builds")
    if a.finished_experiences != b.finished_experiences:
        raise ValueError(f"{a_path} finished {a.finished_experiences} experiences, {b_path} "
                         f"{b.finished_experiences}: compare runs at the same point")
    bench = _benchmark_for(a, data)
    ca, cb = per_prompt_correct(a_path, bench), per_prompt_correct(b_path, bench)
    out = {}
    for level in LEVELS:
        both = ca[level].join(cb[level], on="prompt_id", suffix="_b")
        out[level] = M.paired_bootstrap(both["correct"].to_numpy(), both["correct_b"].to_numpy(),
                                        n_resamples=n_resamples, seed=seed)
    return out
