"""Leaderboard: validate results files, merge seeds (mean and std), rank, render JSON and Markdown."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cmrbench import __version__
from cmrbench.metrics import mean_std
from cmrbench.results import LEVELS, Results, load_results

LEADERBOARD_SCHEMA_VERSION = "1.0"
SUMMARY_FIELDS = ("final_average_accuracy", "stream_average_accuracy", "forgetting", "max_forgetting",
                  "backward_transfer")


class Stat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mean: float | None
    std: float | None
    n: int


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    router: str
    router_version: str
    zero_shot: bool
    reference_row: bool
    seeds: list[int]
    scores: dict[str, dict[str, Stat]] = Field(description="level -> summary field -> mean/std over seeds")
    learn_seconds_total: Stat
    latency_p50_ms: Stat
    peak_rss_mb: Stat
    files: list[str]


class Leaderboard(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: str = LEADERBOARD_SCHEMA_VERSION
    cmrbench_version: str
    dataset: str
    manifest_sha256: str
    sort_by: str
    entries: list[Entry]


def stat(values: list[float | None]) -> Stat:
    """Mean and sample std over seeds of the values that exist."""
    vals = [v for v in values if v is not None]
    if not vals:
        return Stat(mean=None, std=None, n=0)
    m, s = mean_std(vals)
    return Stat(mean=m, std=s, n=len(vals))


def _same_configuration(name: str, runs: list[tuple[Path, Results]]) -> None:
    """Seeds of one entry must share every hyper-parameter but the seed, or their mean means nothing."""
    configs = [{k: v for k, v in r.router.parameters.items() if k != "seed"} for _, r in runs]
    for (path, _), config in zip(runs[1:], configs[1:]):
        if config != configs[0]:
            changed = sorted(k for k in configs[0].keys() | config.keys() if configs[0].get(k) != config.get(k))
            raise ValueError(f"{runs[0][0]} and {path} are both '{name}' but differ in {', '.join(changed)}; "
                             "give one a name of its own (--router-arg name=...) or rank them apart")


def build_leaderboard(results_dir: Path, sort_by: str = "domain.final_average_accuracy") -> Leaderboard:
    """Every complete results file under ``results_dir`` (validated), grouped by router name and version."""
    level, _, field = sort_by.partition(".")
    if level not in LEVELS or field not in SUMMARY_FIELDS:
        raise ValueError(f"--sort-by '{sort_by}': use LEVEL.METRIC with LEVEL in {LEVELS} and METRIC in "
                         f"{SUMMARY_FIELDS}")
    files = sorted(p for p in Path(results_dir).rglob("*.json") if not p.name.startswith("."))
    groups: dict[tuple[str, str], list[tuple[Path, Results]]] = defaultdict(list)
    datasets = set()
    for path in files:
        results = load_results(path)  # raises naming the file when it does not validate
        if results.status != "complete":
            continue
        if results.dataset.eval_split != "test":
            raise ValueError(f"{path} scored the {results.dataset.eval_split} split (a development run); "
                             "leaderboards rank test-split runs only: move it out of the results folder")
        datasets.add((f"{results.dataset.name}-{results.dataset.version}-{results.dataset.stream}",
                      results.dataset.manifest_sha256))
        groups[(results.router.name, results.router.version)].append((path, results))
    if not groups:
        raise ValueError(f"no complete results files under {results_dir}")
    if len(datasets) > 1:
        raise ValueError(f"results under {results_dir} come from {len(datasets)} dataset builds; rank one at a time")
    entries = []
    for (name, version), runs in groups.items():
        runs.sort(key=lambda pr: pr[1].seed)
        _same_configuration(name, runs)
        scores = {lv: {f: stat([getattr(r.summary[lv], f) for _, r in runs]) for f in SUMMARY_FIELDS}
                  for lv in LEVELS}
        entries.append(Entry(
            router=name, router_version=version, zero_shot=runs[0][1].router.zero_shot,
            reference_row=runs[0][1].router.reference_row, seeds=[r.seed for _, r in runs], scores=scores,
            learn_seconds_total=stat([sum(r.timings.learn_seconds) for _, r in runs]),
            latency_p50_ms=stat([r.timings.latency_p50_ms for _, r in runs]),
            peak_rss_mb=stat([r.timings.peak_rss_mb for _, r in runs]),
            files=[str(p.relative_to(results_dir)) for p, _ in runs]))
    key = lambda e: (-(e.scores[level][field].mean if e.scores[level][field].mean is not None else -1e9), e.router)
    (dataset, sha), = datasets
    return Leaderboard(cmrbench_version=__version__, dataset=dataset, manifest_sha256=sha, sort_by=sort_by,
                       entries=sorted(entries, key=key))


def _pct(stat: Stat) -> str:
    if stat.mean is None:
        return "–"
    return f"{100 * stat.mean:.1f}" + (f" ± {100 * stat.std:.1f}" if stat.n > 1 else "")


def to_markdown(board: Leaderboard) -> str:
    head = ("| # | router | type | M-Acc | F-Acc | D-Acc | D-FGT | D-BWT | learn s | seeds |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for i, e in enumerate(board.entries, start=1):
        kind = "reference" if e.reference_row else ("zero-shot" if e.zero_shot else "trained")
        s = e.scores
        rows.append(f"| {i} | {e.router} | {kind} | {_pct(s['model']['final_average_accuracy'])} | "
                    f"{_pct(s['family']['final_average_accuracy'])} | {_pct(s['domain']['final_average_accuracy'])} | "
                    f"{_pct(s['domain']['forgetting'])} | {_pct(s['domain']['backward_transfer'])} | "
                    f"{e.learn_seconds_total.mean:.1f} | {len(e.seeds)} |")
    return (f"Leaderboard on {board.dataset} (accuracy after the last experience, %; mean ± std over seeds; "
            f"sorted by {board.sort_by})\n\n" + head + "\n" + "\n".join(rows) + "\n")


def leaderboard_json_schema() -> str:
    return json.dumps(Leaderboard.model_json_schema(), indent=2, sort_keys=True) + "\n"
