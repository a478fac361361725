"""Hyper-parameter choices of the trained and frozen-feature routers, made on the validation split only.

    python benchmarks/tune.py --data DIR                      # every row (hours on 2 cores)
    python benchmarks/tune.py --data DIR --rows ncm/card=0.25 ranpac/ridge=1000
    python benchmarks/tune.py --data DIR --rows carve-10/far48+one-phase --seeds 1 2   # more seeds of a row
    python benchmarks/tune.py --table                         # markdown table of what was measured

Every row runs ``cmrbench evaluate --eval-split validation`` (seed 0 unless ``--seeds`` says more) in its own process through
``bench_trainable.run_entry``: each experience's validation prompts are scored and withheld from the router,
so no choice here looks at a test prompt. Results go to ``benchmarks/out/validation.json``. Rows are grouped
by the question they answer; the configs in ``baselines/configs/`` and the routers' defaults record the
answers (see docs/results.md, "How the settings were chosen").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trainable import run_entry  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "validation.json"
BUDGET_S = 20 * 60

# the shared trained-router settings the questions below start from, and what each row changes (every row spells
# out its settings, so it means the same whatever the defaults in baselines/configs/ are now)
TOP_LAYER = ["freeze_layers=5"]                                                  # the top layer of MiniLM's 6 trained
PAPER = ["init=random", "projection_init=xavier", "dim=256", "lr_registry=0.03", "card_examples=false",
         "softmax_scope=all", "lr_projection=3e-3", "lr_backbone=1e-4"] + TOP_LAYER  # the first defaults (Xavier rows)
FAST = ["softmax_scope=all", "lr_projection=3e-3", "lr_backbone=1e-4"] + TOP_LAYER  # the first defaults' loss and speed
PROTO = FAST + ["projection_init=orthogonal", "dim=384", "lr_registry=0.001"]   # prototype rows in an isometric space
CARDS = PROTO + ["card_examples=true"]
ACE = CARDS + ["softmax_scope=experience"]
SLOW = ACE + ["lr_projection=3e-4", "lr_backbone=2e-5"]                           # the shared defaults chosen here
ROWS_ONLY = ACE + ["freeze_layers=6", "lr_projection=0", "lr_registry=0.003"]
SETS_ACE = SLOW + ["softmax_scope=experience"]                                   # CARvE's sets from the experience
FAR48 = SETS_ACE + ["semantic_negatives=0", "far_negatives=48"]                  # CARvE's default chosen here
ROWS: dict[str, tuple[str, list[str], str]] = {
    # frozen-feature routers
    **{f"ncm/card={w}": ("ncm", [f"card_weight={w}"], "NCM: weight of a card description against one prompt")
       for w in ("0", "0.25", "0.5", "1")},
    **{f"ranpac/features={m},ridge={r},norm={n}": (
        "ranpac", [f"features={m}", f"ridge={r}", f"normalize_weights={n}"], "RanPAC: width, ridge strength, "
        "column normalisation") for m in (2000, 5000) for r in (100, 1000, 10000) for n in ("true", "false")},
    # what starts the trained routers
    "naive/paper-init": ("naive", PAPER, "Xavier rows and projection d 256, the first defaults"),
    "naive/proto-orth": ("naive", PROTO, "prototype rows, orthogonal projection d 384"),
    # what training adds over the prototypes, and what the frozen prior keeps
    "naive/cards": ("naive", CARDS, "+ new models' cards as training examples"),
    "naive/cards+prior": ("naive", CARDS + ["prior_weight=0.5"], "+ ncm prior, weight 0.5"),
    "replay-20/cards": ("replay-20", CARDS, "replay 20 %, cards"),
    # what makes them forget: the full softmax pushes old rows down (docs/results.md); the asymmetric cross-entropy
    "naive/cards+ace": ("naive", ACE, "current prompts scored against this experience's models only (ER-ACE)"),
    "replay-20/cards+ace": ("replay-20", ACE, "replay 20 %, ACE"),
    "ewc/cards+ace": ("ewc", ACE, "EWC, ACE"),
    # what is left is drift of the shared projection and top layer: slow learners
    "naive/cards+ace+slow": ("naive", SLOW, "naive, ACE, slow projection / top layer"),
    "replay-20/cards+ace+slow": ("replay-20", SLOW, "replay 20 %, ACE, slow projection / top layer"),
    "naive/cards+ace+slow+prior": ("naive", SLOW + ["prior_weight=0.5"],
                                   "naive, ACE, slow, ncm prior 0.5 (an ensemble with the frozen prototypes)"),
    "naive/cards+ace+slow+len256": ("naive", SLOW + ["max_seq_len=256"], "naive, ACE, slow, 256 tokens"),
    # only the registry rows learn (encoder and projection frozen): with ACE an old row is never a negative of a
    # new prompt, so nothing that routes earlier experiences moves unless replayed
    "naive/rows+ace": ("naive", ROWS_ONLY + ["lr_registry=0.001"], "naive, ACE, rows only (lr 1e-3)"),
    "naive/rows+ace+lr3e-3": ("naive", ROWS_ONLY, "naive, ACE, rows only (lr 3e-3)"),
    "naive/rows+ace+len256": ("naive", ROWS_ONLY + ["max_seq_len=256"],
                              "naive, ACE, rows only (lr 3e-3), 256 tokens as the frozen encoder reads"),
    "replay-20/rows+ace": ("replay-20", ROWS_ONLY + ["lr_registry=0.001"], "replay 20 %, ACE, rows only"),
    **{f"naive/rows+ace+smooth={e}": ("naive", ROWS_ONLY + [f"domain_smoothing={e}"],
                                      "naive, ACE, rows only (lr 3e-3), target mass on the gold domain's models")
       for e in ("0.1", "0.3")},
    # replay forgets the models it holds no prompt of (benchmarks/replay_forgetting.py): a replayed prompt's full
    # softmax pushes every unreplayed old row down. Scored against the models with a training example instead:
    "replay-20/rows+memory": ("replay-20", ROWS_ONLY + ["lr_registry=0.001", "softmax_scope=memory"],
                              "replay 20 %, rows only, replayed prompts vs models with examples"),
    "replay-20/slow+memory": ("replay-20", SLOW + ["softmax_scope=memory"],
                              "replay 20 %, slow, replayed prompts vs models with examples"),
    "replay-10/slow+memory": ("replay-10", SLOW + ["softmax_scope=memory"],
                              "replay 10 %, slow, replayed prompts vs models with examples"),
    # CARvE on the shared settings
    "carve-10/slow": ("carve-10", SLOW + ["softmax_scope=all"], "CARvE K = 64 on the shared settings"),
    "carve-10/slow+all": ("carve-10", SLOW + ["candidates=all"], "CARvE, every model a candidate, ACE"),
    "carve-10/slow+memory": ("carve-10", SLOW + ["candidates=all", "softmax_scope=memory"],
                             "CARvE's replay, anchoring and schedule; prompts scored as replay's (vs models with "
                             "examples) instead of its candidate sets"),
    # the same candidate sets, drawn only from the models an example may be contrasted with (softmax_scope)
    "carve-10/slow+sets-ace": ("carve-10", SETS_ACE,
                               "CARvE, current prompts' candidates from this experience's models only"),
    "carve-10/slow+sets-memory": ("carve-10", SLOW + ["softmax_scope=memory"],
                                  "CARvE, and replayed prompts' candidates from the models with an example"),
    # CARvE learns the current experience worse than naive from E1 on, before replay, anchoring or the two-phase
    # schedule act: what differs there is its sets (38 of 63 negatives from the gold domain) and its batches
    "carve-10/sets-ace+far": ("carve-10", SETS_ACE + ["semantic_negatives=10", "far_negatives=38"],
                              "CARvE, 10 same-domain negatives, 38 far"),
    "carve-10/sets-ace+far48": ("carve-10", FAR48, "CARvE, no same-domain negatives, 48 far"),
    "carve-10/sets-ace+far63": ("carve-10", SETS_ACE + ["semantic_negatives=0", "hard_negatives=0", "far_negatives=63"],
                                "CARvE, no same-domain or mined negatives: 63 far (random within the scope)"),
    # from experience 2 on CARvE still learns each experience less than naive: its schedule and anchoring
    "carve-10/far48+one-phase": ("carve-10", FAR48 + ["two_phase=false"],
                                 "CARvE (0 / 48), one phase instead of the head-only first 40 %"),
    "carve-10/far48+no-anchor": ("carve-10", FAR48 + ["anchoring=none"],
                                 "CARvE (0 / 48), no anchoring of rows and projection"),
    "carve-10/sets-ace+shuffled": ("carve-10", SETS_ACE + ["domains_per_batch=0"],
                                   "CARvE, plainly shuffled batches instead of 2 domains per batch"),
    # after learning E2, naive and CARvE send a fifth of E2's prompts to models only E1 had (4-7 % for ncm): with
    # ER-ACE those rows are never negatives of a new prompt. Kept in the softmax as negatives the loss does not move:
    "naive/slow+detached": ("naive", SLOW + ["out_of_scope=detached"],
                            "naive, ACE, slow; rows outside the experience stay in the softmax, detached"),
    "replay-20/memory+detached": ("replay-20", SLOW + ["softmax_scope=memory", "out_of_scope=detached"],
                                  "replay 20 %, memory scope, rows outside it detached negatives (replayed "
                                  "prompts hold the encoder)"),
    # an ensemble with the frozen prototypes: ncm's cosines mixed into the logits while training and routing
    "carve-10/far48+prior": ("carve-10", FAR48 + ["prior_weight=0.5"],
                             "CARvE (0 / 48), frozen MiniLM prototypes mixed into its logits (weight 0.5)"),
    # with softmax_scope=experience a replayed prompt's candidates are drawn from every registered model, so its 48 far
    # negatives push down old models that have no replayed prompt: the push finding 3 removed from random replay
    "carve-10/far48+memory": ("carve-10", FAR48 + ["softmax_scope=memory"],
                              "CARvE (0 / 48), replayed prompts' candidates from the models with an example"),
    "carve-10/far48+prior+memory": ("carve-10", FAR48 + ["prior_weight=0.5", "softmax_scope=memory"],
                                    "CARvE (0 / 48), prior 0.5, replayed prompts' candidates from the models with "
                                    "an example (replay's scope)"),
    "replay-10/slow+memory+prior": ("replay-10", SLOW + ["softmax_scope=memory", "prior_weight=0.5"],
                                    "replay 10 %, memory scope, ncm prior 0.5 (CARvE's comparison on validation)"),
    # the authors' configuration (config=carve-authors) on this encoder, and what limits it there
    "carve-10/authors": ("carve-10", ["config=carve-authors"] + TOP_LAYER, "CARvE as the authors' code ran it"),
    "carve-10/authors+proto": ("carve-10", ["config=carve-authors", "init=prototype"] + TOP_LAYER,
                               "the authors' configuration, new registry rows starting as prototypes, not Xavier noise"),
    # joint training, the upper bound, ended below cumulative training with 4 passes (docs/results.md, finding 6);
    # cumulative has passed over experience 1's prompts 16 times by the end: do more passes help, and the continual rows?
    **{f"joint/slow+epochs={e}": ("joint", SLOW + ["softmax_scope=all", f"joint_epochs={e}"],
                                  f"joint on the shared settings, {e} passes over the union at the last experience")
       for e in (4, 8)},
    "naive/slow+epochs=8": ("naive", SLOW + ["epochs=8"], "naive, ACE, slow, 8 passes over each experience"),
    "naive/slow+prior+epochs=8": ("naive", SLOW + ["prior_weight=0.5", "epochs=8"],
                                  "naive, ACE, slow, ncm prior 0.5, 8 passes over each experience"),
    "carve-10/far48+prior+epochs=8": ("carve-10", FAR48 + ["prior_weight=0.5", "epochs=8"],
                                      "CARvE (0 / 48), ncm prior 0.5, 8 passes over each experience"),
    # the top layer of six was trained so far because it fits the 2-core budget, not because validation chose it:
    # does letting more of the encoder adapt (the quick check trained all six) pay on the stream?
    **{f"naive/slow+layers={n}": ("naive", SLOW + [f"freeze_layers={6 - n}"],
                                  f"naive, ACE, slow, the top {n} of MiniLM's 6 layers trained (lr 2e-5)")
       for n in (3, 5)},
    **{f"carve-10/far48+memory+layers={n}": ("carve-10", FAR48 + ["softmax_scope=memory", f"freeze_layers={6 - n}"],
                                             f"CARvE (0 / 48, memory scope), the top {n} of 6 layers trained")
       for n in (3, 5)},
    "replay-10/slow+memory": ("replay-10", SLOW + ["softmax_scope=memory"],
                              "replay 10 %, memory scope, the top layer trained (replay-10's setting)"),
    **{f"replay-10/slow+memory+layers={n}": ("replay-10", SLOW + ["softmax_scope=memory", f"freeze_layers={6 - n}"],
                                             f"replay 10 %, memory scope, the top {n} of 6 layers trained")
       for n in (3, 5)},
}


def seeded(label: str, seed: int) -> str:
    """The results key of a row's run with ``seed``: seed 0 keeps the bare label (the rows measured first)."""
    return label if seed == 0 else f"{label}@seed={seed}"


def table(results: dict) -> str:
    """Markdown table of the measured rows; a row run with several seeds shows mean ± std (n) of its seeds."""
    lines = ["| row | question | seeds | M-Acc | F-Acc | D-Acc | D-FGT | wall (s) |", "|---|---|---|---|---|---|---|---|"]
    strategies = results.get("strategies", {})
    for label, (_, _, what) in ROWS.items():
        runs = [r for key, r in strategies.items() if key.split("@seed=")[0] == label]
        if not runs:
            continue
        cells = []
        for metric in ("M_acc", "F_acc", "D_acc", "D_fgt"):
            values = [r[metric] for r in runs]
            cells.append(f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1
                         else f"{values[0]}")
        wall = round(statistics.median(r["wall_seconds"] for r in runs))
        lines.append(f"| {label} | {what} | {len(runs)} | {' | '.join(cells)} | {wall} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a built CMRBench folder (cmrbench build --out DIR)")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), metavar="ROW",
                        help="rows to run (default: all); see ROWS in this file")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="SEED",
                        help="seeds to run each row with (default: 0); rows of seed N > 0 are stored as ROW@seed=N")
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
        for seed in args.seeds:
            run_entry(seeded(label, seed), router, router_args, args.data, runs, args.out, seed,
                      eval_split="validation", budget_s=BUDGET_S)


if __name__ == "__main__":
    main()
