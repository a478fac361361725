"""Leaderboard: validate results files, merge seeds (mean and std), rank, render JSON and Markdown."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cmrbench import __version__
from cmrbench.analysis import verify
from cmrbench.data import Benchmark, default_data_dir
from cmrbench.metrics import SUMMARY_METRICS, mean_std, percent
from cmrbench.results import LEVELS, Results, find_results_files, load_results

LEADERBOARD_SCHEMA_VERSION = "1.1"   # 1.1: reference rows apart from the ranked entries
SUMMARY_FIELDS = tuple(SUMMARY_METRICS)


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
    entries: list[Entry] = Field(description="ranked routers, best first by sort_by in its better direction")
    references: list[Entry] = Field(default_factory=list,
                                    description="reference rows (oracles, random...): shown apart, never ranked")


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


def sort_key(sort_by: str):
    """The ranking key of ``LEVEL.METRIC``: its better direction first, then model-level and family-level final
    accuracy, then the name (so equal domain scores never fall back to the alphabet alone)."""
    level, _, field = sort_by.partition(".")
    if level not in LEVELS or field not in SUMMARY_METRICS:
        raise ValueError(f"--sort-by '{sort_by}': use LEVEL.METRIC with LEVEL in {LEVELS} and METRIC in "
                         f"{SUMMARY_FIELDS}")
    sign = -1.0 if SUMMARY_METRICS[field]["higher_is_better"] else 1.0

    def value(e: Entry, lv: str, f: str, s: float) -> float:
        mean = e.scores[lv][f].mean
        return float("inf") if mean is None else s * mean

    return lambda e: (value(e, level, field, sign), value(e, "model", "final_average_accuracy", -1.0),
                      value(e, "family", "final_average_accuracy", -1.0), e.router)


def load_verified(results_dir: Path, data: Path | Benchmark) -> list[tuple[Path, Results]]:
    """Every results file under ``results_dir``, each verified against its predictions on the build ``data``."""
    bench = data if isinstance(data, Benchmark) else None
    out = []
    for path in find_results_files(results_dir):
        results = load_results(path)
        if results.dataset.eval_split != "test":
            raise ValueError(f"{path} scored the {results.dataset.eval_split} split (a development run); "
                             "leaderboards rank test-split runs only: move it out of the results folder")
        if bench is None:
            bench = Benchmark(data)
        out.append((path, verify(path, bench)))
    return out


def build_leaderboard(results_dir: Path, sort_by: str = "domain.final_average_accuracy",
                      data: Path | Benchmark | None = None) -> Leaderboard:
    """Every complete results file under ``results_dir``, verified against the build ``data`` (default: where
    ``cmrbench build`` writes), grouped by router name and version; seeds merged as mean and std."""
    key = sort_key(sort_by)
    data = default_data_dir() if data is None else data
    groups: dict[tuple[str, str], list[tuple[Path, Results]]] = defaultdict(list)
    datasets = set()
    for path, results in load_verified(results_dir, data):
        if results.status != "complete":
            continue
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
        seeds = [r.seed for _, r in runs]
        for (a, ra), (b, rb) in zip(runs, runs[1:]):
            if ra.seed == rb.seed:
                raise ValueError(f"{a} and {b} are both '{name}' with seed {ra.seed}: one run counted twice (a copy, "
                                 "or a reproduction beside the original); keep one of them in the folder")
        _same_configuration(name, runs)
        scores = {lv: {f: stat([getattr(r.summary[lv], f) for _, r in runs]) for f in SUMMARY_FIELDS}
                  for lv in LEVELS}
        entries.append(Entry(
            router=name, router_version=version, zero_shot=runs[0][1].router.zero_shot,
            reference_row=runs[0][1].router.reference_row, seeds=seeds, scores=scores,
            learn_seconds_total=stat([sum(r.timings.learn_seconds) for _, r in runs]),
            latency_p50_ms=stat([r.timings.latency_p50_ms for _, r in runs]),
            peak_rss_mb=stat([r.timings.peak_rss_mb for _, r in runs]),
            files=[str(p.relative_to(results_dir)) for p, _ in runs]))
    (dataset, sha), = datasets
    return Leaderboard(cmrbench_version=__version__, dataset=dataset, manifest_sha256=sha, sort_by=sort_by,
                       entries=sorted((e for e in entries if not e.reference_row), key=key),
                       references=sorted((e for e in entries if e.reference_row), key=key))


COLUMNS = [("M-Acc", "model", "final_average_accuracy"), ("F-Acc", "family", "final_average_accuracy"),
           ("D-Acc", "domain", "final_average_accuracy"), ("D-FGT", "domain", "forgetting"),
           ("D-BWT", "domain", "backward_transfer")]


def _pct(stat: Stat, pm: str = " ± ") -> str:
    if stat.mean is None:
        return "–"
    return percent(stat.mean) + (f"{pm}{percent(stat.std)}" if stat.n > 1 else "")


def _kind(e: Entry) -> str:
    return "reference" if e.reference_row else ("zero-shot" if e.zero_shot else "trained")


def _ranked(board: Leaderboard) -> list[tuple[str, Entry]]:
    return [(str(i), e) for i, e in enumerate(board.entries, start=1)] + [("–", e) for e in board.references]


def _row(e: Entry, rank: str) -> str:
    cells = [rank, e.router, _kind(e), *(_pct(e.scores[lv][f]) for _, lv, f in COLUMNS),
             f"{e.learn_seconds_total.mean:.1f}", str(len(e.seeds))]
    return "| " + " | ".join(cells) + " |"


def to_markdown(board: Leaderboard) -> str:
    head = ("| # | router | type | " + " | ".join(c for c, _, _ in COLUMNS) + " | learn s | seeds |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    rows = [_row(e, str(i)) for i, e in enumerate(board.entries, start=1)]
    text = (f"Leaderboard on {board.dataset} (accuracy after the last experience, %; mean ± std over seeds; "
            f"sorted by {board.sort_by})\n\n" + head + "\n" + "\n".join(rows) + "\n")
    if board.references:
        text += ("\nReference rows (not ranked: they read the answer key or only bracket the scale)\n\n" + head + "\n"
                 + "\n".join(_row(e, "–") for e in board.references) + "\n")
    return text


def to_csv(board: Leaderboard) -> str:
    """One row per router (references last, rank '-'): mean and std (percent) of each column, for spreadsheets."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "router", "type", *(f"{c} {part}" for c, _, _ in COLUMNS for part in ("mean", "std")),
                     "learn_seconds", "seeds"])
    for rank, e in _ranked(board):
        values = []
        for _, lv, f in COLUMNS:
            stat = e.scores[lv][f]
            values += ["" if stat.mean is None else f"{100 * stat.mean:.2f}",
                       "" if stat.std is None or stat.n < 2 else f"{100 * stat.std:.2f}"]
        writer.writerow([rank if rank != "–" else "-", e.router, _kind(e), *values,
                         f"{e.learn_seconds_total.mean:.1f}", len(e.seeds)])
    return buffer.getvalue()


def to_latex(board: Leaderboard) -> str:
    """A booktabs table for papers: ranked routers, a rule, then the reference rows; the best ranked value of each
    column in bold (lowest for forgetting)."""
    def escape(text: str) -> str:
        return "".join("\\" + ch if ch in "&%$#_{}" else ch for ch in text)

    best = {}
    for column, lv, f in COLUMNS:
        means = [e.scores[lv][f].mean for e in board.entries if e.scores[lv][f].mean is not None]
        if means:
            best[column] = min(means) if f in ("forgetting", "max_forgetting") else max(means)
    lines = [f"% {board.dataset}: accuracy after the last experience (%), mean $\\pm$ std over seeds",
             "\\begin{tabular}{rll" + "r" * len(COLUMNS) + "r}", "\\toprule",
             "\\# & router & type & " + " & ".join(c for c, _, _ in COLUMNS) + " & seeds \\\\", "\\midrule"]
    for rank, e in _ranked(board):
        if rank == "–" and board.entries and e is board.references[0]:
            lines.append("\\midrule")
        cells = []
        for column, lv, f in COLUMNS:
            stat = e.scores[lv][f]
            text = _pct(stat, " $\\pm$ ")
            bold = rank != "–" and stat.mean is not None and stat.mean == best.get(column)
            cells.append(f"\\textbf{{{text}}}" if bold else text)
        lines.append(f"{rank if rank != '–' else '--'} & {escape(e.router)} & {_kind(e)} & " + " & ".join(cells)
                     + f" & {len(e.seeds)} \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


TABLE_FILES = {"leaderboard.json": lambda b: b.model_dump_json(indent=2) + "\n", "leaderboard.md": to_markdown,
               "leaderboard.csv": to_csv, "leaderboard.tex": to_latex}


def write_tables(board: Leaderboard, out_dir: Path) -> list[Path]:
    """Write the board as ``out_dir/leaderboard.json`` (the data), ``.md``, ``.csv`` and ``.tex`` (its tables),
    each atomically; return their paths."""
    from cmrbench.fileio import atomic_write_text
    paths = []
    for name, render in TABLE_FILES.items():
        atomic_write_text(Path(out_dir) / name, render(board))
        paths.append(Path(out_dir) / name)
    return paths


def leaderboard_json_schema() -> str:
    return json.dumps(Leaderboard.model_json_schema(), indent=2, sort_keys=True) + "\n"
