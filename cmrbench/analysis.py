"""Working with finished results files: verifying them against their predictions, paired comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from . import metrics as M
from .data import Benchmark
from .fileio import sha256_file
from .results import LEVELS, Results, load_results
from .scoring import PredictionsError, derived_fields

_GOLD = {"model": "model_id", "family": "family", "domain": "domain"}


def _predictions_path(results: Results, results_path: Path) -> Path:
    path = Path(results_path).parent / results.predictions_file
    if Path(results.predictions_file).name != results.predictions_file:
        raise ValueError(f"{results_path}: predictions_file must be a file name beside it, not "
                         f"{results.predictions_file!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} (predictions of {results_path}) is missing")
    return path


def _predictions(results: Results, results_path: Path) -> pl.DataFrame:
    path = _predictions_path(results, results_path)
    try:
        return pl.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - polars raises several types for a damaged file
        raise ValueError(f"{path} (predictions of {results_path}) cannot be read: {err}") from err


def benchmark_for(results: Results, data: Path) -> Benchmark:
    bench = Benchmark(data, eval_split=results.dataset.eval_split)
    if bench.manifest_sha256 != results.dataset.manifest_sha256:
        raise ValueError(f"{data} is not the dataset build these results were computed on "
                         f"(manifest sha256 {bench.manifest_sha256[:12]} vs {results.dataset.manifest_sha256[:12]})")
    return bench


class ResultsMismatchError(ValueError):
    """A results file's numbers are not those its predictions give on the build."""


def recompute(results_path: Path, data: Path | Benchmark) -> tuple[Results, dict[str, Any]]:
    """The stored results and every field recomputed from their predictions on the build (JSON form)."""
    results = load_results(results_path)
    bench = data if isinstance(data, Benchmark) else benchmark_for(results, data)
    if bench.manifest_sha256 != results.dataset.manifest_sha256 or bench.eval_split != results.dataset.eval_split:
        raise ValueError(f"{results_path} was computed on another build or split than {bench.folder}")
    predictions = _predictions(results, results_path)
    try:
        derived = derived_fields(predictions, bench, results.finished_experiences)
    except PredictionsError as err:
        raise PredictionsError(f"{Path(results_path).parent / results.predictions_file}: {err}") from None
    as_json = Results.model_validate({**results.model_dump(), **derived}).model_dump(mode="json")
    return results, {k: as_json[k] for k in derived}


# (sha256 of the results file, of its predictions, build manifest, split) -> what verify() accepted; content
# addressed, so a page that needs a file twice verifies it once and an edited file is verified anew
_VERIFIED: dict[tuple[str, str, str, str], Results] = {}


def _content_key(results_path: Path, bench: Benchmark) -> tuple[str, str, str, str] | None:
    try:
        predictions = _predictions_path(load_results(results_path), results_path)
        return sha256_file(results_path), sha256_file(predictions), bench.manifest_sha256, bench.eval_split
    except (OSError, ValueError):
        return None                 # verify() itself reports what is wrong


def verify(results_path: Path, data: Path | Benchmark) -> Results:
    """Load a results file only if every number in it is what its predictions give on the build.

    Refuses (naming the fields) a file whose matrices, summaries, rates, reference rows or status were edited,
    and (naming the prompt) one whose predictions are missing, duplicated, redirected or malformed.
    Timings and hardware are measurements and cannot be checked this way. Within a process, files with the
    same bytes as ones already verified on the same build are not recomputed.
    """
    key = _content_key(results_path, data) if isinstance(data, Benchmark) else None
    if key is not None and key in _VERIFIED:
        return _VERIFIED[key].model_copy(deep=True)
    results, derived = recompute(results_path, data)
    stored = results.model_dump(mode="json")
    differ = sorted(k for k, v in derived.items() if stored[k] != v)
    if differ:
        raise ResultsMismatchError(f"{results_path}: {', '.join(differ)} differ from what its predictions give on "
                                   "this build; the file was edited or corrupted (`cmrbench rescore --write` "
                                   "recomputes them)")
    if key is not None and key == _content_key(results_path, data):   # unchanged while it was checked
        _VERIFIED[key] = results.model_copy(deep=True)
    return results


def _final_predictions(results_path: Path, bench: Benchmark) -> tuple[int, pl.DataFrame]:
    """The verified predictions after the last finished experience, and that experience."""
    results = verify(results_path, bench)
    t = results.finished_experiences
    return t, _predictions(results, results_path).filter(pl.col("after_experience") == t)


def per_prompt_correct(results_path: Path, bench: Benchmark) -> pl.DataFrame:
    """Top-1 correctness (0/1) per test prompt after the last finished experience: columns ``prompt_id``,
    ``test_experience`` (the experience the prompt belongs to) and one per level (``model``, ``family``,
    ``domain``)."""
    t, preds = _final_predictions(results_path, bench)
    registry = bench.label_registry(t)
    gold = pl.concat([bench.test_set(j).with_columns(pl.lit(j).alias("test_experience")) for j in range(1, t + 1)])
    joined = gold.join(preds.select("prompt_id", "model_ids"), on="prompt_id", how="inner")
    columns = {"prompt_id": joined["prompt_id"], "test_experience": joined["test_experience"]}
    for level in LEVELS:
        labels = None if level == "model" else (registry.families if level == "family" else registry.domains)
        columns[level] = M.hits_at_k(joined["model_ids"].to_list(), joined[_GOLD[level]].to_list(), 1,
                                     labels).astype(np.float64)
    return pl.DataFrame(columns)


def final_average_intervals(correct: pl.DataFrame, best: pl.DataFrame | None = None, n_resamples: int = 2000,
                            seed: int = 0) -> dict[str, dict]:
    """Per level: a bootstrap confidence interval of the final average accuracy (prompts resampled within
    their test experience, so the statistic is the mean over experiences the tables show) and, with
    ``best`` (another router's correctness on the same prompts), a paired test of the difference.

    ``correct`` is :func:`per_prompt_correct`'s frame, or its mean over seeds (fractional correctness).
    Returns ``level -> {"mean", "ci_low", "ci_high"}`` plus ``"diff", "p_value"`` against ``best``.
    """
    out: dict[str, dict] = {}
    if best is not None:
        correct = correct.join(best.select("prompt_id", *[pl.col(lv).alias(f"{lv}_best") for lv in LEVELS]),
                               on="prompt_id", how="inner")
    strata = correct["test_experience"].to_numpy()
    for level in LEVELS:
        a = correct[level].to_numpy()
        alone = M.paired_bootstrap(a, np.zeros_like(a), n_resamples=n_resamples, seed=seed, strata=strata)
        out[level] = {"mean": alone["mean_a"], "ci_low": alone["ci_low"], "ci_high": alone["ci_high"]}
        if best is not None:
            paired = M.paired_bootstrap(a, correct[f"{level}_best"].to_numpy(), n_resamples=n_resamples,
                                        seed=seed, strata=strata)
            out[level] |= {"diff": paired["mean_diff"], "p_value": paired["p_value"]}
    return out


def _paired_benchmark(a_path: Path, b_path: Path, data: Path) -> Benchmark:
    """The build two results files were both computed on, at the same point of the stream."""
    a, b = load_results(a_path), load_results(b_path)
    if a.dataset.manifest_sha256 != b.dataset.manifest_sha256:
        raise ValueError(f"{a_path} and {b_path} were computed on different dataset builds")
    if a.finished_experiences != b.finished_experiences:
        raise ValueError(f"{a_path} finished {a.finished_experiences} experiences, {b_path} "
                         f"{b.finished_experiences}: compare runs at the same point")
    return benchmark_for(a, data)


def compare(a_path: Path, b_path: Path, data: Path, n_resamples: int = 10000, seed: int = 0) -> dict[str, dict]:
    """Paired bootstrap of a minus b on the prompts both results files routed after their last experience."""
    bench = _paired_benchmark(a_path, b_path, data)
    both = per_prompt_correct(a_path, bench).join(per_prompt_correct(b_path, bench), on="prompt_id", suffix="_b")
    return {level: M.paired_bootstrap(both[level].to_numpy(), both[f"{level}_b"].to_numpy(),
                                      n_resamples=n_resamples, seed=seed) for level in LEVELS}


def ranking_agreement(a_path: Path, b_path: Path, data: Path, k: int = 10) -> dict[str, float]:
    """How alike two routers rank, after their last experience, whatever the gold answers.

    ``top1``: share of prompts both send to the same first model; ``overlap@k``: mean share of the first
    ``k`` models that both lists hold (lists shorter than ``k`` count as ``k`` long).
    """
    bench = _paired_benchmark(a_path, b_path, data)
    (_, pa), (_, pb) = _final_predictions(a_path, bench), _final_predictions(b_path, bench)
    both = pa.select("prompt_id", "model_ids").join(pb.select("prompt_id", "model_ids"), on="prompt_id",
                                                      suffix="_b")
    top1, overlap = [], []
    for x, y in zip(both["model_ids"].to_list(), both["model_ids_b"].to_list()):
        top1.append(bool(x) and bool(y) and x[0] == y[0])
        overlap.append(len(set(x[:k]) & set(y[:k])) / k)
    return {"top1": float(np.mean(top1)), f"overlap@{k}": float(np.mean(overlap)), "n": len(top1)}


SLICES = ("source", "category", "modality", "test_experience", "gold_model", "domain")


def slices(results_path: Path, data: Path | Benchmark, correct: pl.DataFrame | None = None
           ) -> dict[str, dict[str, dict[str, float]]]:
    """Where a router succeeds and fails: top-1 accuracy (model, family, domain) after its last experience,
    broken down by the prompts' source dataset, domain category, modality, test experience, whether the gold
    model was new in the prompt's experience or seen before (``gold_model``), and domain.

    Returns ``slice -> value -> {"n": prompts, "model": acc, "family": acc, "domain": acc}`` (accuracies in
    [0, 1]); every number is recomputed from the verified predictions (or taken from ``correct``, the file's
    :func:`per_prompt_correct` already computed).
    """
    results = load_results(results_path)
    bench = data if isinstance(data, Benchmark) else benchmark_for(results, data)
    correct = per_prompt_correct(results_path, bench) if correct is None else correct
    t = results.finished_experiences
    earlier: set[str] = set()
    frames = []
    for j in range(1, t + 1):
        rows = bench.split(j, bench.eval_split)
        frames.append(rows.select(
            "prompt_id", "source", "category", "domain", pl.col("modality").fill_null("unlabelled"),
            pl.lit(str(j)).alias("test_experience"),
            pl.when(pl.col("model_id").is_in(list(earlier))).then(pl.lit("seen before"))
              .otherwise(pl.lit("new in its experience")).alias("gold_model")))
        earlier |= bench.experience_models(j)
    table = pl.concat(frames).join(correct.select("prompt_id", *[pl.col(lv).alias(f"top1_{lv}") for lv in LEVELS]),
                                   on="prompt_id", how="inner")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in SLICES:
        grouped = table.group_by(name).agg(pl.len().alias("n"), *[pl.col(f"top1_{lv}").mean() for lv in LEVELS])
        out[name] = {str(row[name]): {"n": int(row["n"]), **{lv: float(row[f"top1_{lv}"]) for lv in LEVELS}}
                     for row in grouped.sort(name).iter_rows(named=True)}
    return out
