"""HuggingBench steps 3-6: clean the cards with an LLM, filter them, generate and validate queries.

* Step 3 (:func:`clean_card`): the LLM rewrites a raw card into ``{"model_description": ...}``
  (template ``prompts/clean_card.txt``).
* Step 4 (:func:`filter_descriptions`): drop empty / "None" descriptions, descriptions shorter than
  :data:`MIN_DESCRIPTION_CHARS`, descriptions holding Chinese characters, and duplicates (the most
  downloaded model keeps its description).
* Step 5 (:func:`generate_queries`): the LLM writes ``{"queries": [...]}`` with exactly
  :data:`QUERIES_PER_MODEL` strings (template ``prompts/generate_queries.txt``; temperature 0.6, top-p 0.9).
* Step 6 (:func:`validate_queries`, :func:`explode_queries`): an answer without exactly that many
  strings is invalid (the caller retries, then drops the model); single queries holding a forbidden
  word (:data:`FORBIDDEN_WORDS`) or the model id are rejected and counted; the rest become one row per
  query and repeated queries (same :func:`dedupe_key`) are dropped, the first one kept.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from functools import cache
from importlib import resources

from ..records import dedupe_key, normalise_prompt
from .llm import ChatClient, LLMOutputError
from .scrape import ModelRecord, strip_front_matter

QUERIES_PER_MODEL = 20
QUERY_TEMPERATURE = 0.6
QUERY_TOP_P = 0.9
CLEAN_TEMPERATURE = 0.3
CLEAN_TOP_P = 0.9
MIN_DESCRIPTION_CHARS = 500
MAX_CARD_CHARS = 24_000  # cards are cut to this length before they are sent to the LLM

# Whole words (any letter case) that give the answer away or talk about the routing itself.
# Plural / third-person forms count too ("models", "uses"); "used", "using" or "user" do not.
FORBIDDEN_WORDS = ("api", "apis", "model", "models", "tool", "tools", "use", "uses", "function", "functions",
                   "method", "methods")
_FORBIDDEN = re.compile(r"(?<![\w-])(" + "|".join(FORBIDDEN_WORDS) + r")(?![\w-])", re.IGNORECASE)
_CHINESE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
_EMPTY_DESCRIPTIONS = frozenset({"", "none", "null", "n/a", "na", "nan"})
_SPACE = re.compile(r"\s+")


class QueryValidationError(LLMOutputError):
    """The query answer for a model is not a list of exactly the expected number of strings."""


@cache
def load_prompt(name: str) -> str:
    """A prompt template shipped in ``prompts/<name>.txt``."""
    return resources.files(__package__).joinpath("prompts", f"{name}.txt").read_text(encoding="utf-8")


def render(template: str, **values: object) -> str:
    """Fill ``{{name}}`` placeholders (single braces are left alone: the templates show JSON)."""
    def sub(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"prompt template needs a value for '{key}'")
        return str(values[key])
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", sub, template)


def has_chinese(text: str) -> bool:
    return bool(_CHINESE.search(text))


def clean_card(client: ChatClient, record: ModelRecord) -> str | None:
    """Step 3: the LLM's description of ``record`` (None when the answer has no string description)."""
    card = strip_front_matter(record.card_text).strip()[:MAX_CARD_CHARS]
    prompt = render(load_prompt("clean_card"), model_id=record.id, task=record.task, card=card)
    obj = client.complete_json([{"role": "user", "content": prompt}], subject=record.id,
                               temperature=CLEAN_TEMPERATURE, top_p=CLEAN_TOP_P)
    value = obj.get("model_description")
    return value if isinstance(value, str) else None


def filter_descriptions(items: Iterable[dict], stats: Counter | None = None) -> list[dict]:
    """Step 4 over dicts with ``id``, ``downloads`` and ``description``; returns the kept ones sorted by id."""
    stats = stats if stats is not None else Counter()
    kept: dict[str, dict] = {}
    for item in sorted(items, key=lambda i: (-int(i.get("downloads") or 0), i["id"])):
        text = item.get("description")
        text = _SPACE.sub(" ", text).strip() if isinstance(text, str) else ""
        if text.strip(" .\"'").casefold() in _EMPTY_DESCRIPTIONS:
            stats["empty description"] += 1
        elif len(text) < MIN_DESCRIPTION_CHARS:
            stats["description too short"] += 1
        elif has_chinese(text):
            stats["description has Chinese characters"] += 1
        elif text.casefold() in kept:
            stats["duplicate description"] += 1
        else:
            kept[text.casefold()] = {**item, "description": text}
    return sorted(kept.values(), key=lambda i: i["id"])


def forbidden_terms(query: str, model_id: str) -> list[str]:
    """The forbidden words in ``query`` (lower-cased), plus the model id or its repo name if present."""
    found = sorted({m.group(1).casefold() for m in _FORBIDDEN.finditer(query)})
    folded = query.casefold()
    name = model_id.rsplit("/", 1)[-1]
    if model_id.casefold() in folded:
        found.append(model_id)
    elif name and re.search(r"(?<![\w-])" + re.escape(name.casefold()) + r"(?![\w-])", folded):
        found.append(name)
    return found


def validate_queries(obj: dict, model_id: str, n: int = QUERIES_PER_MODEL) -> tuple[list[str], list[dict]]:
    """Step 6 checks on one answer: (accepted queries, rejected ones with the terms that rejected them).

    Raises :class:`QueryValidationError` unless ``obj["queries"]`` is a list of exactly ``n`` non-empty
    strings.
    """
    queries = obj.get("queries")
    if not isinstance(queries, list):
        raise QueryValidationError(model_id, "no 'queries' list in the answer", repr(obj))
    if len(queries) != n:
        raise QueryValidationError(model_id, f"expected exactly {n} queries, got {len(queries)}", repr(obj))
    if not all(isinstance(q, str) and normalise_prompt(q) for q in queries):
        raise QueryValidationError(model_id, "every query must be a non-empty string", repr(obj))
    accepted, rejected = [], []
    for query in queries:
        query = normalise_prompt(query)
        terms = forbidden_terms(query, model_id)
        if terms:
            rejected.append({"query": query, "terms": terms})
        else:
            accepted.append(query)
    return accepted, rejected


def generate_queries(client: ChatClient, model_id: str, task: str, description: str,
                     n: int = QUERIES_PER_MODEL) -> tuple[list[str], list[dict]]:
    """Step 5 for one model, validated (see :func:`validate_queries`)."""
    prompt = render(load_prompt("generate_queries"), model_id=model_id, task=task, description=description, n=n)
    obj = client.complete_json([{"role": "user", "content": prompt}], subject=model_id,
                               temperature=QUERY_TEMPERATURE, top_p=QUERY_TOP_P)
    return validate_queries(obj, model_id, n)


def explode_queries(generations: Iterable[dict], stats: Counter | None = None) -> list[dict]:
    """One row per accepted query (model fields copied); a repeated query keeps its first row.

    ``generations`` are dicts with ``id`` and ``queries`` (plus any model fields to carry), taken in
    model-id order so the kept copy does not depend on the order the LLM answered in.
    """
    stats = stats if stats is not None else Counter()
    seen: set[str] = set()
    rows = []
    for gen in sorted(generations, key=lambda g: g["id"]):
        fields = {k: v for k, v in gen.items() if k not in ("queries", "rejected")}
        for query in gen["queries"]:
            key = dedupe_key(query)
            if key in seen:
                stats["duplicate query"] += 1
                continue
            seen.add(key)
            rows.append({**fields, "instruction": query})
    return rows
