"""The continual evaluation loop: learn experience t, route the test prompts of experiences 1..t over the
models seen so far, store the top-k predictions, score them, save. Repeat.

The evaluator never trusts a router: every answer is checked, a bad one stops the run with a message
naming the router, the experience and the prompt index, and everything finished before is kept on disk
(results JSON and predictions Parquet are rewritten atomically after every experience).
"""

from __future__ import annotations

import math
import random
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from . import __version__
from . import metrics as M
from .data import Benchmark, LabelRegistry
from .protocol import CheckpointableRouter, Router
from .results import (KS, LEVELS, DatasetRef, LevelSummary, Results, Timings, hardware, load_results,
                      save_results)

PREDICTION_SCHEMA = {"after_experience": pl.Int8, "test_experience": pl.Int8, "prompt_id": pl.String,
                     "model_ids": pl.List(pl.String), "scores": pl.List(pl.Float64)}
UNKNOWN_ID_POLICIES = ("error", "count")


class RouterCallError(RuntimeError):
    """A router raised, answered wrongly or too slowly. The message says which call."""


class ResumeError(RuntimeError):
    """An existing results file cannot be resumed with these settings."""


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and (when loaded) torch."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def _peak_rss_mb() -> float:
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    except ImportError:  # pragma: no cover - non-POSIX
        import psutil
        return psutil.Process().memory_info().rss / 2 ** 20


def _call(fn: Callable[[], Any], timeout: float | None, what: str) -> Any:
    """Run ``fn``; with a timeout it runs in a daemon thread and a late answer is an error."""
    if timeout is None:
        return fn()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise RouterCallError(f"{what} did not return within --timeout {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def check_rankings(answer: Any, n_prompts: int, top_k: int, seen: frozenset[str], on_unknown: str,
                   where: str, first_index: int) -> tuple[list[list[str]], list[list[float]]]:
    """Validate a ``route`` answer; return (ids, scores). ``where`` names the router and experience."""
    if not isinstance(answer, (list, tuple)) or len(answer) != n_prompts:
        got = f"{len(answer)} rankings" if isinstance(answer, (list, tuple)) else type(answer).__name__
        raise RouterCallError(f"{where}: route() returned {got} for {n_prompts} prompts "
                              f"(prompt indices {first_index}..{first_index + n_prompts - 1})")
    ids_out, scores_out = [], []
    for offset, ranking in enumerate(answer):
        at = f"{where}, prompt index {first_index + offset}"
        if not isinstance(ranking, (list, tuple)) or not ranking:
            raise RouterCallError(f"{at}: expected a non-empty list of (model_id, score) pairs, got {ranking!r:.80}")
        if len(ranking) > top_k:
            raise RouterCallError(f"{at}: {len(ranking)} predictions, more than top_k={top_k}")
        ids, scores = [], []
        for pair in ranking:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise RouterCallError(f"{at}: expected (model_id, score) pairs, got {pair!r:.80}")
            model_id, score = pair
            if not isinstance(model_id, str):
                raise RouterCallError(f"{at}: model id {model_id!r:.60} is a {type(model_id).__name__}, not a str")
            try:
                score = float(score)
            except (TypeError, ValueError):
                raise RouterCallError(f"{at}: score {score!r:.60} for '{model_id}' is not a number") from None
            if not math.isfinite(score):
                raise RouterCallError(f"{at}: score for '{model_id}' is {score}")
            if model_id not in seen and on_unknown == "error":
                raise RouterCallError(f"{at}: '{model_id}' is not a model seen so far (use --on-unknown-id count "
                                      "to score hallucinated ids instead of failing)")
            ids.append(model_id)
            scores.append(score)
        if len(set(ids)) != len(ids):
            dup = next(m for m in ids if ids.count(m) > 1)
            raise RouterCallError(f"{at}: model id '{dup}' appears twice in one ranking")
        ids_out.append(ids)
        scores_out.append(scores)
    return ids_out, scores_out


# ---------------------------------------------------------------------------------------------- scoring

def _level_labels(registry: LabelRegistry, level: str):
    return {"model": None, "family": registry.families, "domain": registry.domains}[level]


def _summary(matrix: np.ndarray, zero_shot: Sequence[float] | None = None) -> LevelSummary:
    def num(x: float) -> float | None:
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

    return LevelSummary(final_average_accuracy=float(M.final_average_accuracy(matrix)),
                        stream_average_accuracy=float(M.stream_average_accuracy(matrix)),
                        forgetting=num(M.forgetting(matrix)), max_forgetting=num(M.max_forgetting(matrix)),
                        backward_transfer=num(M.backward_transfer(matrix)),
                        forward_transfer=num(M.forward_transfer(matrix, zero_shot))
                        if zero_shot is not None and matrix.shape[0] > 1 else None)


def _matrix_json(matrix: np.ndarray) -> list[list[float | None]]:
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


# ----------------------------------------------------------------------------------------- the loop

def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "router"


@dataclass
class RunPaths:
    results: Path
    predictions: Path
    checkpoints: Path

    @classmethod
    def for_run(cls, out_dir: Path, router_name: str, benchmark: Benchmark, seed: int) -> RunPaths:
        stem = f"{slug(router_name)}__{benchmark.name}__seed{seed}"
        return cls(out_dir / f"{stem}.json", out_dir / f"{stem}.predictions.parquet", out_dir / f"{stem}.checkpoints")


def _atomic_parquet(df: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    df.write_parquet(tmp)
    tmp.replace(path)


def evaluate(router: Router, benchmark: Benchmark, out_dir: str | Path, *, seed: int = 0, top_k: int = 10,
             batch_size: int = 64, timeout: float | None = None, resume: bool = False,
             on_unknown_id: str = "error", progress: bool = True) -> Results:
    """Run the protocol for ``router`` on ``benchmark``; write results JSON + predictions into ``out_dir``.

    Only routers that declare ``needs_gold = True`` (the oracle references and oracle-domain retrieval
    variants) receive the test labels, through ``route_with_gold(prompts, top_k, gold_rows)``.
    """
    if not isinstance(router, Router):
        raise TypeError(f"{type(router).__name__} does not implement the Router protocol "
                        "(needs `meta`, `learn(experience)` and `route(prompts, top_k)`)")
    if on_unknown_id not in UNKNOWN_ID_POLICIES:
        raise ValueError(f"on_unknown_id must be one of {UNKNOWN_ID_POLICIES}")
    name = router.meta.name
    gold_access = bool(getattr(router, "needs_gold", False))
    paths = RunPaths.for_run(Path(out_dir), name, benchmark, seed)
    paths.results.parent.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    T = benchmark.n_experiences
    predictions = pl.DataFrame(schema=PREDICTION_SCHEMA)
    learn_s: list[float] = []
    route_s: list[float] = []
    call_seconds: list[float] = []
    call_sizes: list[int] = []
    start = 0
    if resume and paths.results.exists():
        start, predictions, learn_s, route_s = _resume_state(router, benchmark, paths, seed, top_k, progress)
    elif paths.results.exists() and not resume:
        raise ResumeError(f"{paths.results} exists; pass --resume to continue it or --overwrite to start again.")
    for t in range(start + 1, T + 1):
        experience = benchmark.train_stream[t - 1]
        where = f"router '{name}', experience {t}"
        t0 = time.perf_counter()
        try:
            _call(lambda: router.learn(experience), None, f"{where}: learn()")
        except RouterCallError:
            raise
        except Exception as err:
            raise RouterCallError(f"{where}: learn() raised {type(err).__name__}: {err}") from err
        learn_s.append(time.perf_counter() - t0)
        if isinstance(router, CheckpointableRouter):
            router.save(paths.checkpoints / f"after_{t}")
        seen = benchmark.label_registry(t).model_ids
        rows = []
        spent = 0.0
        tests = [(j, benchmark.test_set(j)) for j in range(1, t + 1)]
        bar = tqdm(total=sum(g.height for _, g in tests), desc=f"experience {t}/{T}: routing", unit="prompt",
                   disable=not progress, leave=False)
        for j, gold in tests:
            prompts = gold["prompt"].to_list()
            for lo in range(0, len(prompts), batch_size):
                batch = prompts[lo:lo + batch_size]
                at = f"{where}, test set {j}"
                c0 = time.perf_counter()
                try:
                    if gold_access:
                        answer = _call(lambda: router.route_with_gold(batch, top_k, gold.slice(lo, len(batch))),
                                       timeout, f"{at}: route()")
                    else:
                        answer = _call(lambda: router.route(batch, top_k), timeout,
                                       f"{at}, prompt indices {lo}..{lo + len(batch) - 1}: route()")
                except RouterCallError:
                    raise
                except Exception as err:
                    raise RouterCallError(f"{at}, prompt indices {lo}..{lo + len(batch) - 1}: route() raised "
                                          f"{type(err).__name__}: {err}") from err
                elapsed = time.perf_counter() - c0
                spent += elapsed
                call_seconds.append(elapsed)
                call_sizes.append(len(batch))
                ids, scores = check_rankings(answer, len(batch), top_k, seen, on_unknown_id, at, lo)
                rows.extend({"after_experience": t, "test_experience": j, "prompt_id": pid, "model_ids": i,
                             "scores": s} for pid, i, s in zip(gold["prompt_id"][lo:lo + len(batch)], ids, scores))
                bar.update(len(batch))
        bar.close()
        route_s.append(spent)
        predictions = pl.concat([predictions, pl.DataFrame(rows, schema=PREDICTION_SCHEMA)])
        _atomic_parquet(predictions, paths.predictions)
        results = build_results(router, benchmark, predictions, t, seed, top_k, learn_s, route_s,
                                call_seconds, call_sizes, paths)
        save_results(results, paths.results)
    return load_results(paths.results) if start == T else results


def build_results(router: Router, benchmark: Benchmark, predictions: pl.DataFrame, finished: int, seed: int,
                  top_k: int, learn_s: list[float], route_s: list[float], call_seconds: list[float],
                  call_sizes: list[int], paths: RunPaths) -> Results:
    scores = score_predictions(predictions, benchmark, finished)
    refs = reference_matrices(benchmark, finished)
    zero_shot = {lv: np.diag(refs["random"][lv]) for lv in LEVELS}
    lat = M.latency_summary(call_seconds, call_sizes) if call_seconds else {}
    return Results(
        cmrbench_version=__version__,
        dataset=DatasetRef(name=benchmark.manifest["dataset"], version=benchmark.manifest["dataset_version"],
                           stream=benchmark.manifest["stream"], n_experiences=benchmark.n_experiences,
                           manifest_sha256=benchmark.manifest_sha256, folder=benchmark.folder.name,
                           eval_split=benchmark.eval_split),
        router=router.meta, seed=seed, top_k=top_k, hardware=hardware(),
        status="complete" if finished == benchmark.n_experiences else "partial", finished_experiences=finished,
        matrices={lv: {k: _matrix_json(m) for k, m in per.items()} for lv, per in scores.matrices.items()},
        summary={lv: _summary(scores.matrices[lv]["acc@1"], zero_shot[lv]) for lv in LEVELS},
        hallucination_rate=scores.hallucination_rate, future_leak_rate=scores.future_leak_rate,
        reference_rows={name: {lv: _summary(m) for lv, m in per.items()} for name, per in refs.items()},
        timings=Timings(learn_seconds=learn_s, route_seconds=route_s,
                        latency_p50_ms=1000 * lat["p50_seconds_per_prompt"] if lat else None,
                        latency_p95_ms=1000 * lat["p95_seconds_per_prompt"] if lat else None,
                        throughput_prompts_per_s=lat.get("throughput_prompts_per_second"),
                        peak_rss_mb=_peak_rss_mb()),
        predictions_file=paths.predictions.name,
    )


def _resume_state(router: Router, benchmark: Benchmark, paths: RunPaths, seed: int, top_k: int,
                  progress: bool) -> tuple[int, pl.DataFrame, list[float], list[float]]:
    """Bring ``router`` back to the state after the last finished experience."""
    previous = load_results(paths.results)
    if previous.dataset.manifest_sha256 != benchmark.manifest_sha256:
        raise ResumeError(f"{paths.results} was computed on another dataset build; start a new run.")
    if previous.dataset.eval_split != benchmark.eval_split:
        raise ResumeError(f"{paths.results} scored the {previous.dataset.eval_split} split, this run the "
                          f"{benchmark.eval_split} split; start a new run.")
    if (previous.seed, previous.top_k, previous.router.name) != (seed, top_k, router.meta.name):
        raise ResumeError(f"{paths.results}: seed/top_k/router differ from this run; start a new run.")
    done = previous.finished_experiences
    predictions = pl.read_parquet(paths.predictions).filter(pl.col("after_experience") <= done)
    checkpoint = paths.checkpoints / f"after_{done}"
    if isinstance(router, CheckpointableRouter) and checkpoint.is_dir():
        router.load(checkpoint)
    else:  # re-learn finished experiences (deterministic under the same seed); no re-routing
        for t in tqdm(range(1, done + 1), desc="resume: re-learning", disable=not progress, leave=False):
            router.learn(benchmark.train_stream[t - 1])
    return done, predictions, list(previous.timings.learn_seconds), list(previous.timings.route_seconds)
