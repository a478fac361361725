"""Where the trained routers lose the experience they have just learned: prompts captured by older models.

    python benchmarks/old_model_capture.py --data DIR [--rows ncm naive carve-10 ... --seed 0]

Right after learning experience 2 the trained rows route its test prompts 8 points of D worse than ``ncm``
(docs/results.md). This reads the results of record (predictions only, nothing is trained) and splits each
experience's test prompts, right after it was learned (A[t][t]), by where their first model comes from: a
model of that experience (its new models and the old ones that came back), or a model only earlier
experiences had. Every gold model of experience t's prompts is one of t's models, so the second group is
wrong at the model level by construction; its domain accuracy says how wrong. Writes
``benchmarks/out/old_model_capture.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl

from cmrbench.data import Benchmark
from cmrbench.fileio import atomic_write_text
from cmrbench.metrics import hits_at_k

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "CMRBench-v1-paper"
OUT = Path(__file__).resolve().parent / "out" / "old_model_capture.json"
ROWS = ["ncm", "naive", "replay-10", "carve-10", "naive-prior", "replay-10-prior", "carve-10-prior", "cumulative",
        "ncm-mpnet", "carve-10-mpnet", "cumulative-mpnet"]


def split_by_origin(bench: Benchmark, preds: pl.DataFrame, t: int) -> dict[str, float | int]:
    """Experience t's test prompts after learning t: how many go to a model only earlier experiences had, and
    the domain accuracy (%) of those and of the rest."""
    current = set(bench.train_stream[t - 1].classes_in_this_experience)
    domains = bench.label_registry(t).domains
    rows = bench.test_set(t).join(preds.filter(pl.col("after_experience") == t), on="prompt_id")
    ranked = rows["model_ids"].to_list()
    hits = hits_at_k(ranked, rows["domain"].to_list(), 1, domains)
    to_older = np.array([bool(ids) and ids[0] not in current for ids in ranked], dtype=bool)
    older, own = hits[to_older].tolist(), hits[~to_older].tolist()
    return {"prompts": rows.height, "to_older_models": len(older),
            "share_to_older_models": round(100 * len(older) / max(1, rows.height), 2),
            "domain_acc_older": round(100 * sum(older) / max(1, len(older)), 2),
            "domain_acc_own": round(100 * sum(own) / max(1, len(own)), 2),
            "domain_acc": round(100 * (sum(older) + sum(own)) / max(1, rows.height), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the CMRBench v1 build the results were run on")
    parser.add_argument("--rows", nargs="+", default=ROWS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    bench = Benchmark(args.data)
    report: dict = {"seed": args.seed, "rows": {}}
    for row in args.rows:
        path = RESULTS / f"{row}__CMRBench-v1-paper__seed{args.seed}.predictions.parquet"
        if not path.is_file():
            print(f"{row}: no predictions of record, skipped")
            continue
        preds = pl.read_parquet(path)
        finished = int(preds["after_experience"].max())
        per = {str(t): split_by_origin(bench, preds, t) for t in range(2, finished + 1)}
        report["rows"][row] = per
        print(f"{row:17s} " + "  ".join(f"E{t}: {v['share_to_older_models']:5.1f}% to older (D {v['domain_acc_older']:4.1f})"
                                        for t, v in per.items()))
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
