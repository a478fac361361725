"""From source tables to CMRBench experiences: splits, labels, stable ids, and the timeline re-slicing.

The default ("paper") stream is the authors' four experiences with their test splits exactly as
released. The released training files are missing offline, so each experience's training pool is
rebuilt from every other released row of that experience's models (processed ``val``, the raw
HuggingBench files, the ToolMMBench files), deduplicated, with no test prompt of any experience in
it. When the full release files are present they are used instead, unchanged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from cmrbench.sources import SourceResolver

from .cmr_release import Release, build_cmr_release
from .apibench import build_apibench
from .families import assign_families, family_agreement
from .huggingbench.release import build_huggingbench_release
from .records import Quarantine, dedupe_key, prompt_id
from .taxonomy import category_of, task_of
from .toolmmbench import build_toolmmbench

SPLITS = ("train", "validation", "test")
VALIDATION_FRACTION = 0.15
STREAMS = ("paper", "timeline")
EXTRA_HUBS = ("torchhub", "tensorflowhub")

# Column -> dtype of every experience split in the release.
EXPERIENCE_SCHEMA: dict[str, pl.DataType] = {
    "prompt_id": pl.String(), "prompt": pl.String(), "model_id": pl.String(), "family": pl.String(),
    "family_cmrbench": pl.String(), "domain": pl.String(), "category": pl.String(), "task": pl.String(),
    "experience": pl.Int8(), "split": pl.String(), "source": pl.String(), "modality": pl.String(),
    "created_at": pl.Int64(), "origin": pl.String(),
}
MODEL_SCHEMA: dict[str, pl.DataType] = {
    "model_id": pl.String(), "family": pl.String(), "family_cmrbench": pl.String(), "domain": pl.String(),
    "category": pl.String(), "task": pl.String(), "first_experience": pl.Int8(),
    "experiences": pl.List(pl.Int8()), "families": pl.List(pl.String()), "domains": pl.List(pl.String()),
    "created_at": pl.Int64(), "card": pl.String(),
}


@dataclass
class Assembled:
    """Everything a release folder holds, before it is written."""

    experiences: dict[int, pl.DataFrame]       # rows of all splits, EXPERIENCE_SCHEMA
    models: pl.DataFrame                       # MODEL_SCHEMA, one row per model id
    cards: pl.DataFrame                        # card_id, model_id, experience, domain, card
    stream: str
    seed: int
    notes: dict[str, object] = field(default_factory=dict)
    missing_sources: list[str] = field(default_factory=list)  # optional upstream files that were absent


def _hash_order(seed: int, ids: list[str]) -> list[int]:
    """A seeded, platform-independent permutation (sha256 of seed and id)."""
    keys = [hashlib.sha256(f"{seed}\x1f{i}".encode()).hexdigest() for i in ids]
    return sorted(range(len(ids)), key=lambda i: keys[i])


def split_validation(pool: pl.DataFrame, seed: int, fraction: float = VALIDATION_FRACTION) -> pl.Series:
    """Mark about ``fraction`` of a training pool as validation, stratified so that every model keeps
    at least one training prompt; rows are visited in a seeded hash order."""
    remaining = pool.group_by("model_id").len().rows()
    left = dict(remaining)
    target = int(round(fraction * pool.height))
    split = ["train"] * pool.height
    models = pool["model_id"].to_list()
    taken = 0
    for i in _hash_order(seed, pool["prompt_id"].to_list()):
        if taken >= target:
            break
        if left[models[i]] > 1:
            split[i] = "validation"
            left[models[i]] -= 1
            taken += 1
    return pl.Series("split", split, dtype=pl.String)


def _model_labels(released: pl.DataFrame) -> pl.DataFrame:
    """Per model, its most frequent released domain / family / creation time / card in this experience."""
    def mode(col: str) -> pl.Expr:
        return (pl.col(col).drop_nulls().value_counts(sort=True).struct.field(col).first().alias(col))

    return (released.sort("origin").group_by("model_id")
            .agg(mode("domain"), mode("released_family"), pl.col("created_at").drop_nulls().min(), mode("card"))
            .sort("model_id"))


def _extras(resolver: SourceResolver, quarantine: Quarantine) -> dict[int, pl.DataFrame]:
    """Released rows outside the processed files, per experience (prompt, model_id, origin)."""
    hb = build_huggingbench_release(resolver, quarantine)
    keep = ["prompt", "model_id", "origin", "modality"]
    # every single-answer ToolMMBench prompt of a released E2 model counts, however rare the model
    return {2: build_toolmmbench(resolver, quarantine, min_prompts=1).select(keep),
            3: hb[3].select(keep), 4: hb[4].select(keep)}


def _paper_experience(exp: int, release: pl.DataFrame, extra: pl.DataFrame | None,
                      banned: set[str], seed: int) -> pl.DataFrame:
    labels = _model_labels(release)
    test = release.filter(pl.col("upstream_split") == "eval").with_columns(split=pl.lit("test"))
    pool = release.filter(pl.col("upstream_split") != "eval")
    if extra is not None:
        extra = (extra.join(labels.select("model_id"), on="model_id", how="semi")
                 .join(labels, on="model_id", how="left")
                 .with_columns(source=pl.lit(release["source"][0]), upstream_split=pl.lit("extra")))
        pool = pl.concat([pool, extra.select(pool.columns)])
    # priority: processed train, processed val, then extra rows; first occurrence of a prompt wins
    pool = (pool.with_columns(key=pl.col("prompt").map_elements(dedupe_key, return_dtype=pl.String),
                              rank=pl.col("upstream_split").replace_strict({"train": 0, "val": 1, "extra": 2}))
            .filter(~pl.col("key").is_in(list(banned)))
            .sort("rank", "origin").unique("key", keep="first", maintain_order=True).drop("key", "rank"))
    rows = pl.concat([pool.with_columns(split=pl.lit("train")), test])
    rows = rows.with_columns(
        prompt_id=pl.struct("prompt", "model_id").map_elements(
            lambda r: prompt_id(exp, r["prompt"], r["model_id"]), return_dtype=pl.String),
        experience=pl.lit(exp, dtype=pl.Int8), family=pl.col("released_family"))
    is_pool = rows["split"] == "train"
    pool_rows = rows.filter(is_pool)
    pool_rows = pool_rows.with_columns(split_validation(pool_rows, seed))
    return pl.concat([pool_rows, rows.filter(~is_pool)])


def _finish(rows: pl.DataFrame, families: dict[str, str]) -> pl.DataFrame:
    domains = rows["domain"].unique().to_list()
    cat = {d: category_of(d) for d in domains}
    task = {d: task_of(d) for d in domains}
    return (rows.with_columns(family_cmrbench=pl.col("model_id").replace_strict(families, default=None),
                              category=pl.col("domain").replace_strict(cat),
                              task=pl.col("domain").replace_strict(task))
            .select({c: t for c, t in EXPERIENCE_SCHEMA.items()}.keys())
            .cast(EXPERIENCE_SCHEMA)
            .sort("split", "prompt_id"))


def _family_stages(experiences: dict[int, pl.DataFrame]) -> list[dict[str, str]]:
    stages = []
    for exp in sorted(experiences):
        rows = experiences[exp]
        train = sorted(set(rows.filter(pl.col("split") != "test")["model_id"].to_list()))
        test_only = sorted(set(rows["model_id"].to_list()) - set(train))
        stages.append((train, test_only))
    return assign_families(stages)


def models_table(experiences: dict[int, pl.DataFrame], cards: pl.DataFrame) -> pl.DataFrame:
    allrows = pl.concat(list(experiences.values()))
    first = (allrows.sort("experience", "origin").group_by("model_id", maintain_order=True)
             .agg(pl.col("family").first(), pl.col("family_cmrbench").first(), pl.col("domain").first(),
                  pl.col("category").first(), pl.col("task").first(),
                  pl.col("experience").min().alias("first_experience"),
                  pl.col("experience").unique().sort().alias("experiences"),
                  pl.col("family").unique().sort().alias("families"),
                  pl.col("domain").unique().sort().alias("domains"),
                  pl.col("created_at").drop_nulls().min()))
    card = cards.sort("card_id").group_by("model_id").agg(pl.col("card").first())
    return first.join(card, on="model_id", how="left").select(list(MODEL_SCHEMA)).cast(MODEL_SCHEMA).sort("model_id")


def assemble_paper(resolver: SourceResolver, quarantine: Quarantine, seed: int = 42) -> Assembled:
    release: Release = build_cmr_release(resolver, quarantine)
    extras = _extras(resolver, quarantine)
    banned = {dedupe_key(p) for df in release.experiences.values()
              for p in df.filter(pl.col("upstream_split") == "eval")["prompt"].to_list()}
    experiences = {}
    for exp, rel in release.experiences.items():
        has_train = (rel["upstream_split"] == "train").any()
        experiences[exp] = _paper_experience(exp, rel, None if has_train else extras.get(exp), banned, seed)
    stages = _family_stages(experiences)
    experiences = {exp: _finish(rows, stages[exp - 1]) for exp, rows in experiences.items()}
    released = {m: f for exp in sorted(experiences, reverse=True)
                for m, f in experiences[exp].select("model_id", "family").unique().rows()}
    per_experience = {str(exp): family_agreement(stages[exp - 1], dict(
        experiences[exp].select("model_id", "family").unique("model_id", keep="first").rows()))
        for exp in sorted(experiences)}
    notes = {"family_agreement": family_agreement(stages[-1], released),
             "family_agreement_per_experience": per_experience}
    return Assembled(experiences, models_table(experiences, release.cards), release.cards, "paper", seed, notes)


def reslice_timeline(paper: Assembled, n_experiences: int) -> Assembled:
    """The same prompts re-sliced into ``n_experiences`` by model creation date (equal model counts
    per experience, oldest first), for streams longer than the paper's four."""
    if n_experiences < 1:
        raise ValueError("--experiences must be at least 1")
    models = paper.models.sort("created_at", "model_id", nulls_last=True)["model_id"].to_list()
    if n_experiences > len(models):
        raise ValueError(f"--experiences {n_experiences} exceeds the number of models ({len(models)})")
    slot = {m: i + 1 for i, chunk in enumerate(np.array_split(np.array(models, dtype=object), n_experiences))
            for m in chunk}
    rows = pl.concat(list(paper.experiences.values()))
    rows = rows.with_columns(experience=pl.col("model_id").replace_strict(slot, return_dtype=pl.Int8))
    rows = rows.with_columns(prompt_id=pl.struct("experience", "prompt", "model_id").map_elements(
        lambda r: prompt_id(r["experience"], r["prompt"], r["model_id"]), return_dtype=pl.String))
    # a prompt of one model may sit in several paper experiences: keep one copy, test first
    rows = (rows.with_columns(order=pl.col("split").replace_strict({"test": 0, "validation": 1, "train": 2}))
            .sort("order", "origin").unique("prompt_id", keep="first", maintain_order=True).drop("order"))
    test_keys = set(rows.filter(pl.col("split") == "test")["prompt_id"].to_list())
    rows = rows.filter((pl.col("split") == "test") | ~pl.col("prompt_id").is_in(list(test_keys)))
    experiences = {e: rows.filter(pl.col("experience") == e) for e in range(1, n_experiences + 1)}
    stages = _family_stages(experiences)
    experiences = {e: _finish(r.drop("family_cmrbench", "category", "task"), stages[e - 1])
                   for e, r in experiences.items()}
    cards = paper.cards.with_columns(experience=pl.col("model_id").replace_strict(slot, default=None,
                                                                                 return_dtype=pl.Int8))
    cards = cards.filter(pl.col("experience").is_not_null())
    return Assembled(experiences, models_table(experiences, cards), cards, "timeline", paper.seed,
                     {"family_agreement": paper.notes["family_agreement"]})


def _dedupe(rows: pl.DataFrame, banned: set[str]) -> pl.DataFrame:
    """Drop prompts in ``banned`` and repeats (first by origin wins)."""
    return (rows.with_columns(key=pl.col("prompt").map_elements(dedupe_key, return_dtype=pl.String))
            .filter(~pl.col("key").is_in(list(banned)))
            .sort("origin").unique("key", keep="first", maintain_order=True).drop("key"))


def add_extra_hubs(data: Assembled, resolver: SourceResolver, quarantine: Quarantine,
                   hubs: list[str]) -> Assembled:
    """Append APIBench's Torch Hub / TF Hub pairs as extra experiences after the stream, one per hub:
    test = the hub's eval pairs, train pool = its train pairs (missing offline for TF Hub, whose
    experience is then test-only: routers meet its models through their cards). Families are
    computed with the same cumulative rule; these models have no released family."""
    unknown = [h for h in hubs if h not in EXTRA_HUBS]
    if unknown:
        raise ValueError(f"unknown extra hub(s) {unknown}; choose from {EXTRA_HUBS}")
    experiences = dict(data.experiences)
    banned = {dedupe_key(p) for rows in experiences.values()
              for p in rows.filter(pl.col("split") == "test")["prompt"].to_list()}
    new_cards = []
    card_no = data.cards.height
    for hub in hubs:
        exp = len(experiences) + 1
        rows = build_apibench(resolver, quarantine, hub=hub)
        test = _dedupe(rows.filter(pl.col("upstream_split") == "eval"), set()).with_columns(split=pl.lit("test"))
        banned |= {dedupe_key(p) for p in test["prompt"].to_list()}
        pool = _dedupe(rows.filter(pl.col("upstream_split") != "eval"), banned).with_columns(split=pl.lit("train"))
        frame = pl.concat([pool, test]).with_columns(
            prompt_id=pl.struct("prompt", "model_id").map_elements(
                lambda r, e=exp: prompt_id(e, r["prompt"], r["model_id"]), return_dtype=pl.String),
            experience=pl.lit(exp, dtype=pl.Int8), family=pl.lit(None, dtype=pl.String))
        pool_rows = frame.filter(pl.col("split") == "train")
        if pool_rows.height:
            pool_rows = pool_rows.with_columns(split_validation(pool_rows, data.seed))
        experiences[exp] = pl.concat([pool_rows, frame.filter(pl.col("split") == "test")])
        for model_id, card in frame.sort("origin").unique("model_id", keep="first").sort("model_id").select(
                "model_id", "card").rows():
            card_no += 1
            new_cards.append({"card_id": f"card-{card_no:05d}", "model_id": model_id, "experience": exp,
                              "domain": json.loads(card).get("domain") if card else None, "card": card})
    stages = _family_stages(experiences)
    finished = {}
    for exp, rows in experiences.items():
        if exp in data.experiences:
            finished[exp] = rows
            continue
        fam = stages[exp - 1]
        rows = rows.with_columns(family=pl.col("model_id").replace_strict(fam, default=None))
        finished[exp] = _finish(rows, fam)
    cards = pl.concat([data.cards, pl.DataFrame(new_cards, schema=data.cards.schema)])
    notes = {**data.notes, "extra_hubs": hubs}
    stream = "+".join([data.stream, *hubs])
    return Assembled(finished, models_table(finished, cards), cards, stream, data.seed, notes)
