"""HuggingBench step 7: assign query rows to experiences E3/E4 and to train/val/test.

1. Recent models are split at the median of their creation dates (one date per model): models created
   on or before the median go to E3, later ones to E4.
2. ``move_prompts`` random prompts of each of ``move_models`` random E3 recent models that have at least
   ``move_prompts`` prompts move to E4 (so E3 and E4 share some models).
3. Legacy models: ``legacy_to_e3`` random ones go to E3, the rest to E4.
4. A model with fewer than ``min_prompts`` prompts in an experience is dropped from that experience.
5. Each (experience, model) group is split 80/10/10 into train/val/test (so every split is
   stratified by model); val and test get ``round(n * fraction)`` rows (halves round up), train the rest.

All randomness comes from one ``numpy.random.Generator`` seeded with ``seed``, drawn in a fixed order
over models sorted by id and prompts sorted by text, so the result depends only on the rows and the seed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np

EXPERIENCES = (3, 4)
SPLITS = ("train", "val", "test")


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def build_experiences(rows: Iterable[dict], *, seed: int, move_models: int = 60, move_prompts: int = 10,
                      legacy_to_e3: int = 70, min_prompts: int = 10,
                      fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                      stats: Counter | None = None) -> list[dict]:
    """Rows (dicts with ``model_id``, ``instruction``, ``created_at`` ms and ``legacy``) with
    ``experience`` (3/4) and ``split`` added, sorted by (experience, model_id, split, instruction).
    """
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    stats = stats if stats is not None else Counter()
    rng = np.random.default_rng(seed)
    by_model: dict[str, list[dict]] = {}
    for row in rows:
        by_model.setdefault(row["model_id"], []).append(dict(row))
    for model_rows in by_model.values():
        model_rows.sort(key=lambda r: r["instruction"])
    models = sorted(by_model)
    legacy_of = {m: bool(by_model[m][0].get("legacy")) for m in models}
    created = {m: min(int(r["created_at"]) for r in by_model[m]) for m in models}

    recent = [m for m in models if not legacy_of[m]]
    legacy = [m for m in models if legacy_of[m]]
    eligible: list[str] = []
    if recent:
        median = float(np.median([created[m] for m in recent]))
        for m in recent:
            for r in by_model[m]:
                r["experience"] = 3 if created[m] <= median else 4
        stats["recent models in E3"] = sum(created[m] <= median for m in recent)
        stats["recent models in E4"] = len(recent) - stats["recent models in E3"]
        eligible = [m for m in recent if created[m] <= median and len(by_model[m]) >= move_prompts]
    chosen = sorted(rng.choice(eligible, size=min(move_models, len(eligible)), replace=False).tolist()) \
        if eligible else []
    for m in chosen:
        for i in sorted(rng.choice(len(by_model[m]), size=move_prompts, replace=False).tolist()):
            by_model[m][i]["experience"] = 4
    stats["models with prompts moved to E4"] = len(chosen)
    stats["prompts moved to E4"] = len(chosen) * move_prompts

    order = rng.permutation(len(legacy)).tolist()
    for rank, i in enumerate(order):
        for r in by_model[legacy[i]]:
            r["experience"] = 3 if rank < legacy_to_e3 else 4
    stats["legacy models in E3"] = min(legacy_to_e3, len(legacy))
    stats["legacy models in E4"] = len(legacy) - stats["legacy models in E3"]

    out: list[dict] = []
    for exp in EXPERIENCES:
        for m in models:
            group = [r for r in by_model[m] if r["experience"] == exp]
            if not group:
                continue
            if len(group) < min_prompts:
                stats[f"E{exp} models dropped (< {min_prompts} prompts)"] += 1
                stats[f"E{exp} prompts dropped with them"] += len(group)
                continue
            n = len(group)
            n_val, n_test = _round_half_up(n * fractions[1]), _round_half_up(n * fractions[2])
            labels = ["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test
            for i, label in zip(rng.permutation(n).tolist(), labels):
                group[i]["split"] = label
            out.extend(group)
    rank = {s: i for i, s in enumerate(SPLITS)}
    out.sort(key=lambda r: (r["experience"], r["model_id"], rank[r["split"]], r["instruction"]))
    for exp in EXPERIENCES:
        for split in SPLITS:
            stats[f"E{exp} {split} rows"] = sum(1 for r in out if r["experience"] == exp and r["split"] == split)
    return out
