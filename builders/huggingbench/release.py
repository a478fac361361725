"""HuggingBench from the authors' released generation output (offline; the default build).

Reads ``cmr-release/raw/exp{3,4}/exp{3,4}-{train,val,test,eval}.jsonl`` (``train`` only when the
mirror has it) into :data:`~cmrbench.builders.records.PROMPT_SCHEMA` rows plus ``upstream_split``.
Each line needs ``instruction`` (non-empty once normalised), ``model_name``, ``domain`` (strings) and
``created_at`` (ms since the epoch, an integer or a string of digits); ``description`` must be a
string when present. Anything else goes to the quarantine with its ``<key>:<line>``. The domain is
kept exactly as released (the release has a few labels outside the taxonomy, e.g.
"Audio Audio Text-to-Text"); the release's lines with a null domain are quarantined, which is also
what the authors' processed files do.

:func:`generation_rows` reads any file of that layout, so the output of the live pipeline
(:mod:`.pipeline`) can be loaded the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from cmrbench.sources import SourceResolver

from ..records import PROMPT_COLUMNS, PROMPT_SCHEMA, Quarantine, normalise_prompt, read_json_lines

SOURCE = "HuggingBench"
FRAMEWORK = "Hugging Face Transformers"
EXPERIENCES = (3, 4)
UPSTREAM_SPLITS = ("train", "val", "test", "eval")
OPTIONAL_SPLITS = frozenset({"train"})
HUGGINGBENCH_SCHEMA: dict[str, pl.DataType] = {**PROMPT_SCHEMA, "upstream_split": pl.String()}


def release_key(experience: int, split: str) -> str:
    return f"cmr-release/raw/exp{experience}/exp{experience}-{split}.jsonl"


def gorilla_card(model_id: str, domain: str, description: str) -> str:
    """The Gorilla-style ``api_data`` card of a HuggingBench model, as canonical JSON text."""
    card = {"domain": domain, "framework": FRAMEWORK, "api_name": model_id, "api_call": "",
            "performance": {"dataset": "", "accuracy": None}, "description": description,
            "model_name": model_id}
    return json.dumps(card, sort_keys=True, ensure_ascii=False)


def _created_ms(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def generation_rows(path: Path, key: str, split: str, quarantine: Quarantine) -> list[dict]:
    """Prompt rows (PROMPT_COLUMNS + ``upstream_split``) of one generation-output JSON Lines file."""
    rows = []
    for line, obj in read_json_lines(path, key, quarantine):
        origin = f"{key}:{line}"
        bad = next((f for f in ("instruction", "model_name", "domain")
                    if not isinstance(obj.get(f), str) or not obj[f].strip()), None)
        if bad:
            quarantine.add(origin, f"missing field: {bad}", obj)
            continue
        description = obj.get("description", "")
        if not isinstance(description, str):
            quarantine.add(origin, "description is not a string", obj)
            continue
        created = _created_ms(obj.get("created_at"))
        if created is None:
            quarantine.add(origin, "missing or malformed created_at", obj)
            continue
        prompt = normalise_prompt(obj["instruction"])
        if not prompt:
            quarantine.add(origin, "empty prompt", obj)
            continue
        model_id, domain = obj["model_name"].strip(), obj["domain"]
        rows.append({"prompt": prompt, "model_id": model_id, "domain": domain, "created_at": created,
                     "source": SOURCE, "modality": None, "origin": origin,
                     "card": gorilla_card(model_id, domain, description), "upstream_split": split})
    return rows


def huggingbench_frame(rows: list[dict]) -> pl.DataFrame:
    columns = [*PROMPT_COLUMNS, "upstream_split"]
    if not rows:
        return pl.DataFrame(schema=HUGGINGBENCH_SCHEMA)
    return pl.DataFrame([{c: r.get(c) for c in columns} for r in rows], schema=HUGGINGBENCH_SCHEMA)


def build_huggingbench_release(resolver: SourceResolver, quarantine: Quarantine, *,
                               missing: list[str] | None = None) -> dict[int, pl.DataFrame]:
    """E3 and E4 prompt rows from the release, in file order (train, val, test, eval).

    Optional files the resolver cannot find (``train``) are skipped and their keys appended to
    ``missing`` when a list is given; a missing required file raises the resolver's ``SourceError``.
    """
    out = {}
    for exp in EXPERIENCES:
        rows: list[dict] = []
        for split in UPSTREAM_SPLITS:
            key = release_key(exp, split)
            if split in OPTIONAL_SPLITS and not resolver.available(key):
                if missing is not None:
                    missing.append(key)
                continue
            rows.extend(generation_rows(resolver.resolve(key), key, split, quarantine))
        out[exp] = huggingbench_frame(rows)
    return out
