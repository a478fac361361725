"""The live HuggingBench pipeline (paper §3.4, steps 1-7), resumable, and its CLI.

``run_pipeline`` needs Hub access (``hf_endpoint``) and an OpenAI-compatible LLM endpoint. Every step
writes its output into ``<out>/cache/`` atomically (temporary file + ``os.replace``) and is skipped when
that output exists, so a rerun after a crash or with the same ``out`` resumes where it stopped. The two
LLM steps also keep a per-model ``.partial.jsonl`` log while they run, so a crash in the middle of them
only repeats the model that was in flight. Delete a step's file (and those after it) to redo it.

Layout of ``out``::

    cache/1-models.jsonl            selected models (steps 1-2), with their raw cards
    cache/2-descriptions.jsonl      LLM card descriptions (step 3)
    cache/3-filtered.jsonl          descriptions kept by the step-4 rules
    cache/4-generations.jsonl       validated LLM queries per model (step 5), failures recorded
    cache/5-queries.jsonl           one row per query, duplicates dropped (step 6)
    cache/6-experiences.jsonl       rows with experience and split (step 7)
    cache/hf/                       huggingface_hub download cache of the model cards
    raw/exp{3,4}/exp{3,4}-{train,val,test}.jsonl   final rows in the release's layout
                                    (index, instruction, model_name, description, domain, created_at)
    stats.json                      what each step kept and dropped, and why
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from huggingface_hub import HfApi, constants as hf_constants
from tqdm.auto import tqdm

from cmrbench.fileio import atomic_write, atomic_write_text

from ..taxonomy import TASKS, domain_for_task
from .generate import QUERIES_PER_MODEL, clean_card, explode_queries, filter_descriptions, generate_queries
from .llm import DEFAULT_API_KEY_ENV, ChatClient, LLMOutputError
from .scrape import EXCLUDED_TASKS, ModelRecord, select_models, to_ms
from .split import EXPERIENCES, SPLITS, build_experiences

log = logging.getLogger(__name__)

DEFAULT_LLM_MODEL = "Qwen/Qwen3-32B"
DEFAULT_RECENT_AFTER = date(2024, 8, 1)
DEFAULT_LEGACY_BEFORE = date(2025, 8, 1)
TASKS_KEY = "cmr-release/hf-tasks.txt"
KNOWN_IDS_KEY = "cmr-release/model_indices/e1_e2.json"
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}


@dataclass
class HuggingBenchConfig:
    """Everything a run depends on. ``tasks``/``known_ids`` default to the pinned HF tasks catalogue and
    the E1∪E2 model index of the release (read through :class:`~cmrbench.sources.SourceResolver`,
    mirror ``sources``)."""

    out_dir: Path
    llm_base_url: str
    llm_model: str = DEFAULT_LLM_MODEL
    hf_endpoint: str | None = None          # None: huggingface_hub's default (HF_ENDPOINT or huggingface.co)
    hf_token: str | bool | None = None      # None: the token huggingface_hub finds (HF_TOKEN, login)
    recent_after: date = DEFAULT_RECENT_AFTER
    legacy_before: date = DEFAULT_LEGACY_BEFORE
    seed: int = 0
    disable_progress: bool = False
    tasks: list[str] | None = None
    known_ids: list[str] | None = None
    sources: str | None = None
    per_task: int = 25
    recent_limit: int = 200
    legacy_limit: int = 50
    min_card_words: int = 200
    legacy_min_card_words: int = 500
    llm_api_key_env: str = DEFAULT_API_KEY_ENV
    llm_extra_body: dict = field(default_factory=lambda: dict(NO_THINKING))
    llm_timeout: float = 300.0
    llm_max_retries: int = 5
    llm_backoff: float = 2.0
    llm_attempts: int = 2                   # tries per model when the LLM's answer is unusable
    move_models: int = 60
    move_prompts: int = 10
    legacy_to_e3: int = 70
    min_prompts: int = 10

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)


# ----------------------------------------------------------------------------------------- files

def _write_jsonl_atomic(path: Path, rows: Iterable[dict]) -> None:
    def write(fh) -> None:
        for row in rows:
            fh.write((json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())
    atomic_write(path, write)


def _write_json_atomic(path: Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _read_partial(path: Path) -> dict[str, dict]:
    """Entries of a per-model log; a torn last line (crash while writing) is ignored."""
    done: dict[str, dict] = {}
    if path.exists():
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(obj, dict) and "id" in obj:
                    done[obj["id"]] = obj
    return done


class _Step:
    """One cached step: its output file, a stats file beside it, and whether it is already done."""

    def __init__(self, cache: Path, name: str, stats: dict[str, dict]):
        self.path = cache / f"{name}.jsonl"
        self.stats_path = cache / f"{name}.stats.json"
        self.partial = cache / f"{name}.partial.jsonl"
        self.name, self._all_stats = name, stats

    @property
    def done(self) -> bool:
        return self.path.exists()

    def load(self) -> list[dict]:
        if self.stats_path.exists():
            self._all_stats[self.name] = json.loads(self.stats_path.read_text(encoding="utf-8"))
        return _read_jsonl(self.path)

    def save(self, rows: list[dict], stats: Counter | dict) -> list[dict]:
        stats = dict(sorted(dict(stats).items()))
        _write_json_atomic(self.stats_path, stats)
        _write_jsonl_atomic(self.path, rows)
        self.partial.unlink(missing_ok=True)
        self._all_stats[self.name] = stats
        return rows


def _per_model_llm_step(step: _Step, items: list[dict], work: Callable[[dict], dict], desc: str,
                        disable: bool) -> list[dict]:
    """Run ``work`` for each item not yet in the step's partial log, appending each result as it comes."""
    done = _read_partial(step.partial)
    step.partial.parent.mkdir(parents=True, exist_ok=True)
    with open(step.partial, "a", encoding="utf-8") as log_fh:
        for item in tqdm(items, desc=desc, unit="model", disable=disable):
            if item["id"] in done:
                continue
            result = work(item)
            log_fh.write(json.dumps(result, ensure_ascii=False, sort_keys=True) + "\n")
            log_fh.flush()
            done[result["id"]] = result
    return [done[i["id"]] for i in items]


# ----------------------------------------------------------------------------------------- steps

def _inputs(config: HuggingBenchConfig) -> tuple[list[str], list[str]]:
    tasks, known = config.tasks, config.known_ids
    if tasks is None or known is None:
        from cmrbench.sources import SourceResolver
        resolver = SourceResolver(config.sources)
        if tasks is None:
            tasks = list(json.loads(resolver.resolve(TASKS_KEY).read_text(encoding="utf-8")))
        if known is None:
            known = sorted({json.loads(line)["model_name"] for line in
                            resolver.resolve(KNOWN_IDS_KEY).read_text(encoding="utf-8").splitlines()
                            if line.strip()})
    unknown = [t for t in tasks if t not in TASKS and t not in EXCLUDED_TASKS]
    if unknown:
        raise ValueError(f"HF tasks {unknown} are not in the CMRBench taxonomy (builders/taxonomy.py TASKS); "
                         "add them there or leave them out of the task list.")
    return tasks, known


def _with_attempts(attempts: int, call: Callable[[], object]) -> tuple[object | None, str | None, int]:
    """(result, last error, tries) of up to ``attempts`` calls that may raise LLMOutputError."""
    error = None
    for n in range(1, max(1, attempts) + 1):
        try:
            return call(), None, n
        except LLMOutputError as err:
            error = str(err)
            log.warning("%s (try %d of %d)", err, n, attempts)
    return None, error, max(1, attempts)


def run_pipeline(config: HuggingBenchConfig, *, api: HfApi | None = None,
                 client: ChatClient | None = None) -> Path:
    """Run (or resume) the pipeline; returns ``config.out_dir`` (layout in the module doc)."""
    out, disable = config.out_dir, config.disable_progress
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    all_stats: dict[str, dict] = {}
    steps = {name: _Step(cache, name, all_stats) for name in
             ("1-models", "2-descriptions", "3-filtered", "4-generations", "5-queries", "6-experiences")}

    def llm() -> ChatClient:
        nonlocal client
        if client is None:
            client = ChatClient(config.llm_base_url, config.llm_model, api_key_env=config.llm_api_key_env,
                                timeout=config.llm_timeout, max_retries=config.llm_max_retries,
                                backoff=config.llm_backoff, extra_body=dict(config.llm_extra_body))
        return client

    # Steps 1-2: model selection.
    step = steps["1-models"]
    if step.done:
        records = [ModelRecord.from_json(r) for r in step.load()]
    else:
        if hf_constants.is_offline_mode():
            raise RuntimeError("HF_HUB_OFFLINE is set, but selecting models needs the Hub: unset it, or "
                               "build HuggingBench offline from the release (builders/huggingbench/release.py).")
        tasks, known = _inputs(config)
        api = api or HfApi(endpoint=config.hf_endpoint, token=config.hf_token)
        stats: Counter = Counter()
        records = select_models(api, tasks, recent_after=config.recent_after, legacy_before=config.legacy_before,
                                known_ids=known, per_task=config.per_task, recent_limit=config.recent_limit,
                                legacy_limit=config.legacy_limit, min_card_words=config.min_card_words,
                                legacy_min_card_words=config.legacy_min_card_words,
                                card_cache_dir=cache / "hf", stats=stats, disable_progress=disable)
        stats["selected recent models"] = sum(not r.legacy for r in records)
        stats["selected legacy models"] = sum(r.legacy for r in records)
        step.save([r.to_json() for r in records], stats)
    by_id = {r.id: r for r in records}

    # Step 3: card cleaning.
    step = steps["2-descriptions"]
    if step.done:
        described = step.load()
    else:
        def describe(item: dict) -> dict:
            record = by_id[item["id"]]
            text, error, tries = _with_attempts(config.llm_attempts, lambda: clean_card(llm(), record))
            return {"id": record.id, "description": text, "error": error, "tries": tries}
        items = [{"id": r.id} for r in records]
        described = _per_model_llm_step(step, items, describe, "clean cards", disable)
        stats = Counter({"llm_calls": sum(d["tries"] for d in described),
                         "unusable LLM answer": sum(d["error"] is not None for d in described)})
        step.save(described, stats)

    # Step 4: description filters.
    step = steps["3-filtered"]
    if step.done:
        kept = step.load()
    else:
        stats = Counter({"no description (unusable LLM answer)": sum(d["error"] is not None for d in described)})
        kept = filter_descriptions(({"id": d["id"], "downloads": by_id[d["id"]].downloads,
                                     "description": d["description"]} for d in described if d["error"] is None),
                                   stats)
        stats["kept"] = len(kept)
        step.save(kept, stats)

    # Step 5: query generation (validated per answer: exactly 20 strings).
    step = steps["4-generations"]
    if step.done:
        generations = step.load()
    else:
        def generate(item: dict) -> dict:
            record = by_id[item["id"]]
            result, error, tries = _with_attempts(
                config.llm_attempts,
                lambda: generate_queries(llm(), record.id, record.task, item["description"], QUERIES_PER_MODEL))
            accepted, rejected = result if result is not None else ([], [])
            return {"id": record.id, "queries": accepted, "rejected": rejected, "error": error, "tries": tries}
        generations = _per_model_llm_step(step, kept, generate, "generate queries", disable)
        stats = Counter({"llm_calls": sum(g["tries"] for g in generations),
                         "models without a valid answer": sum(g["error"] is not None for g in generations),
                         "queries rejected (forbidden word or model id)": sum(len(g["rejected"]) for g in generations),
                         "queries accepted": sum(len(g["queries"]) for g in generations)})
        step.save(generations, stats)

    # Step 6: explode to one row per query, drop repeats.
    step = steps["5-queries"]
    descriptions = {k["id"]: k["description"] for k in kept}
    if step.done:
        queries = step.load()
    else:
        stats = Counter()
        carried = [{"id": g["id"], "queries": g["queries"]} for g in generations if g["error"] is None]
        queries = []
        for row in explode_queries(carried, stats):
            record = by_id[row["id"]]
            queries.append({"model_id": record.id, "instruction": row["instruction"], "task": record.task,
                            "domain": domain_for_task(record.task), "created_at": record.created_at,
                            "legacy": record.legacy})
        stats["rows"] = len(queries)
        step.save(queries, stats)

    # Step 7: experiences and splits.
    step = steps["6-experiences"]
    if step.done:
        rows = step.load()
    else:
        stats = Counter(seed=config.seed)
        rows = build_experiences(queries, seed=config.seed, move_models=config.move_models,
                                 move_prompts=config.move_prompts, legacy_to_e3=config.legacy_to_e3,
                                 min_prompts=config.min_prompts, stats=stats)
        step.save(rows, stats)

    index = 0
    for exp in EXPERIENCES:
        for split in SPLITS:
            lines = []
            for row in rows:
                if row["experience"] == exp and row["split"] == split:
                    lines.append({"index": index, "instruction": row["instruction"], "model_name": row["model_id"],
                                  "description": descriptions[row["model_id"]], "domain": row["domain"],
                                  "created_at": row["created_at"]})
                    index += 1
            _write_jsonl_atomic(out / "raw" / f"exp{exp}" / f"exp{exp}-{split}.jsonl", lines)
    _write_json_atomic(out / "stats.json", {"config": _config_summary(config), "steps": all_stats})
    return out


def _config_summary(config: HuggingBenchConfig) -> dict:
    return {"llm_model": config.llm_model, "hf_endpoint": config.hf_endpoint or hf_constants.ENDPOINT,
            "recent_after": config.recent_after.isoformat(), "legacy_before": config.legacy_before.isoformat(),
            "seed": config.seed, "per_task": config.per_task, "recent_limit": config.recent_limit,
            "legacy_limit": config.legacy_limit, "min_card_words": config.min_card_words,
            "legacy_min_card_words": config.legacy_min_card_words, "move_models": config.move_models,
            "move_prompts": config.move_prompts, "legacy_to_e3": config.legacy_to_e3,
            "min_prompts": config.min_prompts, "recent_after_ms": to_ms(config.recent_after),
            "legacy_before_ms": to_ms(config.legacy_before)}


# ----------------------------------------------------------------------------------------- CLI

def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got '{text}'") from None


def _json_object(text: str) -> dict:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err.msg}") from None
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return obj


def register_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``huggingbench`` (with its ``scrape`` subcommand) to a parser's subcommands.

    The subcommand sets ``func`` (call it with the parsed namespace; it returns an exit status).
    """
    group = subparsers.add_parser(
        "huggingbench", help="rebuild HuggingBench (E3/E4) from the live Hugging Face Hub with an LLM",
        description="HuggingBench (E3/E4) from the live Hugging Face Hub. The default CMRBench build does not "
                    "need this: it reads the authors' released generation output offline. Use these commands "
                    "to regenerate the benchmark with network access and an OpenAI-compatible LLM endpoint.")
    commands = group.add_subparsers(dest="huggingbench_command", metavar="COMMAND", required=True)
    p = commands.add_parser(
        "scrape",
        help="select Hub models, clean their cards, generate queries and split them (paper §3.4, steps 1-7)",
        description="Run the 7-step HuggingBench pipeline: list models per HF task, fetch and filter their "
                    "cards, have the LLM rewrite each card and write 20 queries per model, then build E3/E4 "
                    "with train/val/test splits. Every step is cached under OUT/cache, so running the same "
                    "command again resumes where it stopped. Results: OUT/raw/exp{3,4}/*.jsonl, OUT/stats.json.")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output and cache folder")
    p.add_argument("--llm-base-url", required=True, metavar="URL",
                   help="OpenAI-compatible base URL; requests go to URL/chat/completions (e.g. a vLLM "
                        "server at http://localhost:8000/v1)")
    p.add_argument("--llm-model", default=DEFAULT_LLM_MODEL, metavar="NAME",
                   help="model name sent to the LLM endpoint (default: %(default)s)")
    p.add_argument("--llm-api-key-env", default=DEFAULT_API_KEY_ENV, metavar="VAR",
                   help="environment variable holding the LLM API key, sent as a bearer token when set "
                        "(default: %(default)s)")
    p.add_argument("--llm-extra-body", type=_json_object, default=dict(NO_THINKING), metavar="JSON",
                   help="JSON object merged into every chat request; the default turns Qwen3 thinking off "
                        "on vLLM (chat_template_kwargs.enable_thinking=false); pass '{}' for endpoints that "
                        "reject unknown fields")
    p.add_argument("--hf-endpoint", default=None, metavar="URL",
                   help="Hugging Face Hub endpoint (default: $HF_ENDPOINT or https://huggingface.co); the "
                        "token comes from $HF_TOKEN or `hf auth login`")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of every random choice in step 7 (default: %(default)s)")
    p.add_argument("--recent-after", type=_date, default=DEFAULT_RECENT_AFTER, metavar="YYYY-MM-DD",
                   help="recent models must be created after this date, UTC (default: %(default)s)")
    p.add_argument("--legacy-before", type=_date, default=DEFAULT_LEGACY_BEFORE, metavar="YYYY-MM-DD",
                   help="legacy models (already in E1/E2) must be created before this date, UTC "
                        "(default: %(default)s)")
    p.add_argument("--tasks", type=lambda s: [t.strip() for t in s.split(",") if t.strip()], default=None,
                   metavar="T1,T2", help="HF tasks to scrape (default: every task of the pinned HF tasks "
                                         "catalogue)")
    p.add_argument("--known-ids", type=Path, default=None, metavar="FILE",
                   help="file with one E1/E2 model id per line, the pool of legacy models (default: the "
                        "release's E1+E2 model index)")
    p.add_argument("--sources", default=None, metavar="DIR",
                   help="mirror of the pinned source files (default: $CMRBENCH_SOURCES, else download)")
    p.add_argument("--per-task", type=int, default=25, metavar="N", help="models kept per task (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    p.set_defaults(func=_run_scrape)
    return group


def _run_scrape(args: argparse.Namespace) -> int:
    known = None
    if args.known_ids is not None:
        known = [line.strip() for line in args.known_ids.read_text(encoding="utf-8").splitlines() if line.strip()]
    config = HuggingBenchConfig(out_dir=args.out, llm_base_url=args.llm_base_url, llm_model=args.llm_model,
                                hf_endpoint=args.hf_endpoint, recent_after=args.recent_after,
                                legacy_before=args.legacy_before, seed=args.seed,
                                disable_progress=args.no_progress, tasks=args.tasks, known_ids=known,
                                sources=args.sources, per_task=args.per_task,
                                llm_api_key_env=args.llm_api_key_env, llm_extra_body=args.llm_extra_body)
    out = run_pipeline(config)
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))["steps"].get("6-experiences", {})
    rows = {k: v for k, v in stats.items() if k.endswith(" rows")}
    print(f"HuggingBench written to {out / 'raw'}: " + ", ".join(f"{k} {v}" for k, v in rows.items()))
    return 0
