"""Hyper-parameter choices of the trained and frozen-feature routers, made on the validation split only.

    python benchmarks/tune.py --data DIR                      # every row (hours on 2 cores)
    python benchmarks/tune.py --data DIR --rows ncm/card=0.25 ranpac/ridge=1000
    python benchmarks/tune.py --table                         # markdown table of what was measured

Every row runs ``cmrbench evaluate --eval-split validation`` (seed 0) in its own process through
``bench_trainable.run_entry``: each experience's validation prompts are scored and withheld from the router,
so no choice here looks at a test prompt. Results go to ``benchmarks/out/validation.json``. Rows are grouped
by the question they answer; the configs in ``baselines/configs/`` and the routers' defaults record the
answers (see README, "How the settings were chosen").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trainable import run_entry  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "validation.json"
BUDGET_S = 20 * 60

# the shared trained-router settings the questions below start from, and what each row changes
PAPER = ["init=random"]                                                   # the earlier defaults (Xavier rows)
PROTO = ["projection_init=orthogonal", "dim=384", "lr_registry=0.001"]   # prototype rows in an isometric space
ROWS: dict[str, tuple[str, list[str], str]] = {
    # frozen-feature routers
    **{f"ncm/card={w}": ("ncm", [f"card_weight={w}"], "NCM: weight of a card description against one prompt")
       for w in ("0", "0.25", "0.5", "1")},
    **{f"ranpac/features={m},ridge={r},norm={n}": (
        "ranpac", [f"features={m}", f"ridge={r}", f"normalize_weights={n}"], "RanPAC: width, ridge strength, "
        "column normalisation") for m in (2000, 5000) for r in (100, 1000, 10000) for n in ("true", "false")},
    # what starts the trained routers
    "naive/paper-init": ("naive", PAPER, "Xavier rows, registry lr 3e-2 (the earlier default)"),
    "naive/proto": ("naive", ["lr_registry=0.001"], "prototype rows, Xavier projection (d 256)"),
    "naive/proto-orth": ("naive", PROTO, "prototype rows, orthogonal projection d 384"),
    # what training adds over the prototypes, and what the frozen prior keeps
    "naive/cards": ("naive", PROTO + ["card_examples=true"], "+ new models' cards as training examples"),
    "naive/cards+prior": ("naive", PROTO + ["card_examples=true", "prior_weight=0.5"], "+ ncm prior, weight 0.5"),
    "replay-20/cards": ("replay-20", PROTO + ["card_examples=true"], "replay 20 %, cards"),
    "replay-20/cards+prior": ("replay-20", PROTO + ["card_examples=true", "prior_weight=0.5"],
                              "replay 20 %, cards, ncm prior 0.5"),
    # what makes them forget: the full softmax pushes old rows down (see README); the asymmetric cross-entropy
    "naive/cards+ace": ("naive", PROTO + ["card_examples=true", "softmax_scope=experience"],
                        "current prompts scored against this experience's models only (ER-ACE)"),
    "replay-10/cards+ace": ("replay-10", PROTO + ["card_examples=true", "softmax_scope=experience"], "replay 10 %, ACE"),
    "replay-20/cards+ace": ("replay-20", PROTO + ["card_examples=true", "softmax_scope=experience"], "replay 20 %, ACE"),
    "ewc/cards+ace": ("ewc", PROTO + ["card_examples=true", "softmax_scope=experience"], "EWC, ACE"),
    "carve-10/cards": ("carve-10", PROTO + ["card_examples=true"], "CARvE K = 64 on the new shared settings"),
    "carve-10/cards+all+ace": ("carve-10", PROTO + ["card_examples=true", "candidates=all",
                                                   "softmax_scope=experience"], "CARvE, full softmax with ACE"),
    "naive/full": ("naive", PROTO + ["card_examples=true", "tau=0.05", "freeze_layers=0", "lr_backbone=2e-5",
                                     "epochs=3"], "all six layers trained (lr 2e-5), tau 0.05, 3 epochs"),
}


def table(results: dict) -> str:
    lines = ["| row | question | M-Acc | F-Acc | D-Acc | D-FGT | wall (s) |", "|---|---|---|---|---|---|---|"]
    for label, (_, _, what) in ROWS.items():
        r = results.get("strategies", {}).get(label)
        if r:
            lines.append(f"| {label} | {what} | {r['M_acc']} | {r['F_acc']} | {r['D_acc']} | {r['D_fgt']} | "
                         f"{r['wall_seconds']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a built CMRBench folder (cmrbench build --out DIR)")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), metavar="ROW",
                        help="rows to run (default: all); see ROWS in this file")
    parser.add_argument("--out", type=Path, default=OUT, help="results JSON (default: out/validation.json)")
    parser.add_argument("--runs", type=Path, default=None, help="where results JSON go (default: a temp folder)")
    parser.add_argument("--table", action="store_true", help="print the markdown table of --out and stop")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.out.read_text()) if args.out.exists() else {}))
        return
    if args.data is None:
        parser.error("--data is required to run rows")
    runs = args.runs or Path(tempfile.mkdtemp(prefix="cmrbench-tune-"))
    for label in args.rows:
        router, router_args, _ = ROWS[label]
        run_entry(label, router, router_args, args.data, runs, args.out, 0, eval_split="validation",
                  budget_s=BUDGET_S)


if __name__ == "__main__":
    main()
