"""Scoring stored predictions: every number of a results file that is not a measurement (timings, hardware)
is a pure function of its predictions Parquet and the dataset build.

:func:`validate_predictions` checks a predictions table covers exactly the prompts it must (each test prompt
of E_1..E_t once after each experience t, nothing else); :func:`derived_fields` computes the matrices,
summaries, hallucination / future-leak rates and reference rows from it. The evaluator writes results with
these functions and :func:`cmrbench.analysis.verify` recomputes them, so a results file whose numbers were
edited, or whose predictions were dropped, duplicated or redirected, is caught.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import polars as pl

from . import metrics as M
from .data import Benchmark, LabelRegistry
from .results import KS, LEVELS, LevelSummary

PREDICTION_SCHEMA = {"after_experience": pl.Int8, "test_experience": pl.Int8, "prompt_id": pl.String,
                     "model_ids": pl.List(pl.String), "scores": pl.List(pl.Float64)}


class PredictionsError(ValueError):
    """A predictions table does not cover exactly the prompts it must, or holds malformed rankings."""


def validate_predictions(predictions: pl.DataFrame, benchmark: Benchmark, finished: int, source: str = "") -> None:
    """Refuse a predictions table that is not exactly one ranking per (experience t <= finished, test prompt of
    E_1..E_t), each a non-empty list of string ids with as many finite scores. ``source`` names the file."""
    where = f"{source}: " if source else ""
    missing_cols = sorted(set(PREDICTION_SCHEMA) - set(predictions.columns))
    if missing_cols:
        raise PredictionsError(f"{where}predictions lack columns {missing_cols}")
    key = ["after_experience", "test_experience", "prompt_id"]
    if predictions.select(key).null_count().sum_horizontal()[0]:
        raise PredictionsError(f"{where}predictions have null experience or prompt ids")
    dup = predictions.group_by(key).len().filter(pl.col("len") > 1)
    if dup.height:
        t, j, pid, n = dup.sort(key).row(0)
        raise PredictionsError(f"{where}prompt {pid} of experience {j} is predicted {n} times after experience {t}")
    expected = pl.concat([benchmark.test_set(j).select("prompt_id").with_columns(
        pl.lit(t, dtype=pl.Int8).alias("after_experience"), pl.lit(j, dtype=pl.Int8).alias("test_experience"))
        for t in range(1, finished + 1) for j in range(1, t + 1)]).select(key)
    got = predictions.select(key).with_columns(pl.col("after_experience").cast(pl.Int8),
                                               pl.col("test_experience").cast(pl.Int8))
    extra = got.join(expected, on=key, how="anti")
    if extra.height:
        t, j, pid = extra.sort(key).row(0)
        raise PredictionsError(f"{where}{extra.height} prediction rows are not test prompts the run had to route, "
                               f"e.g. prompt {pid} as experience {j} after experience {t}")
    lacking = expected.join(got, on=key, how="anti")
    if lacking.height:
        t, j, pid = lacking.sort(key).row(0)
        raise PredictionsError(f"{where}{lacking.height} test prompts have no prediction, e.g. prompt {pid} of "
                               f"experience {j} after experience {t}")
    ids, scores = predictions["model_ids"], predictions["scores"]
    bad = (ids.is_null() | (ids.list.len() == 0) | (ids.list.len() != scores.list.len())
           | (ids.list.eval(pl.element().is_null()).list.any()))
    if bad.any():
        pid = predictions.filter(bad)["prompt_id"][0]
        raise PredictionsError(f"{where}the ranking of prompt {pid} is empty, has null ids, or ids and scores "
                               "of different lengths")
    flat = scores.explode().drop_nulls()
    if flat.len() != scores.list.len().sum() or not bool(flat.is_finite().all()):
        raise PredictionsError(f"{where}predictions hold null or non-finite scores")


def _level_labels(registry: LabelRegistry, level: str):
    return {"model": None, "family": registry.families, "domain": registry.domains}[level]


def summarize(matrix: np.ndarray, zero_shot: Sequence[float] | None = None) -> LevelSummary:
    def num(x: float) -> float | None:
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

    return LevelSummary(final_average_accuracy=float(M.final_average_accuracy(matrix)),
                        stream_average_accuracy=float(M.stream_average_accuracy(matrix)),
                        forgetting=num(M.forgetting(matrix)), max_forgetting=num(M.max_forgetting(matrix)),
                        backward_transfer=num(M.backward_transfer(matrix)),
                        forward_transfer=num(M.forward_transfer(matrix, zero_shot))
                        if zero_shot is not None and matrix.shape[0] > 1 else None)


def matrix_json(matrix: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(x) else float(x) for x in row] for row in matrix]


@dataclass
class Scores:
    matrices: dict[str, dict[str, np.ndarray]]
    hallucination_rate: list[float]
    future_leak_rate: list[float]


def score_predictions(predictions: pl.DataFrame, benchmark: Benchmark, finished: int) -> Scores:
    """Every metric from stored predictions alone (pure: re-scoring a results file gives the same numbers)."""
    cells: dict[str, dict[str, dict[tuple[int, int], float]]] = {
        lv: {f"acc@{k}": {} for k in KS} | ({"mrr@10": {}} if lv == "model" else {}) for lv in LEVELS}
    halluc, leak = [], []
    all_models = set().union(*(benchmark.experience_models(k) for k in range(1, benchmark.n_experiences + 1)))
    for t in range(1, finished + 1):
        registry = benchmark.label_registry(t)
        future = all_models - registry.model_ids
        top1 = []
        for j in range(1, t + 1):
            gold = benchmark.test_set(j)
            got = predictions.filter((pl.col("after_experience") == t) & (pl.col("test_experience") == j))
            joined = gold.join(got.select("prompt_id", "model_ids"), on="prompt_id", how="left")
            if joined["model_ids"].null_count():
                missing = joined.filter(pl.col("model_ids").is_null())["prompt_id"][0]
                raise ValueError(f"predictions after experience {t} lack test prompt {missing} of experience {j}")
            ranked = joined["model_ids"].to_list()
            top1.extend(r[0] for r in ranked)
            for level in LEVELS:
                gold_col = joined[{"model": "model_id", "family": "family", "domain": "domain"}[level]].to_list()
                labels = _level_labels(registry, level)
                for k in KS:
                    cells[level][f"acc@{k}"][(t - 1, j - 1)] = float(M.hits_at_k(ranked, gold_col, k, labels).mean())
                if level == "model":
                    cells[level]["mrr@10"][(t - 1, j - 1)] = float(M.reciprocal_rank(ranked, gold_col, 10).mean())
        halluc.append(float(M.hallucination_rate(top1, registry.model_ids)))
        leak.append(float(M.future_leak_rate(top1, future)))
    matrices = {lv: {name: M.accuracy_matrix(c, finished) for name, c in per.items()} for lv, per in cells.items()}
    return Scores(matrices, halluc, leak)


# ------------------------------------------------------------------------------------- reference rows

def reference_matrices(benchmark: Benchmark, finished: int) -> dict[str, dict[str, np.ndarray]]:
    """Expected top-1 accuracy matrices of the harness references, computed exactly (no sampling):
    random (uniform over models seen so far), most-frequent (the commonest training label so far),
    oracle (always right) and domain-oracle (uniform over seen models of the gold domain)."""
    out = {name: {lv: {} for lv in LEVELS} for name in ("random", "most-frequent", "oracle", "domain-oracle")}
    train_counts: Counter[str] = Counter()
    for t in range(1, finished + 1):
        train_counts.update(benchmark.split(t, "train")["model_id"].to_list())
        frequent = min(train_counts, key=lambda m: (-train_counts[m], m)) if train_counts else None
        reg = benchmark.label_registry(t)
        n_seen = len(reg.model_ids)
        carrying = {"family": Counter(f for fs in reg.families.values() for f in fs),
                    "domain": Counter(d for ds in reg.domains.values() for d in ds)}
        # models of each domain carrying each family, for the domain oracle
        fam_in_domain: Counter[tuple[str, str]] = Counter(
            (d, f) for m in reg.model_ids for d in reg.domains[m] for f in reg.families[m])
        for j in range(1, t + 1):
            gold = benchmark.test_set(j)
            cell = (t - 1, j - 1)
            rand = {"model": [], "family": [], "domain": []}
            freq = {"model": [], "family": [], "domain": []}
            dom = {"model": [], "family": [], "domain": []}
            for model_id, family, domain in zip(gold["model_id"], gold["family"], gold["domain"]):
                rand["model"].append(1 / n_seen)
                rand["family"].append(carrying["family"][family] / n_seen)
                rand["domain"].append(carrying["domain"][domain] / n_seen)
                freq["model"].append(float(frequent == model_id))
                freq["family"].append(float(frequent is not None and family in reg.families[frequent]))
                freq["domain"].append(float(frequent is not None and domain in reg.domains[frequent]))
                in_domain = carrying["domain"][domain]
                dom["model"].append(1 / in_domain if in_domain else 1 / n_seen)
                dom["family"].append(fam_in_domain[(domain, family)] / in_domain if in_domain
                                     else carrying["family"][family] / n_seen)
                dom["domain"].append(1.0 if in_domain else carrying["domain"][domain] / n_seen)
            for level in LEVELS:
                out["oracle"][level][cell] = 1.0
                out["random"][level][cell] = float(np.mean(rand[level]))
                out["most-frequent"][level][cell] = float(np.mean(freq[level]))
                out["domain-oracle"][level][cell] = float(np.mean(dom[level]))
    return {name: {lv: M.accuracy_matrix(c, finished) for lv, c in per.items()} for name, per in out.items()}


# ------------------------------------------------------------------------------------------ together

def derived_fields(predictions: pl.DataFrame, benchmark: Benchmark, finished: int) -> dict[str, Any]:
    """The fields of a results file computed from its predictions (validated first) and the build."""
    validate_predictions(predictions, benchmark, finished)
    scores = score_predictions(predictions, benchmark, finished)
    refs = reference_matrices(benchmark, finished)
    zero_shot = {lv: np.diag(refs["random"][lv]) for lv in LEVELS}
    return {
        "status": "complete" if finished == benchmark.n_experiences else "partial",
        "finished_experiences": finished,
        "matrices": {lv: {k: matrix_json(m) for k, m in per.items()} for lv, per in scores.matrices.items()},
        "summary": {lv: summarize(scores.matrices[lv]["acc@1"], zero_shot[lv]) for lv in LEVELS},
        "hallucination_rate": scores.hallucination_rate, "future_leak_rate": scores.future_leak_rate,
        "reference_rows": {name: {lv: summarize(m) for lv, m in per.items()} for name, per in refs.items()},
    }
