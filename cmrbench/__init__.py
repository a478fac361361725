"""CMRBench: benchmark and harness for Continual Model Routing.

The Python API, for notebooks and scripts (the command line does the same with files)::

    import cmrbench
    bench = cmrbench.load()                          # the build `cmrbench build` wrote (or a folder)
    router = cmrbench.load_router("bm25")            # a registered name, "module:Class", or your own object
    results = cmrbench.evaluate(router, bench)       # in memory; out="runs/" also writes the files
    results.summary["domain"].final_average_accuracy, results.predictions

Names are imported on first use, so ``import cmrbench`` stays light.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("cmrbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

DATASET_NAME = "CMRBench"
DATASET_VERSION = "v1"

if TYPE_CHECKING:
    from .data import Benchmark
    from .protocol import Router
    from .results import Results

_LAZY = {"Benchmark": ".data", "Experience": ".data", "Router": ".protocol", "RouterMeta": ".protocol",
         "CheckpointableRouter": ".protocol", "Results": ".results", "load_results": ".results",
         "load_router": ".registry"}
__all__ = ["load", "evaluate", *_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'cmrbench' has no attribute {name!r}")


def load(folder: str | Path | None = None, eval_split: str = "test") -> Benchmark:
    """A built CMRBench folder (default: where ``cmrbench build`` writes); ``eval_split="validation"`` scores
    the validation split and withholds it from the routers, for choosing settings."""
    from .data import Benchmark, default_data_dir
    return Benchmark(Path(folder) if folder is not None else default_data_dir(), eval_split=eval_split)


def evaluate(router: Router | str, benchmark: Benchmark | str | Path | None = None, out: str | Path | None = None,
             *, seed: int = 0, router_args: dict[str, Any] | None = None, progress: bool = True,
             **options: Any) -> Results:
    """Train and score ``router`` experience by experience; the results, predictions included, in memory.

    ``router``: an object with the :class:`~cmrbench.protocol.Router` protocol, or a name for
    :func:`load_router` (with ``router_args``). ``benchmark``: a :class:`Benchmark` or a folder (default: the
    default build). ``out``: a folder to keep the results JSON and predictions Parquet in (and to ``resume=True``
    from); without it they live in a temporary folder that is removed. ``options`` are those of
    :func:`cmrbench.harness.evaluate` (``top_k``, ``batch_size``, ``timeout``, ``on_unknown_id``...).
    """
    import tempfile

    import polars as pl

    from .harness import RunPaths
    from .harness import evaluate as run
    from .registry import load_router

    bench = benchmark if benchmark is not None and not isinstance(benchmark, (str, Path)) else load(benchmark)
    spec = router if isinstance(router, str) else None
    if spec is not None:
        router = load_router(spec, router_args, seed=seed)
    elif router_args:
        raise ValueError("router_args are for a router given by name; configure a router object yourself")
    with tempfile.TemporaryDirectory(prefix="cmrbench-") as tmp:
        folder = Path(out) if out is not None else Path(tmp)
        results = run(router, bench, folder, seed=seed, progress=progress, router_spec=spec, **options)
        predictions = pl.read_parquet(RunPaths.for_run(folder, router.meta.name, bench, seed).predictions)
    results._predictions = predictions
    return results
