"""HuggingBench steps 1-2: pick the Hub models whose cards the query generator will read.

*Recent* models (step 1): for each HF task, the ``recent_limit`` most-downloaded models tagged with the
task, created after ``recent_after``, with a real card of more than ``min_card_words`` words.
*Legacy* models (step 2): the ``legacy_limit`` most-downloaded ones created before ``legacy_before``
that are already labels of E1/E2 (``known_ids``), with a card of more than ``legacy_min_card_words``
words. Both go through the same card rules:

* the card (``README.md``) is fetched with ``huggingface_hub`` from the endpoint of the given ``HfApi``
  (so a mirror or a test server works); a model without a card is dropped;
* markdown noise (front matter, code, tables, images, HTML, links, URLs, template placeholders) is
  removed before words are counted (:func:`clean_card_text`);
* auto-generated cards are dropped (:func:`is_auto_generated`);
* identical cleaned cards are deduplicated, keeping the most downloaded model;
* any-to-any models are dropped, and at most ``per_task`` models (by downloads) are kept per task.

A model that is already in ``known_ids`` is never a *recent* model: it can only come in as legacy.
A model listed under several tasks (``filter=`` matches tags) is kept once, under its own
``pipeline_tag`` (models listed under a task other than their pipeline tag are skipped there).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

EXCLUDED_TASKS = frozenset({"any-to-any"})

# Phrases that only appear in cards written by a tool (transformers Trainer / Keras callback, AutoTrain).
AUTO_GENERATED_PHRASES = (
    "this model card has been automatically generated",
    "this model card has been generated automatically",
    "this model card was automatically generated",
    "this model card was generated automatically",
    "model card has been generated automatically according to the information",
    "model trained using autotrain",
)
# The empty Hub card template leaves "[More Information Needed]" in every section it did not fill;
# a card with this many placeholders is an unfilled template.
MAX_PLACEHOLDERS = 3

_PLACEHOLDER = re.compile(r"\[?\s*more\s+information\s+needed\s*\]?", re.IGNORECASE)
_FRONT_MATTER = re.compile(r"\A\ufeff?\s*---[ \t]*\n.*?\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$", re.DOTALL | re.MULTILINE)
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_REF_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*\S+.*$", re.MULTILINE)
_HTML_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_URL = re.compile(r"(?:https?|ftp)://\S+|www\.\S+")
_TABLE_ROW = re.compile(r"^\s*\|.*$|^\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?\s*$", re.MULTILINE)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s*", re.MULTILINE)
_EMPHASIS = re.compile(r"(\*{1,3}|_{2,3}|`+|~~)")
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[^\W_]", re.UNICODE)


@dataclass(frozen=True)
class ModelRecord:
    """A selected model. ``created_at`` is ms since the epoch; ``card_text`` the raw README."""

    id: str
    task: str
    downloads: int
    created_at: int
    card_text: str
    legacy: bool = False

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> ModelRecord:
        return cls(id=obj["id"], task=obj["task"], downloads=int(obj["downloads"]),
                   created_at=int(obj["created_at"]), card_text=obj["card_text"], legacy=bool(obj["legacy"]))


def to_ms(value: date | datetime | str | int | float) -> int:
    """Milliseconds since the epoch of a date (midnight UTC), datetime (naive = UTC), ISO string or ms int."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a date")
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(value.timestamp() * 1000)


def strip_front_matter(text: str) -> str:
    return _FRONT_MATTER.sub("", text, count=1)


def clean_card_text(text: str) -> str:
    """The prose of a model card: markdown/HTML noise and template placeholders removed, spaces collapsed."""
    text = strip_front_matter(text)
    for pattern, repl in ((_HTML_COMMENT, " "), (_FENCE, " "), (_IMAGE, " "), (_LINK, r"\1"), (_REF_LINK, " "),
                          (_HTML_TAG, " "), (_URL, " "), (_TABLE_ROW, " "), (_PLACEHOLDER, " "), (_HEADING, ""),
                          (_EMPHASIS, "")):
        text = pattern.sub(repl, text)
    return _SPACE.sub(" ", text).strip()


def card_word_count(cleaned: str) -> int:
    """Words of a cleaned card: whitespace-separated tokens holding at least one letter or digit."""
    return sum(1 for token in cleaned.split() if _WORD.search(token))


def is_auto_generated(text: str) -> bool:
    """True for a card written by a tool rather than a person.

    Rule: the raw card contains one of :data:`AUTO_GENERATED_PHRASES` (case- and space-insensitive;
    the transformers Trainer, Keras callback and AutoTrain stamp their cards this way), or it still
    holds at least :data:`MAX_PLACEHOLDERS` "[More Information Needed]" placeholders (the Hub's card
    template left unfilled).
    """
    flat = _SPACE.sub(" ", _LINK.sub(r"\1", text)).casefold()
    if any(phrase in flat for phrase in AUTO_GENERATED_PHRASES):
        return True
    return len(_PLACEHOLDER.findall(text)) >= MAX_PLACEHOLDERS


def card_fingerprint(cleaned: str) -> str:
    return hashlib.sha256(_SPACE.sub(" ", cleaned).strip().casefold().encode()).hexdigest()


def fetch_card(api: HfApi, model_id: str, *, cache_dir: str | Path | None = None) -> str | None:
    """The model's README.md from ``api``'s endpoint, or None when the repo has none (or is gated/gone).

    Other failures (server errors, network) propagate: a silently missing card would bias selection.
    """
    try:
        path = api.hf_hub_download(repo_id=model_id, filename="README.md", cache_dir=cache_dir)
    except (EntryNotFoundError, RepositoryNotFoundError):
        return None
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status in (401, 403, 404, 410, 451):
            return None
        raise
    return Path(path).read_text(encoding="utf-8", errors="replace")


@dataclass
class _Candidate:
    id: str
    task: str
    downloads: int
    created_at: int
    legacy: bool
    card_text: str = ""
    fingerprint: str = ""


def _listing(api: HfApi, task: str, limit: int, stats: Counter) -> Iterable[tuple[int, object]]:
    for rank, info in enumerate(api.list_models(filter=task, sort="downloads", limit=limit)):
        if info.created_at is None or info.downloads is None:
            stats["metadata fetched separately"] += 1
            info = api.model_info(info.id)
        yield rank, info


def select_models(api: HfApi, tasks: list[str], *, recent_after: date | datetime | str | int,
                  legacy_before: date | datetime | str | int, known_ids: Iterable[str], per_task: int = 25,
                  recent_limit: int = 200, legacy_limit: int = 50, min_card_words: int = 200,
                  legacy_min_card_words: int = 500, card_cache_dir: str | Path | None = None,
                  stats: Counter | None = None, disable_progress: bool = True) -> list[ModelRecord]:
    """Steps 1-2 of HuggingBench: recent and legacy models with a usable card (see the module doc).

    Card lengths are strict: a card needs *more than* ``min_card_words`` (legacy:
    ``legacy_min_card_words``) words after :func:`clean_card_text`. ``stats`` (if given) receives a
    count per reason a listed model was left out. Returns records sorted by (legacy, task, downloads
    descending, id).
    """
    stats = stats if stats is not None else Counter()
    known = set(known_ids)
    recent_ms, legacy_ms = to_ms(recent_after), to_ms(legacy_before)
    candidates: dict[str, _Candidate] = {}
    for task in tqdm(tasks, desc="list models", unit="task", disable=disable_progress):
        if task in EXCLUDED_TASKS:
            stats[f"task skipped: {task}"] += 1
            continue
        for rank, info in _listing(api, task, max(recent_limit, legacy_limit), stats):
            tag = info.pipeline_tag
            if tag in EXCLUDED_TASKS:
                stats["any-to-any model"] += 1
                continue
            if tag is not None and tag != task:
                stats["listed under another task than its pipeline tag"] += 1
                continue
            if info.id in candidates:
                stats["listed under several tasks"] += 1
                continue
            created = to_ms(info.created_at)
            if info.id in known:
                if rank < legacy_limit and created < legacy_ms:
                    candidates[info.id] = _Candidate(info.id, task, int(info.downloads), created, True)
                else:
                    stats["known model outside the legacy window"] += 1
            elif rank < recent_limit and created > recent_ms:
                candidates[info.id] = _Candidate(info.id, task, int(info.downloads), created, False)
            else:
                stats["created before the recent cut-off"] += 1

    kept: list[_Candidate] = []
    for cand in tqdm(list(candidates.values()), desc="fetch cards", unit="card", disable=disable_progress):
        text = fetch_card(api, cand.id, cache_dir=card_cache_dir)
        if text is None or not text.strip():
            stats["no model card"] += 1
            continue
        if is_auto_generated(text):
            stats["auto-generated card"] += 1
            continue
        cleaned = clean_card_text(text)
        if card_word_count(cleaned) <= (legacy_min_card_words if cand.legacy else min_card_words):
            stats["card too short"] += 1
            continue
        cand.card_text, cand.fingerprint = text, card_fingerprint(cleaned)
        kept.append(cand)

    by_card: dict[str, _Candidate] = {}
    for cand in sorted(kept, key=lambda c: (-c.downloads, c.id)):
        if cand.fingerprint in by_card:
            stats["duplicate card"] += 1
            continue
        by_card[cand.fingerprint] = cand

    per_group: dict[tuple[bool, str], list[_Candidate]] = {}
    for cand in sorted(by_card.values(), key=lambda c: (-c.downloads, c.id)):
        per_group.setdefault((cand.legacy, cand.task), []).append(cand)
    out: list[ModelRecord] = []
    for (legacy, task), group in sorted(per_group.items()):
        stats["beyond the per-task cap"] += max(0, len(group) - per_task)
        out.extend(ModelRecord(c.id, task, c.downloads, c.created_at, c.card_text, legacy) for c in group[:per_task])
    if not stats["beyond the per-task cap"]:
        del stats["beyond the per-task cap"]
    log.info("selected %d models (%d legacy); left out: %s", len(out), sum(r.legacy for r in out), dict(stats))
    return out
