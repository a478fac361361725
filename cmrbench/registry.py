"""Router names -> factories, and loading routers named on the command line.

A router is named by a registered name (``bm25``), by ``package.module:Class`` (constructed with the
``--router-arg key=value`` pairs), or by a folder of precomputed predictions (black-box systems).
Registered routers are imported lazily, so heavy dependencies load only for the router in use: the table below
holds each one's place and metadata (kind, the extra it needs, rough cost), which ``cmrbench routers`` shows.
Other packages add routers through the entry-point group ``cmrbench.routers``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .protocol import Router

@dataclass(frozen=True)
class RouterEntry:
    """A registered router: where its factory lives and what a user should know before running it."""

    target: str                 # "module:factory"; factories take keyword arguments (and seed, when they accept it)
    kind: str                   # reference | retrieval | frozen | trained | generative | llm | carve | external
    summary: str
    extra: str | None = None    # the pip extra it needs beyond the core install
    cost: str = ""              # rough cost of the v1 paper stream on 2 CPU cores


KINDS = ("reference", "retrieval", "frozen", "trained", "generative", "llm", "carve", "external")
_B = "cmrbench.baselines."
_T = "minutes (8-15 on 2 cores)"
REGISTRY: dict[str, RouterEntry] = {
    "random": RouterEntry(_B + "reference:RandomRouter", "reference", "uniform over the models seen so far",
                          cost="seconds"),
    "most-frequent": RouterEntry(_B + "reference:MostFrequentRouter", "reference",
                                 "the models with most training prompts", cost="seconds"),
    "oracle": RouterEntry(_B + "reference:OracleRouter", "reference", "the gold model (reads the answer key)",
                          cost="seconds"),
    "domain-oracle": RouterEntry(_B + "reference:DomainOracleRouter", "reference",
                                 "a model of the gold domain (reads the answer key)", cost="seconds"),
    "precomputed": RouterEntry(_B + "precomputed:PrecomputedRouter", "reference",
                               "replays a folder of predictions made elsewhere (black-box systems)", cost="seconds"),
    "bm25": RouterEntry(_B + "retrieval.bm25:BM25Router", "retrieval", "BM25Okapi over cards, the paper's tokens",
                        "retrieval", "seconds"),
    "bm25-rank": RouterEntry(_B + "retrieval.bm25:RankBM25Router", "retrieval", "rank-bm25 itself, one query at "
                             "a time", "retrieval", "minutes"),
    "bm25-lower": RouterEntry(_B + "retrieval.bm25:bm25_lower", "retrieval", "BM25 on lower-cased tokens",
                              "retrieval", "seconds"),
    "lucene-bm25": RouterEntry(_B + "retrieval.lucene:LuceneBM25Router", "retrieval", "Lucene BM25 via pyserini",
                               "lucene", "1-3 minutes"),
    "dense": RouterEntry(_B + "retrieval.dense:DenseRouter", "retrieval", "bi-encoder over cards (MiniLM; mpnet)",
                         "retrieval", "3 minutes (MiniLM); mpnet about 5x slower"),
    "splade": RouterEntry(_B + "retrieval.splade:SpladeRouter", "retrieval", "SPLADE over cards (splade-tiny)",
                          "retrieval", "15 minutes"),
    "bge-m3": RouterEntry(_B + "retrieval.bgem3:BGEM3Router", "retrieval", "BGE-M3 hybrid + reranker (weights "
                          "from the Hub)", "retrieval", "GPU advised"),
    "ncm": RouterEntry(_B + "frozen.ncm:NCMRouter", "frozen", "nearest class mean over a frozen encoder",
                       "retrieval", "seconds with cached embeddings, 6 minutes cold"),
    "ranpac": RouterEntry(_B + "frozen.ranpac:RanPACRouter", "frozen", "random ReLU features + ridge (RanPAC)",
                          "retrieval", "2 minutes"),
    "naive": RouterEntry(_B + "strategies:naive", "trained", "sequential fine-tuning", "retrieval", _T),
    "replay-10": RouterEntry(_B + "strategies.replay:replay_10", "trained", "random replay of 10 %", "retrieval", _T),
    "replay-20": RouterEntry(_B + "strategies.replay:replay_20", "trained", "random replay of 20 %", "retrieval", _T),
    "cumulative": RouterEntry(_B + "strategies.cumulative:cumulative", "trained", "replay of everything",
                              "retrieval", "longer than joint: every prompt so far, each experience"),
    "joint": RouterEntry(_B + "strategies.cumulative:joint", "trained", "all data at once (upper bound)",
                         "retrieval", "17 minutes"),
    "ewc": RouterEntry(_B + "strategies.ewc:ewc", "trained", "online EWC", "retrieval", _T),
    "lwf": RouterEntry(_B + "strategies.lwf:lwf", "trained", "learning without forgetting", "retrieval", _T),
    "merge-avg": RouterEntry(_B + "strategies.merging:merge_average", "trained", "per-experience weights, averaged",
                             "retrieval", _T),
    "merge-ties": RouterEntry(_B + "strategies.merging:merge_ties", "trained", "per-experience weights, TIES",
                              "retrieval", _T),
    "merge-dare": RouterEntry(_B + "strategies.merging:merge_dare", "trained", "per-experience weights, DARE",
                              "retrieval", _T),
    "gorilla": RouterEntry(_B + "trainable.generative:GenerativeRouter", "generative",
                           "causal LM fine-tuned to emit the model id", "retrieval", "a GPU and a 7B LLM"),
    "gorilla-rag": RouterEntry(_B + "trainable.generative:GorillaRAGRouter", "generative",
                               "the same with the best BM25 card in its prompt", "retrieval", "a GPU and a 7B LLM"),
    "controller": RouterEntry(_B + "controller:ControllerRouter", "llm", "an LLM endpoint names the domain",
                              "retrieval", "an OpenAI-compatible endpoint (the paper: Qwen3-32B)"),
    "carve-10": RouterEntry(_B + "carve.router:carve_10", "carve", "CARvE, structured replay 10 %",
                            "retrieval", "11 minutes"),
    "carve-20": RouterEntry(_B + "carve.router:carve_20", "carve", "CARvE, structured replay 20 %",
                            "retrieval", "11 minutes"),
}
ENTRY_POINT_GROUP = "cmrbench.routers"


def registered() -> dict[str, RouterEntry]:
    """Every router name: cmrbench's own, then those other installed packages declare in the entry-point group
    ``cmrbench.routers`` (``name = "package.module:factory"``; a name cmrbench already uses is skipped)."""
    from importlib.metadata import entry_points

    out = dict(REGISTRY)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in out:
            out[ep.name] = RouterEntry(ep.value, "external", f"from the package {ep.dist.name if ep.dist else '?'}")
    return out


class RouterLoadError(ValueError):
    """A router name, class path or argument cannot be used."""


def parse_router_args(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` strings -> kwargs; values are parsed as int, float, bool (true / false) or None (null)
    when they look so, as in the YAML configs; anything else, ``none`` included, stays a string."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise RouterLoadError(f"--router-arg '{pair}' is not key=value")
        key, raw = pair.split("=", 1)
        value: Any = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        elif raw.lower() == "null":
            value = None
        out[key.strip().replace("-", "_")] = value
    return out


def _import(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not attr:
        raise RouterLoadError(f"'{target}' is not of the form package.module:Class")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())     # `--router my_router:MyRouter` finds my_router.py here, as `python -m` would
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise RouterLoadError(f"cannot import '{module_name}' for router '{target}': {err}") from err
    try:
        return getattr(module, attr)
    except AttributeError:
        raise RouterLoadError(f"module '{module_name}' has no '{attr}'") from None


def load_router(spec: str, args: dict[str, Any] | None = None, seed: int = 0) -> Router:
    """Build the router named by ``spec`` (registered name, ``module:Class`` or predictions folder)."""
    args = dict(args or {})
    names = registered()
    if spec in names and Path(spec).is_dir():
        raise RouterLoadError(f"'{spec}' is both a registered router and a folder here; write ./{spec} for the "
                              f"folder of precomputed predictions, or run from elsewhere for the registered router")
    if spec in names:
        factory = _import(names[spec].target)
    elif ":" in spec:
        factory = _import(spec)
    elif Path(spec).is_dir():
        factory = _import(REGISTRY["precomputed"].target)
        args.setdefault("folder", spec)
    else:
        raise RouterLoadError(f"unknown router '{spec}'; registered: {', '.join(sorted(names))}; or give "
                              "package.module:Class, or a folder of precomputed predictions")
    params = inspect.signature(factory).parameters
    if "seed" in params and "seed" not in args:
        args["seed"] = seed
    try:
        router = factory(**args)
    except TypeError as err:
        raise RouterLoadError(f"router '{spec}' rejected its arguments {sorted(args)}: {err}") from err
    if not isinstance(router, Router):
        raise RouterLoadError(f"'{spec}' built a {type(router).__name__}, which lacks the Router protocol "
                              "(meta, learn, route)")
    return router
