"""The authors' released processed files (collagelab/CMR): the canonical way to get the paper's splits.

Each experience's ``cleaned-<exp>-eval.json`` is its test split, ``-val.json`` a 15 % slice of its
training pool and ``-train.json`` the rest (missing from the offline mirror; used when present).
The cumulative model-card indices ``e1 ... e1_e2_e3_e4`` are the documents the paper's zero-shot
retrievers rank.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import polars as pl

from cmrbench.sources import SourceResolver

from .records import PROMPT_SCHEMA, BuildInputError, Quarantine, normalise_prompt, read_json_lines
from .taxonomy import UnknownDomainError, check_domain

EXPERIENCE_FILES = {1: "apibench-hf", 2: "mllm", 3: "hugging-bench-1", 4: "hugging-bench-2"}
SOURCE_NAMES = {"APIBench": "APIBench", "MLLM": "ToolMMBench", "Hugging Bench": "HuggingBench"}
CARD_INDICES = {1: "e1", 2: "e1_e2", 3: "e1_e2_e3", 4: "e1_e2_e3_e4"}
RELEASE_SCHEMA = {**PROMPT_SCHEMA, "released_family": pl.String(), "upstream_split": pl.String()}
_REQUIRED = ("model_name", "model_family", "instruction", "domain")


@dataclass(frozen=True)
class Release:
    """Prompt rows per experience (upstream_split: train / val / eval) and the card collection."""

    experiences: dict[int, pl.DataFrame]
    cards: pl.DataFrame


def _card_json(api_data: object) -> str | None:
    return json.dumps(api_data, sort_keys=True, ensure_ascii=False) if isinstance(api_data, dict) else None


def _read_split(resolver: SourceResolver, key: str, split: str, quarantine: Quarantine) -> pl.DataFrame:
    rows = []
    for line, obj in read_json_lines(resolver.resolve(key), key, quarantine):
        origin = f"{key}:{line}"
        missing = [f for f in _REQUIRED if not isinstance(obj.get(f), str) or not obj[f].strip()]
        if missing:
            quarantine.add(origin, f"missing field: {missing[0]}", obj)
            continue
        prompt = normalise_prompt(obj["instruction"])
        if not prompt:
            quarantine.add(origin, "empty prompt", obj)
            continue
        try:
            domain = check_domain(obj["domain"])
        except UnknownDomainError:
            quarantine.add(origin, "unknown domain", obj)
            continue
        created = obj.get("created_at")
        rows.append({
            "prompt": prompt, "model_id": obj["model_name"].strip(), "domain": domain,
            "created_at": int(created) if isinstance(created, (int, float, str)) and str(created).isdigit() else None,
            "source": SOURCE_NAMES.get(obj.get("original_dataset", ""), obj.get("original_dataset")),
            "modality": None, "origin": origin, "card": _card_json(obj.get("api_data")),
            "released_family": obj["model_family"].strip(), "upstream_split": split,
        })
    return pl.DataFrame(rows, schema=RELEASE_SCHEMA)


def _read_cards(resolver: SourceResolver, quarantine: Quarantine) -> pl.DataFrame:
    """Card lines in cumulative order; each card arrives in the first index that contains it."""
    previous: list[str] = []
    rows = []
    for exp, name in CARD_INDICES.items():
        key = f"cmr-release/model_indices/{name}.json"
        lines = resolver.resolve(key).read_text(encoding="utf-8").splitlines()
        if lines[:len(previous)] != previous:
            raise BuildInputError(f"{key}: the cumulative card index does not extend the previous one "
                                  f"({CARD_INDICES[exp - 1]}.json); the release files are inconsistent.")
        for n, line in enumerate(lines[len(previous):], start=len(previous) + 1):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise BuildInputError(f"{key}:{n}: malformed JSON ({err.msg})") from err
            model_id = obj.get("model_name") if isinstance(obj, dict) else None
            if not isinstance(model_id, str) or not model_id.strip():
                quarantine.add(f"{key}:{n}", "missing field: model_name", line)
                continue
            rows.append({"card_id": f"card-{n:05d}", "model_id": model_id.strip(), "experience": exp,
                         "domain": obj.get("domain"), "card": line})
        previous = lines
    return pl.DataFrame(rows, schema={"card_id": pl.String, "model_id": pl.String, "experience": pl.Int8,
                                      "domain": pl.String, "card": pl.String})


def build_cmr_release(resolver: SourceResolver, quarantine: Quarantine) -> Release:
    experiences = {}
    for exp, name in EXPERIENCE_FILES.items():
        parts = []
        for split in ("train", "val", "eval"):
            key = f"cmr-release/processed/cleaned-{name}-{split}.json"
            if split == "train" and not resolver.available(key):
                continue  # missing offline; reported in the manifest's missing_sources
            parts.append(_read_split(resolver, key, split, quarantine))
        experiences[exp] = pl.concat(parts)
    return Release(experiences, _read_cards(resolver, quarantine))
