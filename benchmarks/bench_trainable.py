"""Time and memory of the trainable routers on the full CMRBench stream (target: <= 15 min per strategy).

    python benchmarks/bench_trainable.py --data DIR [--strategies naive replay-10 ...] [--router-arg k=v ...]

Each strategy runs in its own process (``cmrbench.harness.evaluate`` on the built folder, seed 0), so
its peak RSS is its own. Results are merged into ``benchmarks/out/trainable.json`` (one entry per
strategy, rewritten when a strategy is run again): wall time, learn / route seconds per experience,
peak RSS, the M / F / D final average accuracy and D forgetting, the load average of the machine
before and after (other processes on a 2-core machine slow a run down), and the router parameters.
``--flops`` also counts the training FLOPs of every experience (see :func:`count_learn_flops`).

It is for trying a strategy or its settings against the budget; the costs of the rows of record are read
from their own results files by ``benchmarks/costs.py``, so nothing of record is kept in ``trainable.json``.
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

from cmrbench.registry import REGISTRY
from cmrbench.fileio import atomic_write_text

STRATEGIES = {name: e.target for name, e in REGISTRY.items() if e.kind in ("trained", "carve")}
OUT = Path(__file__).resolve().parent / "out" / "trainable.json"
BUDGET_S = 15 * 60


def worker(args: argparse.Namespace) -> None:
    from cmrbench.data import Benchmark
    from cmrbench.harness import evaluate
    from cmrbench.registry import load_router, parse_router_args

    import torch

    t0 = time.perf_counter()
    router = load_router(args.worker, parse_router_args(args.router_arg or []), seed=args.seed)
    flops: list[int] = []
    if args.flops:
        count_learn_flops(router, flops)
    res = evaluate(router, Benchmark(args.data, eval_split=args.eval_split), args.runs, seed=args.seed, progress=False)
    wall = time.perf_counter() - t0
    summary = {lv: {"final_average_accuracy": round(100 * s.final_average_accuracy, 2),
                    "forgetting": None if s.forgetting is None else round(100 * s.forgetting, 2)}
               for lv, s in res.summary.items()}
    row = {
        "strategy": args.worker, "router": REGISTRY[args.worker].target, "eval_split": args.eval_split,
        "wall_seconds": round(wall, 1),
        "learn_seconds": [round(x, 1) for x in res.timings.learn_seconds],
        "route_seconds": [round(x, 1) for x in res.timings.route_seconds],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "M_acc": summary["model"]["final_average_accuracy"], "F_acc": summary["family"]["final_average_accuracy"],
        "D_acc": summary["domain"]["final_average_accuracy"], "D_fgt": summary["domain"]["forgetting"],
        "M_fgt": summary["model"]["forgetting"],
        "D_acc_matrix": [[None if x is None else round(100 * x, 1) for x in row] for row in
                         res.matrices["domain"]["acc@1"]],
        "M_acc_matrix": [[None if x is None else round(100 * x, 1) for x in row] for row in
                         res.matrices["model"]["acc@1"]],
        "torch_threads": torch.get_num_threads(), "router_args": args.router_arg or [],
        "parameters": router.meta.parameters,
        "training": getattr(router, "history", None),
    }
    if args.flops:
        row["learn_flops"] = flops
        row["learn_tflops_total"] = round(sum(flops) / 1e12, 3)
    Path(args.result).write_text(json.dumps(row, indent=1))


def count_learn_flops(router, into: list[int]) -> None:
    """Wrap ``router.learn`` so that the FLOPs of each experience's training (forward, backward, frozen-layer
    caching, hard-negative mining, replay selection: every matmul / attention torch runs) land in ``into``.
    The counter only intercepts torch ops: a counted carve-10 run took 349 s against 348 s uncounted."""
    from torch.utils.flop_counter import FlopCounterMode

    learn = router.learn

    def counted(experience):
        with FlopCounterMode(display=False) as counter:
            learn(experience)
        into.append(int(counter.get_total_flops()))
    router.learn = counted


def run_entry(label: str, strategy: str, router_args: list[str], data: Path, runs: Path, out: Path, seed: int = 0,
              flops: bool = False, eval_split: str = "test", budget_s: int = BUDGET_S) -> dict | None:
    """Run one registered strategy in its own process and merge its row into ``out`` under ``label``, with
    ``within_budget`` judged against ``budget_s``."""
    result = runs / f"{label}.bench.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", strategy, "--data", str(data),
           "--runs", str(runs / label), "--result", str(result), "--seed", str(seed), "--eval-split", eval_split]
    for pair in router_args:
        cmd += ["--router-arg", pair]
    if flops:
        cmd.append("--flops")
    load_before = os.getloadavg()
    print(f"[bench] {label} ...", flush=True)
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        print(f"[bench] {label} failed with exit code {proc.returncode}", flush=True)
        return None
    row = json.loads(result.read_text())
    row["within_budget"] = row["wall_seconds"] <= budget_s
    row["load_average_before"] = [round(x, 2) for x in load_before]
    row["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing.setdefault("machine", {}).update({"cpus": os.cpu_count(), "budget_seconds": budget_s})
    existing.setdefault("strategies", {})[label] = row
    atomic_write_text(out, json.dumps(existing, indent=1) + "\n")
    print(f"[bench] {label}: {row['wall_seconds']} s, peak RSS {row['peak_rss_mb']} MiB, M {row['M_acc']} "
          f"F {row['F_acc']} D {row['D_acc']} D-FGT {row['D_fgt']}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a built CMRBench folder (cmrbench build --out DIR)")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--router-arg", action="append", help="key=value passed to every router")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--runs", type=Path, default=None, help="where results JSON go (default: a temp folder)")
    parser.add_argument("--flops", action="store_true",
                        help="count training FLOPs per experience (torch FlopCounterMode; barely changes wall time)")
    parser.add_argument("--eval-split", choices=["test", "validation"], default="test",
                        help="score test prompts (default) or validation prompts (for tuning; see cmrbench evaluate)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    runs = args.runs or Path(tempfile.mkdtemp(prefix="cmrbench-trainable-"))
    for name in args.strategies:
        run_entry(name, name, args.router_arg or [], args.data, runs, args.out, args.seed, args.flops, args.eval_split)


if __name__ == "__main__":
    main()
