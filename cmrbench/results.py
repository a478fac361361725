"""Result files: pydantic models that reject unknown fields, with a committed JSON Schema.

One results JSON per (router, dataset version, seed), saved after every experience; the per-prompt
predictions sit beside it as Parquet so that every number can be recomputed by ``cmrbench rescore``.
"""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path
from typing import Literal

import psutil
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .fileio import atomic_write_text
from .protocol import RouterMeta

RESULTS_SCHEMA_VERSION = "1.3"  # 1.1: dataset.eval_split (1.0 files read as test-split runs); 1.2: answer_key, isolation;
# 1.3: router.statistics, run (the run record)
LEVELS = ("model", "family", "domain")
KS = (1, 3, 5, 10)
# every accuracy matrix a results file stores per level (mrr@10 at the model level only)
MATRIX_METRICS = tuple(f"acc@{k}" for k in KS) + ("mrr@10",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetRef(_Strict):
    name: str
    version: str
    stream: str
    n_experiences: int
    manifest_sha256: str
    folder: str = Field(description="folder name only, never a full path")
    eval_split: Literal["test", "validation"] = Field(
        "test", description="the scored split: test, or validation for development runs (never on a leaderboard)")


class Hardware(_Strict):
    platform: str
    python: str
    processor: str
    cpu_count: int
    memory_gb: float
    accelerator: str | None = None


class LevelSummary(_Strict):
    """Continual-learning summary of one accuracy matrix (see cmrbench.metrics for definitions)."""

    final_average_accuracy: float
    stream_average_accuracy: float
    forgetting: float | None
    max_forgetting: float | None
    backward_transfer: float | None
    forward_transfer: float | None = None


class Timings(_Strict):
    learn_seconds: list[float] = Field(description="seconds spent in learn(), per experience")
    route_seconds: list[float] = Field(description="seconds spent in route(), per experience")
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    throughput_prompts_per_s: float | None = None
    peak_rss_mb: float


class RunRecord(_Strict):
    """When and how a run was made: enough to tell two runs apart and to redo one."""

    started_at: str = Field(description="UTC, ISO 8601, when the run (not a resumed part) began")
    finished_at: str = Field(description="UTC, ISO 8601, when this file was last written")
    command: list[str] | None = Field(None, description="the command line, when run from `cmrbench` (absolute paths "
                                                          "cut to their last component)")
    router_spec: str | None = Field(None, description="the router as named on the command line (registered name, "
                                                      "module:Class or folder), when run from `cmrbench`")
    code_commit: str | None = Field(None, description="git commit of the cmrbench source tree ('+dirty' when "
                                                      "changed), when it runs from a checkout")
    packages: dict[str, str] = Field(default_factory=dict, description="versions of the packages results hang on")


PACKAGES = ("numpy", "polars", "pyarrow", "torch", "transformers", "sentence-transformers", "peft", "rank-bm25",
            "pyserini", "faiss-cpu")


def _without_paths(command: list[str]) -> list[str]:
    """The command line with every absolute path cut to its last component (as ``dataset.folder`` is): a results
    file names no folder of the machine it ran on."""
    def cut(arg: str) -> str:
        key, sep, value = arg.partition("=")
        if sep and os.path.isabs(value):
            return f"{key}={Path(value).name}"
        return Path(arg).name if os.path.isabs(arg) else arg
    return [cut(a) for a in command]


def run_record(started_at: str, command: list[str] | None = None, router_spec: str | None = None) -> RunRecord:
    from datetime import datetime, timezone
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            continue
    return RunRecord(started_at=started_at, finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     command=None if command is None else _without_paths(command), router_spec=router_spec,
                     code_commit=_source_commit(), packages=packages)


def _source_commit() -> str | None:
    """The git commit of the source tree cmrbench runs from (None for an installed wheel or without git)."""
    import subprocess
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) or None


class Results(_Strict):
    schema_version: Literal["1.0", "1.1", "1.2", "1.3"] = RESULTS_SCHEMA_VERSION
    cmrbench_version: str
    dataset: DatasetRef
    router: RouterMeta
    seed: int
    top_k: int
    answer_key: bool = Field(False, description="the router was handed the test labels (reference rows only)")
    isolation: Literal["none", "process"] = Field(
        "none", description="process: the router ran in a worker process that never held test labels")
    hardware: Hardware
    status: Literal["partial", "complete"]
    finished_experiences: int
    matrices: dict[str, dict[str, list[list[float | None]]]] = Field(
        description="level -> metric (acc@1, acc@3, acc@5, acc@10, mrr@10) -> A[t][j], None above the diagonal")
    summary: dict[str, LevelSummary] = Field(description="level -> summary of its acc@1 matrix")
    hallucination_rate: list[float] = Field(description="per experience t: top-1 ids outside the models seen so far")
    future_leak_rate: list[float] = Field(description="per experience t: top-1 ids that appear only later")
    reference_rows: dict[str, dict[str, LevelSummary]] = Field(
        default_factory=dict, description="harness references (random, most-frequent, oracle, domain-oracle)")
    timings: Timings
    predictions_file: str
    run: RunRecord | None = Field(None, description="when and how the run was made (schema 1.3 on)")
    _predictions: pl.DataFrame | None = PrivateAttr(None)

    @property
    def predictions(self) -> pl.DataFrame:
        """The per-prompt predictions (in memory after ``cmrbench.evaluate``, else read from beside the file)."""
        if self._predictions is None:
            raise ValueError("these results hold no predictions in memory; read "
                             f"{self.predictions_file} beside the results file")
        return self._predictions


def hardware() -> Hardware:
    accel = None
    try:
        import torch  # only to report an accelerator when one is present
        if torch.cuda.is_available():
            accel = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return Hardware(platform=platform.platform(), python=platform.python_version(),
                    processor=platform.processor() or platform.machine(), cpu_count=os.cpu_count() or 1,
                    memory_gb=round(psutil.virtual_memory().total / 2 ** 30, 1), accelerator=accel)


def save_results(results: Results, path: Path) -> None:
    atomic_write_text(path, results.model_dump_json(indent=2) + "\n")


def load_results(path: Path) -> Results:
    """Read and validate a results file; errors name the file and the offending field."""
    try:
        return Results.model_validate_json(Path(path).read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path}: not a valid CMRBench results file: {err}") from err


RESULTS_NAME = re.compile(r"^[^.].*__.+__seed-?\d+\.json$")


def find_results_files(folder: Path) -> list[Path]:
    """Results files under ``folder``: ``<router>__<dataset>__seed<N>.json``, recursively, skipping hidden
    names and router checkpoints (``*.checkpoints/``), so leaderboards, checkpoints and notes kept beside
    results never count as results."""
    folder = Path(folder)
    out = []
    for path in sorted(folder.rglob("*.json")):
        parts = path.relative_to(folder).parts
        if any(p.startswith(".") or p.endswith(".checkpoints") for p in parts[:-1]):
            continue
        if RESULTS_NAME.match(path.name):
            out.append(path)
    return out


def results_json_schema() -> str:
    return json.dumps(Results.model_json_schema(), indent=2, sort_keys=True) + "\n"
