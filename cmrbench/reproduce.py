"""Two-click reproductions: every baseline has its exact command and expected scores, and
``cmrbench reproduce [NAME]`` reruns it and checks the scores within a tolerance.

Each ``baselines/reproductions/<name>.yaml`` holds the router name and arguments, the seed, the
command line it corresponds to, and the expected final-average accuracies (percent) measured on the
CMRBench v1 paper-stream build.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from .data import Benchmark
from .harness import RunPaths, evaluate
from .registry import load_router


class Expected(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: float
    family: float
    domain: float
    domain_forgetting: float | None = None


class Reproduction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    router: str
    router_args: dict[str, object] = Field(default_factory=dict)
    run_name: str | None = Field(None, description="the row's name when it differs from the router's (--run-name)")
    seed: int = 0
    command: str
    measured_on: str = Field(description="hardware and date of the expected numbers")
    results_of_record: str | None = Field(None, description="the committed results file the numbers come from")
    expected: Expected
    tolerance: float = Field(default=0.1, description="allowed absolute difference, percentage points")


def reproductions() -> dict[str, Reproduction]:
    folder = files("cmrbench.baselines").joinpath("reproductions")
    out = {}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            spec = Reproduction.model_validate(yaml.safe_load(entry.read_text(encoding="utf-8")))
            out[spec.name] = spec
    return out


def observed(summary) -> dict[str, float | None]:
    fgt = summary["domain"].forgetting
    return {"model": 100 * summary["model"].final_average_accuracy,
            "family": 100 * summary["family"].final_average_accuracy,
            "domain": 100 * summary["domain"].final_average_accuracy,
            "domain_forgetting": None if fgt is None else 100 * fgt}


def reproduce(spec: Reproduction, data: Path, out: Path, progress: bool = True) -> list[tuple[str, float, float | None, bool]]:
    """Run one reproduction; return (metric, expected, observed, within tolerance) rows."""
    bench = Benchmark(data)
    router = load_router(spec.router, dict(spec.router_args), seed=spec.seed)
    if spec.run_name:
        router.meta = router.meta.model_copy(update={"name": spec.run_name})
    paths = RunPaths.for_run(out, router.meta.name, bench, spec.seed)
    for stale in (paths.results, paths.predictions):
        stale.unlink(missing_ok=True)
    results = evaluate(router, bench, out, seed=spec.seed, progress=progress)
    got = observed(results.summary)
    rows = []
    for metric, want in spec.expected.model_dump().items():
        if want is None:
            continue
        have = got[metric]
        rows.append((metric, want, have, have is not None and abs(have - want) <= spec.tolerance))
    return rows
