"""Long streams: how each strategy's training cost and accuracy move with the number of experiences.

    python benchmarks/long_streams.py --sources ../shared/data/raw                  # timeline 4, 8, 16; every row
    python benchmarks/long_streams.py --sources DIR --experiences 8 16 --rows ncm naive
    python benchmarks/long_streams.py --table                                       # what is there, as a table

The timeline stream re-slices the paper's prompts by model creation date into N experiences of equal model
counts (``cmrbench build --stream timeline --experiences N``; built into the cache once). Each row runs there
with ``cmrbench evaluate`` into ``results/CMRBench-v1-timeline-N/`` (complete runs are skipped, partial ones
resumed), so the same data is learnt in 4, 8 or 16 steps. From the results files it collects learn seconds per
experience and in total, route seconds, and the final / stream average accuracy and forgetting per level, writes
``benchmarks/out/long_streams.json`` and draws ``benchmarks/out/long_streams.png`` (learn time per experience,
total learn time against N, and final D-Acc against N) and ``long_streams_matrices.png`` (each row's D accuracy
matrix on its longest stream). ``growth`` is the exponent of total learn time in N
between the shortest and longest stream measured: about 0 when each prompt is learnt once (the same work however
the stream is sliced), about 1 when every experience retrains on everything seen so far (experience t learns t/N
of the data, so the total grows as (N + 1) / 2).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from cmrbench.data import default_data_dir  # noqa: E402
from cmrbench.fileio import atomic_write_text  # noqa: E402
from cmrbench.results import LEVELS, load_results  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "long_streams.json"
# row -> (registered router, router arguments): the prototype routers and the strategies whose cost differs in kind;
# the trained rows as they were run here: the top layer of MiniLM's six trained, and carve-10 before its replayed
# prompts' candidates came from the models with an example
TOP_LAYER = "freeze_layers=5"
ROWS: dict[str, tuple[str, list[str]]] = {
    "ncm": ("ncm", []), "ranpac": ("ranpac", []), "naive": ("naive", [TOP_LAYER]),
    "replay-10": ("replay-10", [TOP_LAYER]), "cumulative": ("cumulative", [TOP_LAYER]),
    "carve-10": ("carve-10", ["softmax_scope=experience", TOP_LAYER]),
}


def build_folder(n: int) -> Path:
    return default_data_dir().with_name(f"cmrbench-v1-timeline-{n}")


def results_folder(n: int) -> Path:
    return REPO / "results" / f"CMRBench-v1-timeline-{n}"


def ensure_build(n: int, sources: Path | None) -> Path:
    folder = build_folder(n)
    if not (folder / "manifest.json").is_file():
        cmd = [sys.executable, "-m", "cmrbench", "build", "--stream", "timeline", "--experiences", str(n),
               "--out", str(folder)]
        subprocess.run(cmd + (["--sources", str(sources)] if sources else []), check=True, cwd=REPO)
    return folder


def results_file(n: int, row: str) -> Path:
    return results_folder(n) / f"{row}__CMRBench-v1-timeline__seed0.json"


def run(n: int, row: str, data: Path) -> None:
    path = results_file(n, row)
    if path.is_file() and load_results(path).status == "complete":
        return
    router, args = ROWS[row]
    cmd = [sys.executable, "-m", "cmrbench", "evaluate", "--router", router, "--run-name", row, "--data", str(data),
           "--out", str(results_folder(n)), "--no-progress"]
    for pair in args:
        cmd += ["--router-arg", pair]
    if path.is_file():
        cmd.append("--resume")
    print(f"[long streams] {row} on timeline-{n} ...", flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)
    shutil.rmtree(path.with_name(path.name.replace(".json", ".checkpoints")), ignore_errors=True)  # weights only


def collect(sizes: list[int]) -> dict:
    """Every complete run of every row on every stream length, and each row's growth in N."""
    out: dict = {"rows": {}, "growth": {}}
    for row in ROWS:
        for n in sizes:
            path = results_file(n, row)
            if not path.is_file() or load_results(path).status != "complete":
                continue
            r = load_results(path)
            out["rows"][f"{row}/{n}"] = {
                "row": row, "experiences": n, "learn_seconds": [round(s, 2) for s in r.timings.learn_seconds],
                "learn_seconds_total": round(sum(r.timings.learn_seconds), 1),
                "route_seconds_total": round(sum(r.timings.route_seconds), 1),
                "results_file": str(path.relative_to(REPO)),
                "domain_matrix": r.matrices["domain"]["acc@1"],
                **{lv: {"final_average_accuracy": r.summary[lv].final_average_accuracy,
                        "stream_average_accuracy": r.summary[lv].stream_average_accuracy,
                        "forgetting": r.summary[lv].forgetting} for lv in LEVELS}}
        mine = sorted((v for v in out["rows"].values() if v["row"] == row), key=lambda v: v["experiences"])
        if len(mine) > 1 and mine[0]["learn_seconds_total"] > 0:
            a, b = mine[0], mine[-1]
            out["growth"][row] = round(math.log(b["learn_seconds_total"] / a["learn_seconds_total"])
                                       / math.log(b["experiences"] / a["experiences"]), 2)
    return out


def table(results: dict) -> str:
    lines = ["| row | N | learn s (total) | learn s (last exp.) | route s | D final | D stream avg | D-FGT |",
             "|---|---|---|---|---|---|---|---|"]
    for v in sorted(results["rows"].values(), key=lambda v: (list(ROWS).index(v["row"]), v["experiences"])):
        d = v["domain"]
        fgt = "–" if d["forgetting"] is None else f"{100 * d['forgetting']:.1f}"
        lines.append(f"| {v['row']} | {v['experiences']} | {v['learn_seconds_total']:.0f} | "
                     f"{v['learn_seconds'][-1]:.0f} | {v['route_seconds_total']:.0f} | "
                     f"{100 * d['final_average_accuracy']:.1f} | {100 * d['stream_average_accuracy']:.1f} | {fgt} |")
    growth = ", ".join(f"{row} {g}" for row, g in results["growth"].items())
    return "\n".join(lines) + (f"\n\ngrowth of total learn time in N (exponent): {growth}\n" if growth else "\n")


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for i, row in enumerate(ROWS):
        mine = sorted((v for v in results["rows"].values() if v["row"] == row), key=lambda v: v["experiences"])
        if not mine:
            continue
        colour = f"C{i}"
        longest = mine[-1]
        axes[0].plot(range(1, longest["experiences"] + 1), longest["learn_seconds"], marker=".", color=colour,
                     label=f"{row} (N={longest['experiences']})")
        axes[1].plot([v["experiences"] for v in mine], [max(v["learn_seconds_total"], 0.01) for v in mine],
                     marker="o", color=colour, label=row)
        axes[2].plot([v["experiences"] for v in mine], [100 * v["domain"]["final_average_accuracy"] for v in mine],
                     marker="o", color=colour, label=row)
    axes[0].set(xlabel="experience", ylabel="learn seconds", title="learn time per experience")
    axes[1].set(xlabel="experiences in the stream", ylabel="seconds", title="total learn time", xscale="log",
                yscale="log")
    axes[2].set(xlabel="experiences in the stream", ylabel="D-Acc (%)", title="final average D-Acc", xscale="log")
    sizes = sorted({v["experiences"] for v in results["rows"].values()})
    for ax in axes[1:]:
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
    for ax in axes:
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_matrices(results: dict, path: Path) -> None:
    """The D accuracy matrix (row: after learning experience i; column: test set of experience j) of every row
    on the longest stream it was run on: the lower triangle shows what each strategy keeps and what it forgets."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    longest = {}
    for v in results["rows"].values():
        if v["experiences"] > longest.get(v["row"], {"experiences": 0})["experiences"]:
            longest[v["row"]] = v
    shown = [longest[row] for row in ROWS if row in longest]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown) + 0.8, 3.6), squeeze=False)
    for ax, v in zip(axes[0], shown):
        matrix = np.array([[np.nan if x is None else 100 * x for x in line] for line in v["domain_matrix"]])
        image = ax.imshow(matrix, vmin=40, vmax=90, cmap="viridis")
        ax.set(title=f"{v['row']} (N={v['experiences']})", xlabel="test set of experience")
        ticks = range(0, v["experiences"], max(1, v["experiences"] // 4))
        ax.set_xticks(list(ticks), [str(i + 1) for i in ticks])
        ax.set_yticks(list(ticks), [str(i + 1) for i in ticks])
    axes[0][0].set_ylabel("after learning experience")
    fig.colorbar(image, ax=axes[0].tolist(), label="D-Acc (%)", shrink=0.9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=Path, default=None, help="upstream mirror for the builds")
    parser.add_argument("--experiences", nargs="+", type=int, default=[4, 8, 16])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--table", action="store_true", help="only print what the results files hold")
    args = parser.parse_args()
    if not args.table:
        for n in args.experiences:
            data = ensure_build(n, args.sources)
            for row in args.rows:
                run(n, row, data)
    results = collect(sorted(set(args.experiences) | {4, 8, 16}))
    atomic_write_text(OUT, json.dumps(results, indent=1, sort_keys=True) + "\n")
    if results["rows"]:
        plot(results, OUT.with_suffix(".png"))
        plot_matrices(results, OUT.with_name("long_streams_matrices.png"))
    print(table(results))


if __name__ == "__main__":
    main()
