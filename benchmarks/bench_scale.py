"""Routing over hub-sized registries: index build time, memory, latency and recall against exact search.

    python benchmarks/bench_scale.py                         # 2k, 20k, 200k models (minutes on 2 cores)
    python benchmarks/bench_scale.py --sizes 2000 20000 2000000

Model vectors are synthetic and deterministic (seeded): 384-dimensional unit vectors drawn around one centre per
domain (58 domains, as CMRBench v1) with a per-family offset, which is how card and prototype embeddings of a hub
cluster. Queries are noisy copies of random models' vectors. For each size and index kind of
:class:`~cmrbench.baselines.retrieval.encoders.VectorIndex` (``exact``, ``flat``, ``hnsw``, ``ivfpq``, all forced
on with ``exact_below=0``), it measures the build time, the size of the vectors and of the FAISS index (serialised; the class keeps
the vectors as well), routing latency per batch of 64 prompts (p50 / p95) and prompts per second, and recall@10
against exact search. Encoding prompts is
not included (it is the same for every index; MiniLM encodes about 300 short prompts/s on these cores).
Results go to ``benchmarks/out/scale.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cmrbench.baselines.retrieval.encoders import VectorIndex  # noqa: E402
from cmrbench.fileio import atomic_write_text  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "scale.json"
DIM, DOMAINS, BATCH, QUERIES = 384, 58, 64, 1024


def registry(n: int, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors: a domain centre, a family offset (families of about 8 models), and noise."""
    rng = np.random.default_rng([seed, n])
    centres = rng.normal(size=(DOMAINS, DIM)).astype(np.float32)
    families = max(1, n // 8)
    family_domain = rng.integers(DOMAINS, size=families)
    offsets = rng.normal(scale=0.6, size=(families, DIM)).astype(np.float32)
    out = np.empty((n, DIM), dtype=np.float32)
    for lo in range(0, n, 200_000):                      # in chunks, to bound the temporary arrays
        hi = min(n, lo + 200_000)
        fam = rng.integers(families, size=hi - lo)
        out[lo:hi] = centres[family_domain[fam]] + offsets[fam] + rng.normal(scale=0.5, size=(hi - lo, DIM))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, kind: str) -> dict:
    before = peak_mb()
    t0 = time.perf_counter()
    index = VectorIndex(vectors, kind=kind, exact_below=0)
    build = time.perf_counter() - t0
    latencies, found = [], []
    for lo in range(0, len(queries), BATCH):
        t = time.perf_counter()
        _, rows = index.search(queries[lo:lo + BATCH], 10)
        latencies.append(time.perf_counter() - t)
        found.append(rows)
    rows = np.concatenate(found)
    if index._faiss is not None:
        import faiss
        index_mb = faiss.serialize_index(index._faiss).size / 2 ** 20
    else:
        index_mb = 0.0
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, rows)]))
    return {"kind": kind, "kind_used": index.kind_used, "build_seconds": round(build, 3),
            "vectors_mb": round(vectors.nbytes / 2 ** 20, 1), "index_mb": round(index_mb, 1),
            "peak_rss_growth_mb": round(peak_mb() - before, 1),
            "batch_latency_p50_ms": round(1000 * float(np.percentile(latencies, 50)), 2),
            "batch_latency_p95_ms": round(1000 * float(np.percentile(latencies, 95)), 2),
            "prompts_per_second": round(len(queries) / sum(latencies), 1), "recall_at_10": round(recall, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[2_000, 20_000, 200_000])
    parser.add_argument("--kinds", nargs="+", default=["exact", "flat", "hnsw", "ivfpq"])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    rows = results.setdefault("rows", {})
    for n in args.sizes:
        vectors = registry(n)
        rng = np.random.default_rng([1, n])
        queries = vectors[rng.integers(n, size=QUERIES)] + rng.normal(scale=0.05, size=(QUERIES, DIM)).astype(
            np.float32)
        truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10] if n <= 200_000 else \
            VectorIndex(vectors, kind="flat", exact_below=0).search(queries, 10)[1]
        for kind in args.kinds:
            row = {"models": n, **measure(vectors, queries, truth, kind)}
            rows[f"{n}/{kind}"] = row
            print(json.dumps(row), flush=True)
            results["machine"] = {"cpu_count": __import__("os").cpu_count(), "note": "shared 2-core machine"}
            atomic_write_text(args.out, json.dumps(results, indent=1, sort_keys=True) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
