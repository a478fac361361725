"""Benchmark of the zero-shot card-retrieval routers on the real CMR release stream.

The stream: for experience t = 1..4 the router learns the cumulative card index (``e1``, ``e1_e2``,
``e1_e2_e3``, ``e1_e2_e3_e4``: 873 / 1,354 / 1,874 / 2,421 cards), then routes the test prompts of
experience t (the ``instruction`` field of ``cleaned-{apibench-hf,mllm,hugging-bench-1,hugging-bench-2}-eval.json``:
867 + 809 + 984 + 1,033 = 3,693 prompts), top-10, in batches of 64 as the evaluator does.

Measured, each backend in its own subprocess (so peak memory is per backend and the warm-cache run is a
genuinely new process):

* ``bm25`` (scipy-sparse) vs ``bm25-rank`` (rank-bm25): learn / route seconds, medians over repeats, the
  speed ratio, and whether the top-10 rankings are identical for every prompt;
* ``dense`` (default offline MiniLM): a first run on an empty embedding cache (cold) and a second run on
  the cache the first one filled (warm); routing throughput in prompts/s against the 2,421 cards of the
  last experience; whether cold and warm rankings agree;
* peak resident memory (``ru_maxrss``) of each worker, and of a worker that only loads the data.

Usage: ``python benchmarks/bench_retrieval.py [--sources DIR] [--repeats 3] [--rank-repeats 3]``; the
mirror folder comes from ``--sources``, else ``$CMRBENCH_SOURCES``, else ``../shared/data/raw`` next to
the repository. Writes ``benchmarks/out/retrieval.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

INDICES = ["e1", "e1_e2", "e1_e2_e3", "e1_e2_e3_e4"]
EVAL_FILES = ["apibench-hf", "mllm", "hugging-bench-1", "hugging-bench-2"]
BATCH = 64
TOP_K = 10


def default_sources() -> Path:
    env = os.environ.get("CMRBENCH_SOURCES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared/data/raw"


def load_stream(sources: Path):
    """[(experience view, test prompts)] for the four experiences of the CMR release."""
    import polars as pl

    root = sources / "cmr-release"
    stream = []
    for t, (index, eval_name) in enumerate(zip(INDICES, EVAL_FILES), start=1):
        lines = (root / "model_indices" / f"{index}.json").read_text(encoding="utf-8").splitlines()
        objs = [json.loads(line) for line in lines]
        cards = pl.DataFrame({"card_id": [f"card-{n:05d}" for n in range(1, len(lines) + 1)],
                              "model_id": [o["model_name"].strip() for o in objs], "experience": [t] * len(lines),
                              "domain": [o.get("domain") for o in objs], "card": lines})
        prompts = [json.loads(line)["instruction"] for line in
                   (root / "processed" / f"cleaned-{eval_name}-eval.json").read_text(encoding="utf-8").splitlines()]
        view = SimpleNamespace(cards=cards, current_experience=t,
                               classes_seen_so_far=sorted(set(cards["model_id"].to_list())))
        stream.append((view, prompts))
    return stream


def run_stream(router, stream) -> tuple[dict, list]:
    """Learn / route the stream once; timings per experience and the top-10 rankings."""
    learn_s, route_s, rankings = [], [], []
    for view, prompts in stream:
        t0 = time.perf_counter()
        router.learn(view)
        learn_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for lo in range(0, len(prompts), BATCH):
            rankings.extend(router.route(prompts[lo:lo + BATCH], TOP_K))
        route_s.append(time.perf_counter() - t0)
    return {"learn_s": learn_s, "route_s": route_s, "total_s": sum(learn_s) + sum(route_s)}, rankings


def make_router(backend: str, cache_dir: str | None):
    if backend == "bm25":
        from cmrbench.baselines.retrieval.bm25 import BM25Router
        return BM25Router()
    if backend == "bm25-rank":
        from cmrbench.baselines.retrieval.bm25 import RankBM25Router
        return RankBM25Router()
    if backend == "dense":
        from cmrbench.baselines.retrieval.dense import DenseRouter
        return DenseRouter(cache_dir=cache_dir)
    raise ValueError(backend)


def worker(args) -> None:
    stream = load_stream(args.sources)
    out: dict = {"backend": args.worker, "runs": []}
    if args.worker != "baseline":
        out["parameters"] = make_router(args.worker, args.cache_dir).meta.parameters
        for _ in range(args.repeats):
            router = make_router(args.worker, args.cache_dir)     # a fresh router per run
            timing, rankings = run_stream(router, stream)
            out["runs"].append(timing)
        Path(args.rankings).write_text(json.dumps(rankings))
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def spawn(backend: str, sources: Path, repeats: int, rankings: Path, cache_dir: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", backend, "--sources", str(sources), "--repeats", str(repeats),
           "--rankings", str(rankings)] + (["--cache-dir", cache_dir] if cache_dir else [])
    print(f"[bench] {backend} x{repeats} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode:
        raise RuntimeError(f"worker {backend} failed:\n{proc.stderr[-4000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    result["process_wall_s"] = time.perf_counter() - t0
    print(f"[bench] {backend}: {[round(r['total_s'], 2) for r in result['runs']]} s, "
          f"{result['max_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    return result


def summarise(result: dict, n_prompts_last: int, baseline_mb: float) -> dict:
    runs = result["runs"]
    med = lambda xs: statistics.median(xs)  # noqa: E731
    return {
        "repeats": len(runs),
        "learn_s_median": med([sum(r["learn_s"]) for r in runs]),
        "route_s_median": med([sum(r["route_s"]) for r in runs]),
        "total_s_median": med([r["total_s"] for r in runs]),
        "first_run_total_s": runs[0]["total_s"],     # includes imports and model loading in a fresh process
        "learn_s_per_experience_median": [med([r["learn_s"][t] for r in runs]) for t in range(len(INDICES))],
        "route_s_per_experience_median": [med([r["route_s"][t] for r in runs]) for t in range(len(INDICES))],
        "route_prompts_per_s_last_experience": n_prompts_last / med([r["route_s"][-1] for r in runs]),
        "peak_rss_mb": result["max_rss_mb"],
        "peak_rss_over_data_only_mb": result["max_rss_mb"] - baseline_mb,
        "runs": runs,
    }


def compare(a: list, b: list) -> dict:
    ids_a = [[m for m, _ in r] for r in a]
    ids_b = [[m for m, _ in r] for r in b]
    same = sum(x == y for x, y in zip(ids_a, ids_b))
    diff = max((abs(s - t) for ra, rb in zip(a, b) for (_, s), (_, t) in zip(ra, rb)), default=0.0)
    return {"prompts": len(a), "identical_top10": same, "all_identical": same == len(a) == len(b),
            "max_abs_score_diff": diff}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sources", type=Path, default=default_sources())
    p.add_argument("--repeats", type=int, default=3, help="runs of the fast BM25 and of the warm dense stream")
    p.add_argument("--rank-repeats", type=int, default=3, help="runs of rank-bm25")
    p.add_argument("--skip-dense", action="store_true")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "retrieval.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--rankings", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    if not (args.sources / "cmr-release/model_indices/e1.json").is_file():
        sys.exit(f"CMR release files not found under {args.sources}; pass --sources or set CMRBENCH_SOURCES")
    stream = load_stream(args.sources)
    n_prompts = [len(p) for _, p in stream]
    report: dict = {
        "setting": "for t=1..4: learn the cumulative card index t, route the test prompts of experience t (top-10, "
                   "batches of 64)",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.machine()},
        "data": {"cards": [v.cards.height for v, _ in stream], "prompts": n_prompts, "total_prompts": sum(n_prompts),
                 "models": [len(v.classes_seen_so_far) for v, _ in stream]},
    }
    with tempfile.TemporaryDirectory(prefix="cmrbench-bench-") as tmp:
        tmp = Path(tmp)
        base = spawn("baseline", args.sources, 0, tmp / "none.json")
        report["data_only_peak_rss_mb"] = base["max_rss_mb"]
        fast = spawn("bm25", args.sources, args.repeats, tmp / "bm25.json")
        rank = spawn("bm25-rank", args.sources, args.rank_repeats, tmp / "bm25-rank.json")
        bm = {"bm25 (scipy sparse)": summarise(fast, n_prompts[-1], base["max_rss_mb"]),
              "bm25-rank (rank-bm25)": summarise(rank, n_prompts[-1], base["max_rss_mb"])}
        f, r = bm["bm25 (scipy sparse)"], bm["bm25-rank (rank-bm25)"]
        bm["speed_ratio_route"] = r["route_s_median"] / f["route_s_median"]
        bm["speed_ratio_total"] = r["total_s_median"] / f["total_s_median"]
        bm["rankings"] = compare(json.loads((tmp / "bm25.json").read_text()),
                                 json.loads((tmp / "bm25-rank.json").read_text()))
        report["bm25"] = bm
        if not args.skip_dense:
            cache = str(tmp / "embedding-cache")
            cold = spawn("dense", args.sources, 1, tmp / "dense-cold.json", cache)
            warm = spawn("dense", args.sources, args.repeats, tmp / "dense-warm.json", cache)
            c = summarise(cold, n_prompts[-1], base["max_rss_mb"])
            w = summarise(warm, n_prompts[-1], base["max_rss_mb"])
            report["dense"] = {
                "parameters": cold["parameters"],
                "cold (empty cache)": c, "warm (second run, filled cache)": w,
                "speed_ratio_cold_over_warm_total": c["total_s_median"] / w["total_s_median"],
                "routing_prompts_per_s_2421_cards": {"cold (prompts encoded)": c["route_prompts_per_s_last_experience"],
                                                     "warm (prompt embeddings cached)":
                                                         w["route_prompts_per_s_last_experience"]},
                "rankings_cold_vs_warm": compare(json.loads((tmp / "dense-cold.json").read_text()),
                                                 json.loads((tmp / "dense-warm.json").read_text())),
            }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items()}, indent=2, default=str)[:6000])


if __name__ == "__main__":
    main()
