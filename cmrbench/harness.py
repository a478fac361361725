"""The continual evaluation loop: learn experience t, route the test prompts of experiences 1..t over the
models seen so far, store the top-k predictions, score them, save. Repeat.

The evaluator never trusts a router: every answer is checked, a bad one stops the run with a message
naming the router, the experience and the prompt index, and everything finished before is kept on disk
(results JSON and predictions Parquet are rewritten atomically after every experience).
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import re
import shutil
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from . import __version__
from . import metrics as M
from .data import Benchmark
from .distributed import barrier, init_from_env, is_main
from .fileio import atomic_write, exclusive_lock
from .isolation import IsolatedRouter
from .loggers import Logger
from .progress import switched as progress_switched
from .protocol import CheckpointableRouter, Router
from .results import DatasetRef, Results, RunRecord, Timings, hardware, load_results, run_record, save_results
from .scoring import PREDICTION_SCHEMA, derived_fields

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
    """Run ``fn``; with a timeout it runs in a daemon thread and a late answer is an error. A router that
    exits (``sys.exit``) is an error too, never a silent end of the run with exit code 0."""
    if timeout is None:
        try:
            return fn()
        except SystemExit as err:
            raise RouterCallError(f"{what} called sys.exit({err.code!r}); a router must return or raise") from None
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except SystemExit as err:
            box["error"] = RouterCallError(f"{what} called sys.exit({err.code!r}); a router must return or raise")
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
            if type(model_id) is not str:   # not a str subclass either: ids are stored and compared as plain text
                raise RouterCallError(f"{at}: model id {model_id!r:.60} is a {type(model_id).__name__}, not a str")
            if isinstance(score, (bool, np.bool_)) or not isinstance(score, (int, float, np.integer, np.floating)):
                raise RouterCallError(f"{at}: score {score!r:.60} for '{model_id}' is a {type(score).__name__}, "
                                      "not a number")
            try:
                score = float(score)
            except OverflowError:
                raise RouterCallError(f"{at}: score for '{model_id}' does not fit a float") from None
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


# ----------------------------------------------------------------------------------------- the loop

def slug(text: str) -> str:
    """A file-name-safe form of a router name that is unique to it: names that are already safe stay as they are;
    others (and names starting with '.', which scans would skip) get a short hash of the exact name appended,
    so two names that sanitise alike never share a results file."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "router"
    return safe if safe == text else f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


@dataclass
class RunPaths:
    results: Path
    predictions: Path
    checkpoints: Path
    lock: Path                           # held by the process writing the run (exclusive_lock)

    @classmethod
    def for_run(cls, out_dir: Path, router_name: str, benchmark: Benchmark, seed: int) -> RunPaths:
        stem = f"{slug(router_name)}__{slug(benchmark.name)}__seed{seed}"
        return cls(out_dir / f"{stem}.json", out_dir / f"{stem}.predictions.parquet", out_dir / f"{stem}.checkpoints",
                   out_dir / f".{stem}.lock")

    def discard(self) -> None:
        """Delete this run's own files, found by their exact names (nothing else in the folder)."""
        for p in (self.results, self.predictions):
            p.unlink(missing_ok=True)
        shutil.rmtree(self.checkpoints, ignore_errors=True)


def _switching_progress(run: Callable[..., Results]) -> Callable[..., Results]:
    """Routers' own bars (:mod:`cmrbench.progress`) follow the run's ``progress`` argument while it lasts."""
    @functools.wraps(run)
    def wrapper(*args: Any, progress: bool = True, **kwargs: Any) -> Results:
        progress = progress and is_main()   # one set of bars, however many processes run
        with progress_switched(progress):
            return run(*args, progress=progress, **kwargs)
    return wrapper


@_switching_progress
def evaluate(router: Router, benchmark: Benchmark, out_dir: str | Path, *, seed: int = 0, top_k: int = 10,
             batch_size: int = 64, timeout: float | None = None, learn_timeout: float | None = None,
             resume: bool = False, overwrite: bool = False, on_unknown_id: str = "error", progress: bool = True,
             command: list[str] | None = None, router_spec: str | None = None,
             loggers: Sequence[Logger] = ()) -> Results:
    """Run the protocol for ``router`` on ``benchmark``; write results JSON + predictions into ``out_dir``.

    ``command`` and ``router_spec`` (the command line and the ``--router`` given) go into the run record.
    ``loggers`` (:mod:`cmrbench.loggers`) are called after every finished experience and closed at the end.

    ``overwrite`` deletes an earlier run of the same name (its results, predictions and checkpoints only) first.
    The writing process holds ``RunPaths.lock`` from before that until the run ends, so a second process
    started on the same run (same router name, benchmark and seed in ``out_dir``) stops at once with
    :class:`~cmrbench.fileio.LockedError` instead of deleting or interleaving the first one's files.

    ``timeout`` bounds each ``route`` call and ``learn_timeout`` each ``learn`` call (seconds; a late call stops
    the run with an error; the late call itself cannot be interrupted in this process, see ``--isolate``).

    Only routers that declare ``needs_gold = True`` (the oracle references and oracle-domain retrieval
    variants) receive the test labels, through ``route_with_gold(prompts, top_k, gold_rows)``.
    """
    if not isinstance(router, Router):
        raise TypeError(f"{type(router).__name__} does not implement the Router protocol "
                        "(needs `meta`, `learn(experience)` and `route(prompts, top_k)`)")
    if on_unknown_id not in UNKNOWN_ID_POLICIES:
        raise ValueError(f"on_unknown_id must be one of {UNKNOWN_ID_POLICIES}")
    if top_k < 1 or batch_size < 1:
        raise ValueError(f"top_k and batch_size must be at least 1 (got {top_k}, {batch_size})")
    for label, value in (("timeout", timeout), ("learn_timeout", learn_timeout)):
        if value is not None and not value > 0:
            raise ValueError(f"{label} must be a positive number of seconds, not {value}")
    name = router.meta.name
    gold_access = bool(getattr(router, "needs_gold", False))
    if gold_access and not router.meta.reference_row:
        raise RouterCallError(f"router '{name}' asks for the answer key (needs_gold = True) but is not a reference "
                              "row: only references such as the oracles receive test labels, and their meta says "
                              "reference_row=True so that no leaderboard ranks them. Drop needs_gold.")
    paths = RunPaths.for_run(Path(out_dir), name, benchmark, seed)
    init_from_env()                      # launched as several processes (torchrun, accelerate launch)
    main = is_main()                     # the one that writes and prints
    with exclusive_lock(paths.lock, f"run {paths.results.name}") if main else nullcontext():
        if overwrite and main:
            paths.discard()
        barrier()                        # the earlier run is gone before any process looks for it
        if main:
            paths.results.parent.mkdir(parents=True, exist_ok=True)
        seed_everything(seed)
        T = benchmark.n_experiences
        predictions = pl.DataFrame(schema=PREDICTION_SCHEMA)
        learn_s: list[float] = []
        route_s: list[float] = []
        call_seconds: list[float] = []
        call_sizes: list[int] = []
        start = 0
        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if resume and paths.results.exists():
            previous = load_results(paths.results)
            started_at = previous.run.started_at if previous.run else started_at
            start, predictions, learn_s, route_s = _resume_state(router, benchmark, paths, seed, top_k, progress)
        elif paths.results.exists() and not resume:
            raise ResumeError(f"{paths.results} exists; pass --resume to continue it or --overwrite to start again.")
        barrier()                            # every process has looked before the main one writes
        for t in range(start + 1, T + 1):
            experience = benchmark.train_stream[t - 1]
            where = f"router '{name}', experience {t}"
            t0 = time.perf_counter()
            try:
                _call(lambda: router.learn(experience), learn_timeout, f"{where}: learn()")
            except RouterCallError:
                raise
            except Exception as err:
                raise RouterCallError(f"{where}: learn() raised {type(err).__name__}: {err}") from err
            learn_s.append(time.perf_counter() - t0)
            if isinstance(router, CheckpointableRouter) and main:
                router.save(paths.checkpoints / f"after_{t}")
            rows, spent = _route_seen(router, benchmark, t, top_k, batch_size, timeout, on_unknown_id, progress,
                                      call_seconds, call_sizes)
            route_s.append(spent)
            predictions = pl.concat([predictions, pl.DataFrame(rows, schema=PREDICTION_SCHEMA)])
            results = build_results(router, benchmark, predictions, t, seed, top_k, learn_s, route_s,
                                    call_seconds, call_sizes, paths, run_record(started_at, command, router_spec))
            if not main:
                continue
            atomic_write(paths.predictions, predictions.write_parquet)
            save_results(results, paths.results)
            for logger in loggers:
                logger.log_experience(t, results)
            if progress:
                d = results.summary["domain"]
                tqdm.write(f"{name}: experience {t}/{T} learnt in {learn_s[-1]:.0f} s; D-Acc average "
                           f"{100 * d.final_average_accuracy:.1f}"
                           + (f", D forgetting {100 * d.forgetting:.1f}" if d.forgetting is not None else ""))
        for logger in loggers:
            logger.close()
        barrier()                            # the files are written when any process returns
        return load_results(paths.results) if start == T else results


def _route_seen(router: Router, benchmark: Benchmark, t: int, top_k: int, batch_size: int, timeout: float | None,
                on_unknown_id: str, progress: bool, call_seconds: list[float],
                call_sizes: list[int]) -> tuple[list[dict], float]:
    """Route the test sets of experiences 1..t after learning experience ``t``: the prediction rows and the seconds
    spent inside ``route``; each call's seconds and size are appended to ``call_seconds`` / ``call_sizes``."""
    name, T = router.meta.name, benchmark.n_experiences
    gold_access = bool(getattr(router, "needs_gold", False))
    where = f"router '{name}', experience {t}"
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
    return rows, spent


def build_results(router: Router, benchmark: Benchmark, predictions: pl.DataFrame, finished: int, seed: int,
                  top_k: int, learn_s: list[float], route_s: list[float], call_seconds: list[float],
                  call_sizes: list[int], paths: RunPaths, run: RunRecord | None = None) -> Results:
    lat = M.latency_summary(call_seconds, call_sizes) if call_seconds else {}
    return Results(
        cmrbench_version=__version__,
        dataset=DatasetRef(name=benchmark.manifest["dataset"], version=benchmark.manifest["dataset_version"],
                           stream=benchmark.manifest["stream"], n_experiences=benchmark.n_experiences,
                           manifest_sha256=benchmark.manifest_sha256, folder=benchmark.folder.name,
                           eval_split=benchmark.eval_split),
        router=router.meta, seed=seed, top_k=top_k, answer_key=bool(getattr(router, "needs_gold", False)),
        isolation="process" if isinstance(router, IsolatedRouter) else "none", hardware=hardware(),
        **derived_fields(predictions, benchmark, finished),
        timings=Timings(learn_seconds=learn_s, route_seconds=route_s,
                        latency_p50_ms=1000 * lat["p50_seconds_per_prompt"] if lat else None,
                        latency_p95_ms=1000 * lat["p95_seconds_per_prompt"] if lat else None,
                        throughput_prompts_per_s=lat.get("throughput_prompts_per_second"),
                        peak_rss_mb=_peak_rss_mb()),
        predictions_file=paths.predictions.name,
        run=run,
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
    before, now = previous.router.model_dump(mode="json"), router.meta.model_dump(mode="json")
    changed = sorted(k for k in before["parameters"].keys() | now["parameters"].keys()
                     if before["parameters"].get(k) != now["parameters"].get(k))
    changed += [f for f in ("version", "zero_shot", "reference_row") if before[f] != now[f]]
    if changed:
        raise ResumeError(f"{paths.results} was run with other router settings ({', '.join(changed)} differ); "
                          "resuming would mix two configurations in one file. Start a new run (--overwrite), or "
                          "give this configuration its own name (--router-arg name=...).")
    done = previous.finished_experiences
    predictions = pl.read_parquet(paths.predictions).filter(pl.col("after_experience") <= done)
    checkpoint = paths.checkpoints / f"after_{done}"
    if isinstance(router, CheckpointableRouter) and checkpoint.is_dir():
        router.load(checkpoint)
    else:  # re-learn finished experiences (deterministic under the same seed); no re-routing
        for t in tqdm(range(1, done + 1), desc="resume: re-learning", disable=not progress, leave=False):
            router.learn(benchmark.train_stream[t - 1])
    return done, predictions, list(previous.timings.learn_seconds), list(previous.timings.route_seconds)
