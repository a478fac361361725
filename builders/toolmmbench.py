"""ToolMMBench (MLLM-Tool) prompt rows: experience E2 (the paper's "mllm").

Following §3.4: each conversation's human turn is the prompt and the gpt turn names the model (or a
list of acceptable models; the first is the label). "unknown" answers are dropped, identical prompts
are kept once (the copy whose model is rarer, so rare models keep their prompts), and models with fewer
than 7 prompts are dropped. Every dropped row is quarantined with its reason.

The paper fetches the domain and card from the live Hub; here they come from the staged snapshots, in
this order: the model's APIBench API document (as the paper reuses APIBench metadata), the HuggingGPT
model list's ``pipeline_tag``, then the AI-model-card-analysis ``task_category``. Creation dates come
from the latter, clamped to 2024-01-19.
"""

from __future__ import annotations

import json
from datetime import date

import polars as pl

from cmrbench.sources import SOURCES, SourceResolver

from .apibench import load_api_documents
from .hub_metadata import api_data_card, load_model_info, origin_order, sort_by_origin, with_created_at
from .records import PROMPT_SCHEMA, Quarantine, dedupe_key, normalise_prompt, read_json_array, read_json_lines
from .taxonomy import UnknownDomainError, check_domain, domain_for_task, task_of

TOOLMMBENCH_SCHEMA: dict[str, pl.DataType] = {**PROMPT_SCHEMA, "acceptable_models": pl.List(pl.String())}
TOOLMM_CUTOFF = date(2024, 1, 19)  # the paper clamps E2 creation dates here (ToolMMBench release)
FILES = ("toolmmbench/audio_tx2t.json", "toolmmbench/video_tx2t.json", "toolmmbench/combined_data.json",
         "toolmmbench/image_tx2t.json", "toolmmbench/text_t2t.json")
P0_KEY = "huggingbench/hugginggpt/p0_models.jsonl"
UNKNOWN = "unknown"
DESCRIPTION_CHARS = 1000


def _turn(conversations: list, speaker: str) -> object:
    return next((t.get("value") for t in conversations if isinstance(t, dict) and t.get("from") == speaker), None)


def _answer_ids(value: object) -> list[str] | None:
    """The model ids of a gpt turn in listed order, without repeats; None when it is not a string or a
    list of strings."""
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        return None
    return list(dict.fromkeys(v.strip() for v in values if v.strip()))


def _read_rows(resolver: SourceResolver, quarantine: Quarantine) -> list[dict]:
    rows = []
    for key in FILES:
        if SOURCES[key].optional and not resolver.available(key):
            continue
        for n, record in enumerate(read_json_array(resolver.resolve(key), key), start=1):
            origin = f"{key}:{n}"
            conversations = record.get("conversations") if isinstance(record, dict) else None
            if not isinstance(conversations, list):
                quarantine.add(origin, "missing field: conversations", record)
                continue
            human = _turn(conversations, "human")
            prompt = normalise_prompt(human) if isinstance(human, str) else ""
            if not prompt:
                quarantine.add(origin, "empty prompt", record)
                continue
            ids = _answer_ids(_turn(conversations, "gpt"))
            if not ids:
                quarantine.add(origin, "missing answer", record)
                continue
            ids = [i for i in ids if i.casefold() != UNKNOWN]
            if not ids:
                quarantine.add(origin, "unknown answer", record)
                continue
            modality = record.get("input_modality")
            rows.append({"prompt": prompt, "model_id": ids[0], "acceptable_models": ids, "source": "ToolMMBench",
                         "modality": modality if isinstance(modality, str) else None, "origin": origin})
    return rows


def _quarantine_rows(quarantine: Quarantine, frame: pl.DataFrame, reason: str) -> None:
    for row in frame.select("origin", "prompt", "model_id").iter_rows(named=True):
        quarantine.add(row["origin"], reason, row)


def _dedupe(frame: pl.DataFrame, quarantine: Quarantine) -> pl.DataFrame:
    """One row per prompt: the copy whose model has the fewest rows, then the smaller model id, then the
    earlier origin."""
    ranked = (frame.with_columns(pl.len().over("model_id").alias("_rows"),
                                 pl.col("prompt").map_elements(dedupe_key, return_dtype=pl.String).alias("_key"))
              .sort([pl.col("_rows"), pl.col("model_id"), *origin_order()])
              .with_columns(pl.int_range(pl.len()).over("_key").alias("_rank")))
    _quarantine_rows(quarantine, ranked.filter(pl.col("_rank") > 0), "duplicate prompt")
    return ranked.filter(pl.col("_rank") == 0).drop("_rows", "_key", "_rank")


def _hf_card(domain: str, model_id: str, description: str) -> str:
    """A Gorilla-style card for a model that APIBench does not document."""
    return json.dumps({"domain": domain, "framework": "Hugging Face", "functionality": task_of(domain),
                       "api_name": model_id, "api_call": "", "performance": {"dataset": None, "accuracy": None},
                       "description": description, "model_name": model_id}, sort_keys=True, ensure_ascii=False)


def _checked(domain: object) -> str | None:
    """An APIBench domain string when the taxonomy knows it."""
    try:
        return check_domain(domain) if isinstance(domain, str) else None
    except UnknownDomainError:
        return None


def _task_domain(task: object) -> str | None:
    """The domain of an HF task, None for "unknown" or a task outside the taxonomy (e.g. multiple-choice)."""
    try:
        return domain_for_task(task) if isinstance(task, str) and task != UNKNOWN else None
    except UnknownDomainError:
        return None


def _metadata(models: list[str], resolver: SourceResolver, quarantine: Quarantine,
              model_info: pl.DataFrame) -> pl.DataFrame:
    """(model_id, domain, card) for each model whose domain is known; see the module docstring for the order."""
    api_docs = load_api_documents(resolver, quarantine)
    p0 = {obj["id"]: obj for _, obj in read_json_lines(resolver.resolve(P0_KEY), P0_KEY, quarantine)
          if isinstance(obj.get("id"), str)}
    tasks = dict(model_info.filter(pl.col("model_id").is_in(models)).select("model_id", "task_category").iter_rows())
    out = []
    for model_id in models:
        doc = api_docs.get(model_id, {})
        if domain := _checked(doc.get("domain")):
            out.append((model_id, domain, api_data_card(doc, model_id)))
            continue
        hugginggpt = p0.get(model_id, {})
        if domain := _task_domain(hugginggpt.get("pipeline_tag")) or _task_domain(tasks.get(model_id)):
            description = hugginggpt.get("description")
            text = description[:DESCRIPTION_CHARS] if isinstance(description, str) else ""
            out.append((model_id, domain, _hf_card(domain, model_id, text)))
    return pl.DataFrame(out, schema={"model_id": pl.String(), "domain": pl.String(), "card": pl.String()},
                        orient="row")


def build_toolmmbench(resolver: SourceResolver, quarantine: Quarantine, min_prompts: int = 7) -> pl.DataFrame:
    """Prompt rows (TOOLMMBENCH_SCHEMA) of ToolMMBench, sorted by origin; rejected rows go to ``quarantine``."""
    frame = pl.DataFrame(_read_rows(resolver, quarantine),
                         schema={c: TOOLMMBENCH_SCHEMA[c] for c in ("prompt", "model_id", "acceptable_models",
                                                                      "source", "modality", "origin")})
    frame = _dedupe(frame, quarantine)
    counts = pl.len().over("model_id")
    _quarantine_rows(quarantine, frame.filter(counts < min_prompts), "model below min prompts")
    frame = frame.filter(counts >= min_prompts)

    model_info = load_model_info(resolver)
    meta = _metadata(frame["model_id"].unique().sort().to_list(), resolver, quarantine, model_info)
    _quarantine_rows(quarantine, frame.filter(~pl.col("model_id").is_in(meta["model_id"].to_list())), "no domain")
    frame = with_created_at(frame.join(meta, on="model_id", how="inner"), model_info, TOOLMM_CUTOFF)
    return sort_by_origin(frame).select(list(TOOLMMBENCH_SCHEMA))
