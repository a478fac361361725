"""CARvE on the full CMRBench stream: the main runs, the paper's ablations and the compute comparison.

    python benchmarks/bench_carve.py --data DIR                  # every CARvE row (about 1.5 hours on 2 cores)
    python benchmarks/bench_carve.py --data DIR --rows carve-10 anchoring=none
    python benchmarks/bench_carve.py --table                     # markdown table of what was measured

Each row is one registered strategy with router arguments, run in its own process by
``bench_trainable.run_entry`` (seed 0) and merged into ``benchmarks/out/carve.json``. Ablation rows
change one part of carve-10 (anchoring, replay selection, K, initialisation, projection dimension,
schedule). The two ``+flops`` rows repeat carve-10 and cumulative retraining under torch's FLOP counter
(which counts every matmul / attention and barely changes wall time).
Target: the full stream in at most 20 minutes on 2 CPU cores per row.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trainable import run_entry  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "carve.json"
BASELINES = Path(__file__).resolve().parent / "out" / "trainable.json"
BUDGET_S = 20 * 60

# Baselines of the comparison: read from benchmarks/out/trainable.json for the test split, run here (--rows
# replay-10 ...) for the validation split.
BASELINE_ROWS = ("naive", "replay-10", "replay-20", "cumulative")
# label -> (registered strategy, router arguments, what the row tests)
ROWS: dict[str, tuple[str, list[str], str]] = {
    **{name: (name, [], "baseline") for name in BASELINE_ROWS},
    "carve-10": ("carve-10", [], "CARvE, 10 % structured replay"),
    "carve-20": ("carve-20", [], "CARvE, 20 % structured replay"),
    "carve-20/candidates=all": ("carve-20", ["candidates=all"], "carve-20 with every registered model as a candidate"),
    "anchoring=none": ("carve-10", ["anchoring=none"], "no anchoring"),
    "anchoring=embedding": ("carve-10", ["anchoring=embedding"], "registry-row anchoring only"),
    "anchoring=projection": ("carve-10", ["anchoring=projection"], "projection anchoring only"),
    "replay=random": ("carve-10", ["replay_selection=random"], "random replay inside the same quotas"),
    "replay=uniform": ("carve-10", ["replay_selection=uniform"], "random replay, no quotas or caps"),
    "K=16": ("carve-10", ["num_candidates=16", "hard_negatives=4", "semantic_negatives=9", "far_negatives=2"],
             "16 candidates (negatives scaled 15/38/10 -> 4/9/2)"),
    "K=32": ("carve-10", ["num_candidates=32", "hard_negatives=7", "semantic_negatives=19", "far_negatives=5"],
             "32 candidates (negatives scaled 15/38/10 -> 7/19/5)"),
    "K=256": ("carve-10", ["num_candidates=256", "far_negatives=202"], "256 candidates (15 hard, 38 semantic, 202 far)"),
    "candidates=all": ("carve-10", ["candidates=all"], "every registered model as a candidate (full softmax)"),
    "domain_batches=false": ("carve-10", ["domains_per_batch=0"], "plain shuffled batches"),
    "init=card": ("carve-10", ["init=card"], "card-guided initialisation of new registry rows"),
    "two_phase=false": ("carve-10", ["two_phase=false"], "one phase (anchoring never applies)"),
    "dim=1024": ("carve-10", ["dim=1024"], "the paper's projection dimension"),
    "carve-10+flops": ("carve-10", [], "carve-10 under the FLOP counter"),
    "cumulative+flops": ("cumulative", [], "cumulative retraining under the FLOP counter"),
}


def table(carve: dict, baselines: dict) -> str:
    """Markdown rows: label, what it tests, M / F / D final accuracy, D forgetting, wall time. Baselines not
    run here are taken from ``baselines`` (pass ``{}`` for the validation split)."""
    lines = ["| row | what changes | M-Acc | F-Acc | D-Acc | D-FGT | wall (s) |", "|---|---|---|---|---|---|---|"]
    for label, (_, _, what) in ROWS.items():
        r = carve.get("strategies", {}).get(label) or (
            baselines.get("strategies", {}).get(label) if label in BASELINE_ROWS else None)
        if r:
            flops = f" ({r['learn_tflops_total']} TFLOP)" if "learn_tflops_total" in r else ""
            lines.append(f"| {label} | {what}{flops} | {r['M_acc']} | {r['F_acc']} | {r['D_acc']} | {r['D_fgt']} | "
                         f"{r['wall_seconds']} |")
    counted = {k: carve.get("strategies", {}).get(f"{k}+flops") for k in ("carve-10", "cumulative")}
    if all(counted.values()):
        c, u = (counted[k]["learn_tflops_total"] for k in ("carve-10", "cumulative"))
        lines.append(f"\nTraining compute over the stream: carve-10 {c} TFLOP, cumulative {u} TFLOP "
                     f"({100 * (1 - c / u):.0f} % fewer for carve-10).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a built CMRBench folder (cmrbench build --out DIR)")
    parser.add_argument("--rows", nargs="+", default=[r for r in ROWS if r not in BASELINE_ROWS], choices=list(ROWS),
                        help="rows to run (default: all but the baselines)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default: out/carve.json)")
    parser.add_argument("--runs", type=Path, default=None, help="where results JSON go (default: a temp folder)")
    parser.add_argument("--eval-split", choices=["test", "validation"], default="test",
                        help="validation: score each experience's validation prompts (tuning runs; default --out "
                             "becomes out/carve_validation.json)")
    parser.add_argument("--table", action="store_true", help="print the markdown table of --out and stop")
    args = parser.parse_args()
    args.out = args.out or (OUT if args.eval_split == "test" else OUT.with_name("carve_validation.json"))
    if args.table:
        carve = json.loads(args.out.read_text()) if args.out.exists() else {}
        baselines = json.loads(BASELINES.read_text()) if BASELINES.exists() and args.eval_split == "test" else {}
        print(table(carve, baselines))
        return
    if args.data is None:
        parser.error("--data is required to run rows")
    runs = args.runs or Path(tempfile.mkdtemp(prefix="cmrbench-carve-"))
    for label in args.rows:
        strategy, router_args, _ = ROWS[label]
        row = run_entry(label, strategy, router_args, args.data, runs, args.out, args.seed,
                        flops=label.endswith("+flops"), eval_split=args.eval_split, budget_s=BUDGET_S)
        if row is not None and not row["within_budget"]:
            print(f"[bench] {label} exceeded the {BUDGET_S} s budget", flush=True)


if __name__ == "__main__":
    main()
