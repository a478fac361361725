"""Why random replay forgets more than sequential fine-tuning here: who is forgotten, buffered models or the rest.

    python benchmarks/replay_forgetting.py --data DIR [--rows naive replay-10 replay-20 --seed 0]

Reads the results of record (``results/CMRBench-v1-paper/<row>__...__seed<S>``: predictions only, nothing is
trained) and rebuilds the replay buffers those runs held, which the seed fixes (``ReplayBuffer`` draws from
its own seeded generator; no network is needed to know what it kept). Each earlier experience's test prompts
are split by whether their gold model had a prompt in the replay buffer by the end of the stream (replay-10's
own for ``replay-10``, replay-20's for every other row), and each row's top-1 accuracy on that split is
compared when the experience was learnt (A[j][j]) and at the end (A[T][j]). ``replay-20-ace`` is the first
replay setting (replayed prompts scored against every model seen so far), the current replay rows score them
against the models with an example (``softmax_scope=memory``). Rows without a buffer (``naive``, ``ewc``) see the
same split as replay-20, as controls. Writes
``benchmarks/out/replay_forgetting.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl

from cmrbench.baselines.strategies.replay import replay_10, replay_20
from cmrbench.data import Benchmark
from cmrbench.fileio import atomic_write_text
from cmrbench.metrics import hits_at_k

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "CMRBench-v1-paper"
OUT = Path(__file__).resolve().parent / "out" / "replay_forgetting.json"


def buffered_models(bench: Benchmark, seed: int, fraction: int) -> set[str]:
    """Model ids with at least one prompt in replay-``fraction``'s buffer after the last experience."""
    router = (replay_10 if fraction == 10 else replay_20)(seed=seed)
    for experience in bench.train_stream:
        router.end_experience(experience, router.current_examples(experience), None)
    return set(router.plugin("replay").buffer.frame()["model_id"].to_list())


def top1(frame: pl.DataFrame, labels: dict[str, set[str]] | None) -> float:
    """Top-1 accuracy (%) at the model level (``labels`` None) or the domain level (domains known then)."""
    gold = frame["model_id" if labels is None else "domain"].to_list()
    hits = hits_at_k(frame["model_ids"].to_list(), gold, 1, labels)
    return 100 * int(hits.sum()) / max(1, len(hits))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the CMRBench v1 build the results were run on")
    parser.add_argument("--rows", nargs="+", default=["naive", "replay-10", "replay-20", "replay-20-ace", "ewc", "carve-20"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    bench = Benchmark(args.data)
    T = bench.n_experiences
    kept = {f: buffered_models(bench, args.seed, f) for f in (10, 20)}
    domains = {t: {m: set(d) for m, d in bench.label_registry(t).domains.items()} for t in range(1, T + 1)}
    splits = {f: {j: bench.test_set(j).with_columns(pl.col("model_id").is_in(list(kept[f])).alias("buffered"))
                  for j in range(1, T)} for f in kept}
    report = {"seed": args.seed, "groups": {
        f"replay-{f}": {str(j): {"buffered": int(g["buffered"].sum()), "not_buffered": int((~g["buffered"]).sum())}
                        for j, g in split.items()} for f, split in splits.items()}, "rows": {}}
    for row in args.rows:
        gold = splits[10 if row.startswith("replay-10") else 20]
        path = RESULTS / f"{row}__CMRBench-v1-paper__seed{args.seed}.predictions.parquet"
        if not path.is_file():
            print(f"{row}: no predictions of record, skipped")
            continue
        preds = pl.read_parquet(path)
        out = {}
        for level, labels in (("model", None), ("domain", domains)):
            for group, flag in (("buffered", True), ("not_buffered", False)):
                drops = []
                for j, g in gold.items():
                    g = g.filter(pl.col("buffered") == flag)
                    when = g.join(preds.filter(pl.col("after_experience") == j), on="prompt_id")
                    end = g.join(preds.filter(pl.col("after_experience") == T), on="prompt_id")
                    drops.append({"experience": j, "n": g.height,
                                  "learnt": round(top1(when, labels and labels[j]), 2),
                                  "end": round(top1(end, labels and labels[T]), 2)})
                n = sum(d["n"] for d in drops)
                forgetting = sum((d["learnt"] - d["end"]) * d["n"] for d in drops) / max(1, n)
                out[f"{level}/{group}"] = {"forgetting": round(forgetting, 2), "per_experience": drops}
        report["rows"][row] = out
        print(f"{row:13s} " + "  ".join(f"{k} {v['forgetting']:+6.2f}" for k, v in out.items()))
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
