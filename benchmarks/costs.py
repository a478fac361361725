"""What each row of record costs: time, memory and throughput, read from the results of record.

    python benchmarks/costs.py                 # table on stdout, benchmarks/out/costs.json
    python benchmarks/costs.py --results DIR   # another folder of results

Every results file already records its run's learn / route seconds per experience, peak RSS and
prompts/s, so the budget targets (a MiniLM row within 15 minutes on 2 cores, CARvE within 20) are
checked on the very runs the README reports, not on separate timing runs. Medians over seeds.

Wall times depend on the machine: the rows of record were run over several sessions, each on a fresh
2-core machine, some of them sharing the cores with another run. To show how much, the script compares
the same piece of work across runs: experience 1 of the rows whose first experience is plain
fine-tuning from the prototypes (nothing to replay, distil, merge or anchor yet), and gives the
fastest, median and slowest of those runs and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from cmrbench.fileio import atomic_write_text
from cmrbench.results import Results, find_results_files, load_results

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results" / "CMRBench-v1-paper"
OUT = REPO / "benchmarks" / "out" / "costs.json"
BUDGET_S = {"carve": 20 * 60, "default": 15 * 60}
# rows whose experience 1 is the same work: fine-tuning MiniLM's top layer from the prototypes on experience 1's
# prompts (the runs of them with more layers trained, docs/results.md finding 7, do other work)
SAME_FIRST_EXPERIENCE = ("naive", "replay-10", "replay-20", "lwf", "merge-avg", "merge-ties", "merge-dare",
                         "cumulative", "joint")
SAME_FROZEN_LAYERS = 5


def budget(row: str, results: Results) -> int | None:
    """The budget binds the routers that learn on MiniLM; retrieval and reference rows have none, and
    neither has a row on another encoder (mpnet, ...), whose cost is reported next to MiniLM's, not bounded."""
    encoder = str(results.router.parameters.get("model") or results.router.parameters.get("backbone") or "")
    if results.router.zero_shot or results.router.reference_row or "minilm" not in encoder.lower():
        return None
    return BUDGET_S["carve"] if row.startswith("carve") else BUDGET_S["default"]


def row_costs(runs: list[Results]) -> dict:
    """Medians over a row's seeds: wall time of the whole stream (learn + route), its parts, memory, throughput."""
    learn = [sum(r.timings.learn_seconds) for r in runs]
    route = [sum(r.timings.route_seconds) for r in runs]
    wall = [a + b for a, b in zip(learn, route)]
    rates = [r.timings.throughput_prompts_per_s for r in runs if r.timings.throughput_prompts_per_s]
    return {"seeds": sorted(r.seed for r in runs),
            "learn_s": round(statistics.median(learn), 1),
            "route_s": round(statistics.median(route), 1),
            "wall_s": round(statistics.median(wall), 1),
            "wall_s_fastest": round(min(wall), 1),
            "peak_rss_mb": round(max(r.timings.peak_rss_mb for r in runs)),
            "prompts_per_s": round(statistics.median(rates), 1) if rates else None}


def machine_spread(first: dict[str, float]) -> dict:
    """Experience 1 of the same work across runs: how much wall times of record vary with the machine."""
    times = sorted(first.values())
    return {"runs": {name: round(s, 1) for name, s in sorted(first.items(), key=lambda kv: kv[1])},
            "fastest_s": round(times[0], 1), "median_s": round(statistics.median(times), 1),
            "slowest_s": round(times[-1], 1), "slowest_over_fastest": round(times[-1] / times[0], 2)}


def measure(folder: Path) -> dict:
    by_row: dict[str, list[Results]] = {}
    first: dict[str, float] = {}
    for path in find_results_files(folder):
        results = load_results(path)
        if results.status != "complete":
            continue
        row, seed = results.router.name, results.seed
        by_row.setdefault(row, []).append(results)
        if row in SAME_FIRST_EXPERIENCE and results.router.parameters.get("freeze_layers") == SAME_FROZEN_LAYERS:
            first[f"{row} seed {seed}"] = results.timings.learn_seconds[0]
    if not by_row:
        raise SystemExit(f"{folder}: no complete results file; run benchmarks/record.py first")
    rows = {}
    for row, runs in sorted(by_row.items()):
        costs = row_costs(runs)
        costs["budget_s"] = limit = budget(row, runs[0])
        costs["median_within_budget"] = None if limit is None else costs["wall_s"] <= limit
        costs["fastest_within_budget"] = None if limit is None else costs["wall_s_fastest"] <= limit
        rows[row] = costs
    return {"results": f"results/{folder.name}", "cpus": 2, "rows": rows,
            "experience_1_same_work": machine_spread(first) if first else None}


def table(report: dict) -> str:
    lines = ["| row | seeds | learn s | route s | wall s (median / fastest) | budget s | peak RSS MB | prompts/s |",
             "|---|---|---|---|---|---|---|---|"]
    for row, c in sorted(report["rows"].items(), key=lambda kv: kv[1]["wall_s"]):
        lines.append(f"| {row} | {len(c['seeds'])} | {c['learn_s']:.0f} | {c['route_s']:.0f} | "
                     f"{c['wall_s']:.0f} / {c['wall_s_fastest']:.0f} | {c['budget_s'] or '–'} | {c['peak_rss_mb']} | "
                     f"{c['prompts_per_s'] if c['prompts_per_s'] is not None else '–'} |")
    spread = report["experience_1_same_work"]
    if spread:
        lines.append(f"\nExperience 1, same work in {len(spread['runs'])} runs: fastest {spread['fastest_s']} s, "
                     f"median {spread['median_s']} s, slowest {spread['slowest_s']} s "
                     f"({spread['slowest_over_fastest']}x).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="a folder of results of record")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    report = measure(args.results)
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
