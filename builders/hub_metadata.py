"""Hub metadata shared by the APIBench and ToolMMBench builders.

Both builders date their models from the same HF metadata snapshot, write the same Gorilla-style
model card and order their rows the same way; keeping those steps here means the two experiences
cannot drift apart.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import polars as pl

from cmrbench.sources import SourceResolver

MODEL_INFO_KEY = "huggingbench/ai-model-card-analysis/model_info.parquet"

# api_data fields the paper removes from the card: long, noisy and not about what the model does.
BULKY_CARD_FIELDS = ("api_arguments", "python_environment_requirements", "example_code")


def load_model_info(resolver: SourceResolver) -> pl.DataFrame:
    """The HF metadata snapshot as (model_id, created_at in ms since epoch, task_category)."""
    return (pl.read_parquet(resolver.resolve(MODEL_INFO_KEY), columns=["modelId", "creation_time", "task_category"])
            .select(pl.col("modelId").alias("model_id"),
                    pl.col("creation_time").dt.epoch("ms").alias("created_at"),
                    pl.col("task_category"))
            .unique("model_id", keep="first", maintain_order=True))


def epoch_ms(day: date) -> int:
    """Midnight UTC of ``day`` in ms since epoch."""
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000)


def with_created_at(frame: pl.DataFrame, model_info: pl.DataFrame, cutoff: date) -> pl.DataFrame:
    """Set ``created_at`` from the snapshot, clamped to ``cutoff`` so no model looks newer than the
    experience it belongs to; null when the snapshot does not know the model. Row order is not kept."""
    times = model_info.select("model_id", pl.col("created_at").clip(upper_bound=epoch_ms(cutoff)).alias("_created"))
    return (frame.join(times, on="model_id", how="left")
            .with_columns(pl.col("_created").alias("created_at"))
            .drop("_created"))


def api_data_card(api_data: dict, model_id: str) -> str:
    """The Gorilla ``api_data`` as card text: bulky fields dropped, ``model_name`` set to the label (as the
    authors' release does), keys sorted so the text is stable."""
    card = {k: v for k, v in api_data.items() if k not in BULKY_CARD_FIELDS}
    card["model_name"] = model_id
    return json.dumps(card, sort_keys=True, ensure_ascii=False)


def origin_order() -> list[pl.Expr]:
    """Sort keys that put origins "<key>:<n>" in file order (by key, then numerically by n)."""
    return [pl.col("origin").str.replace(r":\d+$", ""),
            pl.col("origin").str.extract(r":(\d+)$").cast(pl.Int64)]


def sort_by_origin(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(origin_order())
