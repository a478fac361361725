"""Router names -> factories, and loading routers named on the command line.

A router is named by a registered name (``bm25``), by ``package.module:Class`` (constructed with the
``--router-arg key=value`` pairs), or by a folder of precomputed predictions (black-box systems).
Registered routers are imported lazily, so heavy dependencies load only for the router in use.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from pathlib import Path
from typing import Any

from .protocol import Router

# name -> "module:factory"; factories accept keyword arguments (seed is always passed when accepted)
REGISTRY: dict[str, str] = {
    "random": "cmrbench.baselines.reference:RandomRouter",
    "most-frequent": "cmrbench.baselines.reference:MostFrequentRouter",
    "oracle": "cmrbench.baselines.reference:OracleRouter",
    "domain-oracle": "cmrbench.baselines.reference:DomainOracleRouter",
    "precomputed": "cmrbench.baselines.precomputed:PrecomputedRouter",
    "bm25": "cmrbench.baselines.retrieval.bm25:BM25Router",
    "bm25-rank": "cmrbench.baselines.retrieval.bm25:RankBM25Router",
    "bm25-lower": "cmrbench.baselines.retrieval.bm25:bm25_lower",
    "lucene-bm25": "cmrbench.baselines.retrieval.lucene:LuceneBM25Router",
    "dense": "cmrbench.baselines.retrieval.dense:DenseRouter",
    "splade": "cmrbench.baselines.retrieval.splade:SpladeRouter",
    "bge-m3": "cmrbench.baselines.retrieval.bgem3:BGEM3Router",
    "ncm": "cmrbench.baselines.frozen.ncm:NCMRouter",
    "ranpac": "cmrbench.baselines.frozen.ranpac:RanPACRouter",
    "naive": "cmrbench.baselines.strategies.naive:NaiveRouter",
    "replay-10": "cmrbench.baselines.strategies.replay:replay_10",
    "replay-20": "cmrbench.baselines.strategies.replay:replay_20",
    "cumulative": "cmrbench.baselines.strategies.cumulative:CumulativeRouter",
    "joint": "cmrbench.baselines.strategies.cumulative:JointRouter",
    "ewc": "cmrbench.baselines.strategies.ewc:EWCRouter",
    "lwf": "cmrbench.baselines.strategies.lwf:LwFRouter",
    "merge-avg": "cmrbench.baselines.strategies.merging:merge_average",
    "merge-ties": "cmrbench.baselines.strategies.merging:merge_ties",
    "merge-dare": "cmrbench.baselines.strategies.merging:merge_dare",
    "gorilla": "cmrbench.baselines.trainable.generative:GenerativeRouter",
    "gorilla-rag": "cmrbench.baselines.trainable.generative:GorillaRAGRouter",
    "controller": "cmrbench.baselines.controller:ControllerRouter",
    "carve-10": "cmrbench.baselines.carve.router:carve_10",
    "carve-20": "cmrbench.baselines.carve.router:carve_20",
}


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
    if spec in REGISTRY and Path(spec).is_dir():
        raise RouterLoadError(f"'{spec}' is both a registered router and a folder here; write ./{spec} for the "
                              f"folder of precomputed predictions, or run from elsewhere for the registered router")
    if spec in REGISTRY:
        factory = _import(REGISTRY[spec])
    elif ":" in spec:
        factory = _import(spec)
    elif Path(spec).is_dir():
        factory = _import(REGISTRY["precomputed"])
        args.setdefault("folder", spec)
    else:
        raise RouterLoadError(f"unknown router '{spec}'; registered: {', '.join(sorted(REGISTRY))}; or give "
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
