"""Speed and memory of the data build and of the harness itself; writes benchmarks/out/harness.json.

Targets (issues): full build < 60 s on 2 cores; scoring stored predictions for the whole stream < 5 s;
harness overhead per routed prompt small next to any real router.

    python benchmarks/bench_harness.py --sources ../shared/data/raw [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out" / "harness.json"


def _timed_build(sources: Path, out: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of `cmrbench build` in a fresh process."""
    code = ("import resource, sys, time\nfrom cmrbench.cli import main\nt = time.perf_counter()\n"
            f"rc = main(['build', '--sources', {str(sources)!r}, '--out', {str(out)!r}, '--overwrite', '--offline'])\n"
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
            "sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, rss = done.stdout.strip().splitlines()[-1].split()
    return float(seconds), float(rss)


class ConstantRouter:
    """Answers instantly, so evaluate()'s wall time is the harness's own cost."""

    def __init__(self) -> None:
        from cmrbench.protocol import RouterMeta
        self.meta = RouterMeta(name="constant", zero_shot=True)
        self.answer: list = []

    def learn(self, experience) -> None:
        self.answer = [(m, 1.0) for m in experience.classes_seen_so_far[:10]]

    def route(self, prompts, top_k):
        return [self.answer[:top_k] for _ in prompts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import polars as pl

    from cmrbench.data import Benchmark
    from cmrbench.harness import evaluate
    from cmrbench.scoring import score_predictions

    report: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cmrbench-v1"
        builds = [_timed_build(args.sources, folder) for _ in range(args.repeats)]
        report["build_seconds_median"] = statistics.median(b[0] for b in builds)
        report["build_seconds_all"] = [round(b[0], 2) for b in builds]
        report["build_peak_rss_mb_median"] = statistics.median(b[1] for b in builds)

        bench = Benchmark(folder)
        t0 = time.perf_counter()
        res = evaluate(ConstantRouter(), bench, Path(tmp) / "runs", progress=False)
        wall = time.perf_counter() - t0
        routed = sum(bench.test_set(j).height * (bench.n_experiences - j + 1) for j in range(1, 5))
        report["evaluate_wall_seconds_constant_router"] = wall
        report["routed_prompts"] = routed
        report["harness_overhead_ms_per_routed_prompt"] = 1000 * wall / routed
        preds = pl.read_parquet(Path(tmp) / "runs" / res.predictions_file)
        times = []
        for _ in range(max(args.repeats, 5)):
            t0 = time.perf_counter()
            score_predictions(preds, bench, bench.n_experiences)
            times.append(time.perf_counter() - t0)
        report["scoring_seconds_median"] = statistics.median(times)
        report["scoring_seconds_all"] = [round(t, 3) for t in times]
    report["targets"] = {"build_seconds": 60, "scoring_seconds": 5}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
