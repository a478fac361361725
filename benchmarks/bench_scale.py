"""Routing over hub-sized registries: index build time, memory, latency and recall against exact search.

    python benchmarks/bench_scale.py                                   # 2k, 20k, 200k, 2M models
    python benchmarks/bench_scale.py --sizes 2000 20000 --kinds hnsw   # some of them
    python benchmarks/bench_scale.py --plot                            # the figure from the results file
    python benchmarks/bench_scale.py --table                           # the results file as a markdown table

Model vectors are synthetic and deterministic (seeded): 384-dimensional unit vectors drawn around one centre per
domain (58 domains, as CMRBench v1) with a per-family offset, which is how card and prototype embeddings of a hub
cluster. Queries are noisy copies of random models' vectors. For each size and index kind of
:class:`~cmrbench.baselines.retrieval.encoders.VectorIndex` (``exact``, ``flat``, ``hnsw``, ``ivfpq``, all forced
on with ``exact_below=0``; ``exact`` only up to 200k, where ``flat`` is the same search) a fresh process builds the
index and routes 1,024 prompts in batches of 64. The vectors are generated 25k at a time and added to the index as
they come (``VectorIndex.from_chunks``, as a router encoding a hub batch by batch would), so FAISS's copy is the
only full one. It records the build time (the generation of the vectors timed apart), the FAISS index's serialised size, the process's memory once the index
is built (``rss_after_build_mb``) and at its peak (``peak_rss_mb``, the build included),
routing latency per batch (p50 / p95), prompts per second and recall@10 against exact search. Encoding prompts
is not included (the same for every index; MiniLM encodes about 300 short prompts/s on these cores).
Results go to ``benchmarks/out/scale.json``, the figure to ``benchmarks/out/scale.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cmrbench.baselines.retrieval.encoders import VectorIndex, rows_at  # noqa: E402
from cmrbench.fileio import atomic_write_text  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "scale.json"
DIM, DOMAINS, BATCH, QUERIES = 384, 58, 64, 1024


CHUNK, PIECE = 200_000, 25_000     # families drawn per CHUNK models, noise in PIECEs: the same numbers in less memory


def registry_chunks(n: int, seed: int = 0) -> Iterator[np.ndarray]:
    """``n`` unit vectors, ``PIECE`` at a time: a domain centre, a family offset (families of about 8 models), and
    noise. The same vectors on every call, so an index can be built without the whole matrix in memory."""
    rng = np.random.default_rng([seed, n])
    centres = rng.normal(size=(DOMAINS, DIM)).astype(np.float32)
    families = max(1, n // 8)
    family_domain = rng.integers(DOMAINS, size=families)
    offsets = np.concatenate([rng.normal(scale=0.6, size=(min(families, a + PIECE) - a, DIM)).astype(np.float32)
                              for a in range(0, families, PIECE)])
    for lo in range(0, n, CHUNK):
        fam = rng.integers(families, size=min(n, lo + CHUNK) - lo)
        for a in range(0, len(fam), PIECE):
            f = fam[a:a + PIECE]
            part = (centres[family_domain[f]] + offsets[f] + rng.normal(scale=0.5, size=(len(f), DIM))).astype(np.float32)
            part /= np.linalg.norm(part, axis=1, keepdims=True)
            yield part


def registry(n: int, seed: int = 0) -> np.ndarray:
    """The whole registry of ``n`` vectors as one matrix (for the exact rows, up to 200k)."""
    return np.concatenate(list(registry_chunks(n, seed)))


class TimedChunks:
    """``make()``'s chunks, with the seconds spent producing them summed in ``seconds`` (over every call): the
    synthetic registry's generation is not part of an index's build time."""

    def __init__(self, make: Callable[[], Iterator[np.ndarray]]):
        self.make, self.seconds = make, 0.0

    def __call__(self) -> Iterator[np.ndarray]:
        chunks = self.make()
        while True:
            t = time.perf_counter()
            chunk = next(chunks, None)
            self.seconds += time.perf_counter() - t
            if chunk is None:
                return
            yield chunk


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike getrusage's ru_maxrss, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024      # not Linux: an upper bound


def measure(n: int, kind: str, truth_file: Path) -> dict:
    """One (size, kind) row, in this process (run it in a fresh one: the memory figures are the process's)."""
    import psutil

    queries = query_set(n)
    truth = np.load(truth_file)
    source = TimedChunks(lambda: registry_chunks(n))
    t0 = time.perf_counter()
    index = VectorIndex.from_chunks(source, n, DIM, kind=kind, exact_below=0)
    build = time.perf_counter() - t0 - source.seconds
    rss_after = psutil.Process().memory_info().rss / 2 ** 20
    latencies, found = [], []
    for lo in range(0, len(queries), BATCH):
        t = time.perf_counter()
        _, rows = index.search(queries[lo:lo + BATCH], 10)
        latencies.append(time.perf_counter() - t)
        found.append(rows)
    rows = np.concatenate(found)
    peak = peak_mb()                     # before the size below is taken: nothing of the benchmark's own after this
    index_mb = 0.0
    if index._faiss is not None:         # written to a file, not serialised in memory (a second and third copy)
        import faiss
        with tempfile.TemporaryDirectory() as tmp:
            faiss.write_index(index._faiss, str(Path(tmp) / "index.faiss"))
            index_mb = (Path(tmp) / "index.faiss").stat().st_size / 2 ** 20
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, rows)]))
    return {"models": n, "kind": kind, "kind_used": index.kind_used, "build_seconds": round(build, 3),
            "generation_seconds": round(source.seconds, 3),
            "vectors_mb": round(n * DIM * 4 / 2 ** 20, 1), "index_mb": round(index_mb, 1),
            "rss_after_build_mb": round(rss_after, 1), "peak_rss_mb": round(peak, 1),
            "batch_latency_p50_ms": round(1000 * float(np.percentile(latencies, 50)), 2),
            "batch_latency_p95_ms": round(1000 * float(np.percentile(latencies, 95)), 2),
            "prompts_per_second": round(len(queries) / sum(latencies), 1), "recall_at_10": round(recall, 4)}


def query_set(n: int) -> np.ndarray:
    """Noisy copies of random models' vectors, picked from the registry chunk by chunk."""
    rng = np.random.default_rng([1, n])
    picks = rng.integers(n, size=QUERIES)
    noise = rng.normal(scale=0.05, size=(QUERIES, DIM)).astype(np.float32)
    wanted = np.unique(picks)
    return rows_at(registry_chunks(n), wanted)[np.searchsorted(wanted, picks)] + noise


def exact_truth(n: int, path: Path) -> None:
    """The true 10 nearest models of every query, by exact search (FAISS flat above 200k), saved for the rows."""
    queries = query_set(n)
    truth = (np.argsort(-(queries @ registry(n).T), axis=1)[:, :10] if n <= 200_000 else
             VectorIndex.from_chunks(lambda: registry_chunks(n), n, DIM, kind="flat", exact_below=0)
             .search(queries, 10)[1])
    np.save(path, truth)


def plot(results: dict, path: Path) -> None:
    """Prompts per second and build time against registry size, log-log, one line per index kind."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(results["rows"].values())
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for kind in ("exact", "flat", "hnsw", "ivfpq"):
        mine = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["models"])
        if not mine:
            continue
        x = [r["models"] for r in mine]
        axes[0].plot(x, [r["prompts_per_second"] for r in mine], marker="o", label=kind)
        axes[1].plot(x, [max(r["build_seconds"], 1e-3) for r in mine], marker="o", label=kind)
        axes[2].plot(x, [r["rss_after_build_mb"] for r in mine], marker="o", label=kind)
    axes[0].axhline(400, color="grey", linestyle=":", linewidth=1)
    for ax, title in zip(axes, ("prompts / s (batches of 64; dotted: 400)", "index build (s)",
                                "memory after build (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("models in the registry")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def table(results: dict) -> str:
    lines = ["| models | index | build s | prompts/s | p50 ms per 64 | recall@10 | RSS after build (MB) | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|---|"]
    kinds = ("exact", "flat", "hnsw", "ivfpq")
    for r in sorted(results.get("rows", {}).values(), key=lambda r: (r["models"], kinds.index(r["kind"]))):
        kind = r["kind"] if r["kind_used"] == r["kind"] else f"{r['kind']} ({r['kind_used']})"
        lines.append(f"| {r['models']:,} | {kind} | {r['build_seconds']:.1f} | {r['prompts_per_second']:,.0f} | "
                     f"{r['batch_latency_p50_ms']:.1f} | {r['recall_at_10']:.3f} | {r['rss_after_build_mb']:,.0f} | "
                     f"{r['peak_rss_mb']:,.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[2_000, 20_000, 200_000, 2_000_000])
    parser.add_argument("--kinds", nargs="+", default=["exact", "flat", "hnsw", "ivfpq"])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--plot", action="store_true", help="only draw the figure from --out")
    parser.add_argument("--table", action="store_true", help="only print --out as a markdown table")
    parser.add_argument("--one", nargs=3, metavar=("MODELS", "KIND", "TRUTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:                                         # a child process: one row, as JSON on stdout
        print(json.dumps(measure(int(args.one[0]), args.one[1], Path(args.one[2]))))
        return
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.table:
        print(table(results))
        return
    if args.plot:
        plot(results, args.out.with_suffix(".png"))
        print(f"written: {args.out.with_suffix('.png')}")
        return
    rows = results.setdefault("rows", {})
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            truth = Path(tmp) / f"truth-{n}.npy"
            exact_truth(n, truth)
            for kind in args.kinds:
                if kind == "exact" and n > 200_000:          # flat is the same search, without a 1024 x n matrix
                    continue
                done = subprocess.run([sys.executable, __file__, "--one", str(n), kind, str(truth)],
                                      capture_output=True, text=True, check=True)
                row = json.loads(done.stdout.strip().splitlines()[-1])
                rows[f"{n}/{kind}"] = row
                print(json.dumps(row), flush=True)
                results["machine"] = {"cpu_count": os.cpu_count(), "faiss_threads": "default (all cores)"}
                atomic_write_text(args.out, json.dumps(results, indent=1, sort_keys=True) + "\n")
    plot(results, args.out.with_suffix(".png"))
    print(f"written: {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
