"""The results of record: every row of the README's tables, run on the test split into ``results/<build>/``.

    python benchmarks/record.py --data DIR                  # every missing run (hours on 2 cores)
    python benchmarks/record.py --data DIR --rows ncm naive # some rows
    python benchmarks/record.py --list                      # rows, seeds and what is already there

Each (row, seed) is one ``cmrbench evaluate --run-name ROW`` in its own process, written to
``results/CMRBench-v1-paper/`` (results JSON + predictions Parquet; checkpoints are deleted once the run is
complete). Runs already complete are skipped ("only missing"), a partial one is resumed. Then

    cmrbench leaderboard results/CMRBench-v1-paper

verifies every file against its predictions and writes the tables the README shows, and

    python benchmarks/record.py --reproductions

writes ``baselines/reproductions/<row>.yaml`` from each row's seed-0 result of record (``cmrbench reproduce``
then reruns and checks exactly these numbers), and

    python benchmarks/record.py --readme

copies the leaderboard's tables into README.md (between its two ``results of record`` markers). Rows whose router draws
nothing at random (retrieval, ncm) run one seed; the others three. Settings come from the validation split
(``benchmarks/tune.py``), never from these runs.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from cmrbench.results import Results

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "CMRBench-v1-paper"
README = REPO / "README.md"
README_BEGIN = "<!-- results of record: written by python benchmarks/record.py --readme, from leaderboard.md -->"
README_END = "<!-- end of the results of record -->"
SEEDS3 = (0, 1, 2)
MPNET = ["backbone=mpnet", "freeze_layers=11", "dim=768"]       # a trained router on all-mpnet-base-v2
# CARvE's candidate scope before memory was chosen on validation (a replayed prompt's set from every model):
# carve-20-prior and carve-10-mpnet were run with it
EXPERIENCE_SETS = "softmax_scope=experience"
# the top layer of MiniLM's six trained, as every trained MiniLM row was run before more layers were chosen on
# validation (docs/results.md, finding 7); the rows run again since carry no pin
TOP_LAYER = "freeze_layers=5"
# new reproduction files: retrieval and frozen routers repeat to float precision, trained ones within a point
TOLERANCE = {r: 0.3 for r in ("bm25", "bm25-lower", "lucene-bm25", "dense", "splade", "ncm", "ranpac")} | {
    r: 0.1 for r in ("random", "most-frequent", "oracle", "domain-oracle")}
# run name -> (registered router, router arguments, seeds)
ROWS: dict[str, tuple[str, list[str], tuple[int, ...]]] = {
    "random": ("random", [], (0,)),
    "most-frequent": ("most-frequent", [], (0,)),
    "oracle": ("oracle", [], (0,)),
    "domain-oracle": ("domain-oracle", [], (0,)),
    "bm25": ("bm25", [], (0,)),
    "bm25-lower": ("bm25-lower", [], (0,)),
    "lucene-bm25": ("lucene-bm25", [], (0,)),
    "dense": ("dense", [], (0,)),
    "dense-mpnet": ("dense", ["model=all-mpnet-base-v2"], (0,)),
    "splade": ("splade", [], (0,)),
    "ncm": ("ncm", [], (0,)),
    "ncm-mpnet": ("ncm", ["model=all-mpnet-base-v2"], (0,)),
    "ranpac": ("ranpac", [], SEEDS3),
    "naive": ("naive", [], SEEDS3),
    "lwf": ("lwf", [TOP_LAYER], SEEDS3),
    "ewc": ("ewc", [TOP_LAYER], SEEDS3),
    "replay-10": ("replay-10", [], SEEDS3),
    "replay-20": ("replay-20", [TOP_LAYER], SEEDS3),
    "merge-avg": ("merge-avg", [TOP_LAYER], SEEDS3),
    "merge-ties": ("merge-ties", [TOP_LAYER], SEEDS3),
    "merge-dare": ("merge-dare", [TOP_LAYER], SEEDS3),
    "cumulative": ("cumulative", [], SEEDS3),
    "joint": ("joint", [], SEEDS3),
    "carve-10": ("carve-10", [], SEEDS3),
    "carve-20": ("carve-20", [TOP_LAYER], SEEDS3),
    "carve-10-authors": ("carve-10", ["config=carve-authors", TOP_LAYER], (0,)),
    "carve-20-authors": ("carve-20", ["config=carve-authors", TOP_LAYER], (0,)),
    # the first replay setting, kept for finding 3 (benchmarks/replay_forgetting.py): replayed prompts scored
    # against every model seen so far (ER-ACE's rule for old examples) instead of those with an example
    "replay-20-ace": ("replay-20", ["softmax_scope=experience", TOP_LAYER], (0,)),
    # the frozen prototype prior the validation split prefers (docs/results.md, finding 5); cumulative keeps
    # prior_weight=0 until run again
    **{f"{row}-prior": (row, ["prior_weight=0.5", TOP_LAYER], SEEDS3)
       for row in ("naive", "replay-10", "replay-20", "ewc", "lwf", "merge-avg", "merge-ties", "merge-dare", "carve-10")},
    "carve-20-prior": ("carve-20", ["prior_weight=0.5", EXPERIENCE_SETS, TOP_LAYER], SEEDS3),
    # run before joint_epochs=8 was chosen on validation: four passes over the union at the last experience
    "joint-prior": ("joint", ["prior_weight=0.5", "joint_epochs=4"], SEEDS3),
    # trained rows on the paper's encoder: MiniLM's settings, the top layer of twelve trained, dim = mpnet's width;
    # cumulative is the dearest (35 minutes of a 2-core machine a seed)
    "carve-10-mpnet": ("carve-10", MPNET + [EXPERIENCE_SETS], SEEDS3),
    "cumulative-mpnet": ("cumulative", MPNET, SEEDS3),
}


def stem(name: str, seed: int) -> str:
    return f"{name}__CMRBench-v1-paper__seed{seed}"


def status(out: Path, name: str, seed: int) -> str:
    path = out / f"{stem(name, seed)}.json"
    if not path.is_file():
        return "missing"
    from cmrbench.results import load_results
    return load_results(path).status


def write_reproduction(name: str, out: Path) -> Path | None:
    """The reproduction file of one row, its expected numbers read from the seed-0 results of record."""
    from cmrbench.reproduce import observed
    from cmrbench.results import load_results
    path = out / f"{stem(name, 0)}.json"
    results = load_results(path) if path.is_file() else None
    if results is None or results.status != "complete":
        return None
    router, args, _ = ROWS[name]
    router_args = dict(pair.split("=", 1) for pair in args)
    flags = "".join(f" --router-arg {k}={v}" for k, v in router_args.items())
    flags += f" --run-name {name}" if name != router else ""
    target = REPO / "baselines" / "reproductions" / f"{name}.yaml"
    before = yaml.safe_load(target.read_text(encoding="utf-8")) if target.is_file() else {}
    description = before.get("description") or results.router.description or router
    tolerance = before.get("tolerance", TOLERANCE.get(router, 1.0))
    got = observed(results.summary)
    learn = sum(results.timings.learn_seconds)
    day = measured_day(results, before)
    fgt = got["domain_forgetting"]
    text = "\n".join([
        f"name: {name}",
        f"description: {json.dumps(description, ensure_ascii=False)}",
        f"router: {router}",
        f"router_args: {json.dumps(router_args)}",
        *([f"run_name: {name}"] if name != router else []),
        "seed: 0",
        f"command: cmrbench evaluate --router {router}{flags} --seed 0 --out runs/",
        f"measured_on: \"2 CPU cores, CMRBench v1 paper stream (offline mirror build), {day}; learn {learn:.0f} s\"",
        f"results_of_record: results/{out.name}/{path.name}",
        "expected:            # final average accuracy after the last experience, percent",
        f"  model: {got['model']:.2f}",
        f"  family: {got['family']:.2f}",
        f"  domain: {got['domain']:.2f}",
        f"  domain_forgetting: {'null' if fgt is None else f'{fgt:.2f}'}",
        f"tolerance: {tolerance}" + ("" if router in TOLERANCE else
                                     "       # trained routers: float summation order differs across CPUs"),
        ""])
    target.write_text(text, encoding="utf-8")
    return target


def measured_day(results: Results, before: dict) -> str:
    """When the run was made: its own record, else what the reproduction file already says (a file's mtime is
    the day it was cloned, not run)."""
    if results.run is not None:
        return results.run.finished_at[:10]
    found = re.search(r"\d{4}-\d{2}-\d{2}", before.get("measured_on", ""))
    return found.group(0) if found else time.strftime("%Y-%m-%d", time.gmtime())


def leaderboard_tables(out: Path) -> str:
    """The tables of ``out``'s leaderboard.md (from its first table row to the end), as README shows them."""
    board = (out / "leaderboard.md").read_text(encoding="utf-8")
    return board[board.index("\n| # |") + 1:].strip()


def readme_parts() -> tuple[str, str, str]:
    """README.md as (what comes before its results tables, the tables between the markers, what follows)."""
    text = README.read_text(encoding="utf-8")
    if README_BEGIN not in text or README_END not in text:
        sys.exit(f"README.md lacks the lines {README_BEGIN!r} and {README_END!r} around its results tables")
    head, rest = text.split(README_BEGIN, 1)
    quoted, tail = rest.split(README_END, 1)
    return head, quoted.strip(), tail


def write_readme(out: Path) -> None:
    """Put the leaderboard's tables between README's markers, so that README quotes no number by hand."""
    from cmrbench.fileio import atomic_write_text

    head, _, tail = readme_parts()
    atomic_write_text(README, f"{head}{README_BEGIN}\n{leaderboard_tables(out)}\n{README_END}{tail}")


def run(name: str, seed: int, data: Path, out: Path) -> bool:
    router, args, _ = ROWS[name]
    cmd = [sys.executable, "-m", "cmrbench.cli", "evaluate", "--router", router, "--run-name", name,
           "--seed", str(seed), "--data", str(data), "--out", str(out), "--no-progress"]
    for pair in args:
        cmd += ["--router-arg", pair]
    if status(out, name, seed) == "partial":
        cmd.append("--resume")
    t0 = time.perf_counter()
    print(f"[record] {name} seed {seed} ...", flush=True)
    done = subprocess.run(cmd, cwd=REPO)
    print(f"[record] {name} seed {seed}: exit {done.returncode} after {time.perf_counter() - t0:.0f} s", flush=True)
    if done.returncode == 0:
        shutil.rmtree(out / f"{stem(name, seed)}.checkpoints", ignore_errors=True)   # weights, not results
    return done.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="the CMRBench v1 build (cmrbench build)")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), metavar="ROW")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="only these seeds of each row")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--list", action="store_true", help="list rows, seeds and their state, run nothing")
    parser.add_argument("--reproductions", action="store_true",
                        help="write baselines/reproductions/<row>.yaml from the complete seed-0 runs, run nothing")
    parser.add_argument("--readme", action="store_true",
                        help="copy the tables of OUT/leaderboard.md (cmrbench leaderboard OUT) into README.md, run nothing")
    args = parser.parse_args()
    if args.list:
        width = max(len(" ".join([ROWS[n][0], *ROWS[n][1]])) for n in args.rows)
        for name in args.rows:
            router, router_args, seeds = ROWS[name]
            states = ", ".join(f"{s}: {status(args.out, name, s)}" for s in seeds)
            print(f"{name:18s} {' '.join([router, *router_args]):{width}s} {states}")
        return
    if args.reproductions:
        for name in args.rows:
            written = write_reproduction(name, args.out)
            print(f"{name:18s} {written.relative_to(REPO) if written else 'no complete seed-0 run'}")
        return
    if args.readme:
        write_readme(args.out)
        return
    if args.data is None:
        parser.error("--data is required to run rows")
    failed = []
    for name in args.rows:
        for seed in ROWS[name][2]:
            if args.seeds is not None and seed not in args.seeds:
                continue
            if status(args.out, name, seed) != "complete" and not run(name, seed, args.data, args.out):
                failed.append(f"{name}/{seed}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
