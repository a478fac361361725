"""The leaderboard as one static, self-contained HTML page (``cmrbench leaderboard RESULTS_DIR --html site/``).

The page needs no server, no CDN and no network: CSS, JavaScript, the data (embedded as JSON) and every
figure (inline SVG drawn here in Python) are in ``index.html``, so it works from ``file://`` and from any
static host. Without JavaScript the table is still readable in the board's order and ``#router-...``
links still open each router's details (CSS ``:target``); JavaScript adds sorting by any column, row
clicks, a metric switch for the heatmaps, a name filter and a toggle for the exact reference rows.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from cmrbench.leaderboard.board import (SUMMARY_FIELDS, Entry, Leaderboard, Stat, build_leaderboard, stat,
                                      write_tables)
from cmrbench.metrics import mean_std, percent
from cmrbench.fileio import atomic_write_text
from cmrbench.results import LEVELS, MATRIX_METRICS as METRICS, Results, load_results

LEVEL_SHORT = {"model": "M", "family": "F", "domain": "D"}
LEVEL_COLOURS = {"model": "#1f77b4", "family": "#ff7f0e", "domain": "#2ca02c"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
# matplotlib's viridis at 0, 1/8, ..., 1: the same colour scale as `cmrbench plot`.
VIRIDIS = ("#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725")
FIELD_NAMES = {"final_average_accuracy": "final avg acc", "stream_average_accuracy": "stream avg acc",
               "forgetting": "forgetting", "max_forgetting": "max forgetting",
               "backward_transfer": "BWT", "forward_transfer": "FWT"}

Matrix = list[list[float | None]]


# ----------------------------------------------------------------------------------- matrix helpers

def mean_matrix(matrices: list[Matrix]) -> tuple[Matrix, Matrix]:
    """Element-wise mean and sample std (ddof=1; 0 for one seed) of same-shaped matrices; None stays None."""
    if not matrices:
        return [], []
    rows = len(matrices[0])
    mean: Matrix = []
    std: Matrix = []
    for t in range(rows):
        m_row: list[float | None] = []
        s_row: list[float | None] = []
        for j in range(len(matrices[0][t])):
            vals = [m[t][j] for m in matrices if t < len(m) and j < len(m[t]) and m[t][j] is not None]
            if vals:
                mu, sd = mean_std(vals)
                m_row.append(mu)
                s_row.append(sd)
            else:
                m_row.append(None)
                s_row.append(None)
        mean.append(m_row)
        std.append(s_row)
    return mean, std


def running_average(matrix: Matrix) -> list[float | None]:
    """Accuracy averaged over the experiences seen so far, after each experience: mean_{j<=t} A[t][j]."""
    out: list[float | None] = []
    for t, row in enumerate(matrix):
        vals = [v for v in row[: t + 1] if v is not None]
        out.append(sum(vals) / len(vals) if vals else None)
    return out


def experience_forgetting(matrix: Matrix) -> list[float | None]:
    """Forgetting of each experience j < T (Avalanche, positive = worse): A[j][j] - A[T][j]."""
    T = len(matrix)
    out: list[float | None] = []
    for j in range(T - 1):
        a, b = matrix[j][j], matrix[T - 1][j]
        out.append(None if a is None or b is None else a - b)
    return out


# ------------------------------------------------------------------------------------------ the data

@dataclass
class RouterView:
    """Everything the page shows about one leaderboard entry (seeds merged)."""

    slug: str
    entry: Entry
    runs: list[Results]
    matrices: dict[str, dict[str, Matrix]] = field(default_factory=dict)  # level -> metric -> mean A
    matrices_std: dict[str, dict[str, Matrix]] = field(default_factory=dict)
    forward_transfer: dict[str, Stat] = field(default_factory=dict)
    slices: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)   # see cmrbench.analysis.slices
    intervals: dict[str, dict] = field(default_factory=dict)  # see cmrbench.analysis.final_average_intervals

    @property
    def kind(self) -> str:
        return "reference" if self.entry.reference_row else ("zero-shot" if self.entry.zero_shot else "trained")


def _slug(name: str, version: str, taken: set[str]) -> str:
    base = "router-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{name}-v{version}").strip("-").lower() or "x")
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


def _seed_correctness(paths: list[Path], bench) -> tuple[pl.DataFrame, dict[str, dict[str, dict[str, float]]]]:
    """Top-1 correctness per prompt averaged over a router's seeds (:func:`cmrbench.analysis.per_prompt_correct`)
    and its slices (:func:`cmrbench.analysis.slices`, accuracies averaged over seeds); each file verified once."""
    from cmrbench.analysis import per_prompt_correct, slices
    correct = [per_prompt_correct(p, bench) for p in paths]
    found = [slices(p, bench, c) for p, c in zip(paths, correct)]
    merged: dict[str, dict[str, dict[str, float]]] = {}
    for name, groups in found[0].items():
        merged[name] = {value: {"n": g["n"], **{lv: sum(f[name][value][lv] for f in found) / len(found)
                                                for lv in LEVELS}}
                        for value, g in groups.items()}
    mean = pl.concat(correct).group_by("prompt_id", "test_experience").agg(*[pl.col(lv).mean() for lv in LEVELS])
    return mean.sort("prompt_id"), merged


def collect(results_dir: Path, board: Leaderboard, data: Path | None = None
            ) -> tuple[list[RouterView], dict[str, dict], list[str]]:
    """Router views in board order, the exact reference rows, and notes (e.g. disagreeing reference rows);
    with the build (``data``), each view's slices and confidence intervals too, with a paired test against
    the board's first row."""
    results_dir = Path(results_dir)
    views: list[RouterView] = []
    taken: set[str] = set()
    references: dict[str, dict] = {}
    notes: list[str] = []
    correct: dict[str, pl.DataFrame] = {}
    bench = None
    for entry in board.entries + board.references:
        runs = [load_results(results_dir / rel) for rel in entry.files]
        view = RouterView(slug=_slug(entry.router, entry.router_version, taken), entry=entry, runs=runs)
        for level in LEVELS:
            view.matrices[level], view.matrices_std[level] = {}, {}
            for metric in METRICS:
                mats = [r.matrices[level][metric] for r in runs if metric in r.matrices.get(level, {})]
                view.matrices[level][metric], view.matrices_std[level][metric] = mean_matrix(mats)
            view.forward_transfer[level] = stat([r.summary[level].forward_transfer for r in runs])
        if data is not None and not entry.reference_row:
            if bench is None:
                from cmrbench.analysis import benchmark_for
                bench = benchmark_for(runs[0], Path(data))
            correct[view.slug], view.slices = _seed_correctness([results_dir / rel for rel in entry.files], bench)
        views.append(view)
        for r in runs:
            for name, levels in r.reference_rows.items():
                dumped = {lv: s.model_dump() for lv, s in levels.items()}
                if name not in references:
                    references[name] = dumped
                elif references[name] != dumped and f"reference row '{name}'" not in " ".join(notes):
                    notes.append(f"reference row '{name}' differs between results files; the first one is shown")
    if correct and board.entries:
        from cmrbench.analysis import final_average_intervals
        best = views[0].slug
        for view in views:
            if view.slug in correct:
                view.intervals = final_average_intervals(
                    correct[view.slug], None if view.slug == best else correct[best])
    return views, references, notes


# ---------------------------------------------------------------------------------------- formatting

def _pct(v: float | None, digits: int = 1) -> str:
    return percent(v, digits)


def _num(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:,.1f}"


def _stat_cell(stat: Stat, percent: bool = True) -> tuple[str, str]:
    """(data-value, cell html) for a mean ± std statistic."""
    if stat.mean is None:
        return "", "–"
    fmt = _pct if percent else _num
    body = html.escape(fmt(stat.mean))
    if stat.n > 1 and stat.std is not None:
        body += f' <span class="std">± {html.escape(fmt(stat.std))}</span>'
    return repr(float(stat.mean)), body


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _colour(v: float) -> str:
    v = min(1.0, max(0.0, v))
    pos = v * (len(VIRIDIS) - 1)
    i = min(int(pos), len(VIRIDIS) - 2)
    f = pos - i
    a = [int(VIRIDIS[i][k:k + 2], 16) for k in (1, 3, 5)]
    b = [int(VIRIDIS[i + 1][k:k + 2], 16) for k in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(a, b))


# ------------------------------------------------------------------------------------- SVG figures

def heatmap_svg(matrix: Matrix, std: Matrix | None, title: str, metric: str) -> str:
    """Accuracy matrix A[t][j] (rows: after experience t; columns: test experience j) as an SVG heatmap."""
    T = len(matrix)
    cols = max((len(r) for r in matrix), default=0)
    cell = max(22, min(52, 320 // max(T, 1)))
    left, top, bottom = 64, 54, 40
    width, height = left + cell * cols + 12, top + cell * T + bottom
    out = [f'<svg class="heatmap" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
           f'<title>{_e(title)}</title>',
           f'<text x="{left}" y="14" class="svg-title">{_e(title)}</text>',
           f'<text x="{left + cell * cols / 2}" y="{top - 20}" class="axis-label" text-anchor="middle">test experience</text>']
    for j in range(cols):
        out.append(f'<text x="{left + cell * j + cell / 2}" y="{top - 4}" class="tick" '
                   f'text-anchor="middle">E{j + 1}</text>')
    for t in range(T):
        y = top + cell * t
        out.append(f'<text x="{left - 6}" y="{y + cell / 2 + 4}" class="tick" text-anchor="end">after E{t + 1}</text>')
        for j in range(cols):
            x = left + cell * j
            v = matrix[t][j] if j < len(matrix[t]) else None
            if v is None:
                out.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" class="empty"/>')
                continue
            sd = std[t][j] if std and std[t][j] else None
            tip = f"after E{t + 1}, test E{j + 1}: {metric} {_pct(v)}%" + (f" ± {_pct(sd)}" if sd else "")
            out.append(f'<g class="cell" data-t="{t + 1}" data-j="{j + 1}"><title>{_e(tip)}</title>'
                       f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{_colour(v)}"/>')
            if cell >= 30:
                ink = "#fff" if v < 0.62 else "#111"
                out.append(f'<text x="{x + cell / 2}" y="{y + cell / 2 + 4}" text-anchor="middle" '
                           f'class="val" fill="{ink}">{_e(_pct(v))}</text>')
            out.append("</g>")
    # colour bar, 0 to 100 %
    bar_y, steps, bar_w = top + cell * T + 12, 20, cell * cols
    for k in range(steps):
        out.append(f'<rect x="{left + bar_w * k / steps:.1f}" y="{bar_y}" width="{bar_w / steps + 0.6:.1f}" '
                   f'height="8" fill="{_colour((k + 0.5) / steps)}"/>')
    out.append(f'<text x="{left}" y="{bar_y + 22}" class="tick">0%</text>'
               f'<text x="{left + bar_w}" y="{bar_y + 22}" class="tick" text-anchor="end">100%</text>')
    out.append("</svg>")
    return "".join(out)


def line_chart_svg(series: list[tuple[str, str, list[float | None]]], title: str, n_points: int,
                   y_label: str = "accuracy (%)") -> str:
    """Lines over experiences 1..n_points; series = (label, colour, values; None = no point)."""
    width, height = 380, 250
    left, right, top, bottom = 46, 12, 28, 58
    pw, ph = width - left - right, height - top - bottom
    xs = [left + (pw * i / (n_points - 1) if n_points > 1 else pw / 2) for i in range(n_points)]

    def y(v: float) -> float:
        return top + ph * (1 - min(1.0, max(0.0, v)))

    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
           f'<title>{_e(title)}</title><text x="{left}" y="16" class="svg-title">{_e(title)}</text>']
    for k in range(0, 101, 25):
        yy = y(k / 100)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{yy:.1f}" y2="{yy:.1f}" class="grid"/>'
                   f'<text x="{left - 5}" y="{yy + 4:.1f}" class="tick" text-anchor="end">{k}</text>')
    for i, x in enumerate(xs):
        out.append(f'<text x="{x:.1f}" y="{top + ph + 15}" class="tick" text-anchor="middle">E{i + 1}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{top + ph + 29}" class="axis-label" text-anchor="middle">'
               f'after experience</text>'
               f'<text transform="translate(11 {top + ph / 2}) rotate(-90)" class="axis-label" '
               f'text-anchor="middle">{_e(y_label)}</text>')
    legend_x = left
    for label, colour, values in series:
        pts = [(xs[i], y(v), v, i) for i, v in enumerate(values[:n_points]) if v is not None]
        if len(pts) > 1:
            d = " ".join(f"{'M' if k == 0 else 'L'}{px:.1f},{py:.1f}" for k, (px, py, _, _) in enumerate(pts))
            out.append(f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for px, py, v, i in pts:
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{colour}">'
                       f'<title>{_e(label)} after E{i + 1}: {_pct(v)}%</title></circle>')
        legend_y = height - 10
        out.append(f'<rect x="{legend_x}" y="{legend_y - 8}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{legend_x + 14}" y="{legend_y + 1}" class="tick">{_e(label)}</text>')
        legend_x += 22 + 6.5 * len(label)
    out.append("</svg>")
    return "".join(out)


KIND_COLOURS = {"reference": "#8c96a0", "zero-shot": "#2ca02c", "trained": "#1f77b4"}


def bar_chart_svg(bars: list[tuple[str, str, float, float | None, float | None]], title: str) -> str:
    """Horizontal bars, best first, one per router: (label, kind, value, ci_low, ci_high); whiskers mark the
    interval when known. The axis starts at 0 and ends at the largest value (or interval end), rounded up to
    10 points, so that close routers are told apart."""
    bars = sorted(bars, key=lambda b: -b[2])
    row, left, right, top = 18, 150, 60, 30
    width, height = 560, top + row * len(bars) + 34
    top_value = max([b[2] for b in bars] + [b[4] for b in bars if b[4] is not None] + [0.1])
    scale = math.ceil(top_value * 10) / 10

    def x(v: float) -> float:
        return left + (width - left - right) * min(v, scale) / scale

    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{_e(title)}"><text x="{left}" y="16" class="svg-title">{_e(title)}</text>']
    step = 0.1 if scale > 0.4 else 0.05
    for k in range(int(round(scale / step)) + 1):
        v = k * step
        out.append(f'<line class="grid" x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{top - 4}" y2="{height - 30}"/>'
                   f'<text x="{x(v):.1f}" y="{height - 16}" class="tick" text-anchor="middle">{100 * v:.0f}</text>')
    for i, (label, kind, value, lo, hi) in enumerate(bars):
        y = top + i * row
        tip = f"{label} ({kind}): {_pct(value)}%" + (f", 95% CI {_pct(lo)}–{_pct(hi)}" if lo is not None else "")
        out.append(f'<g class="bar"><title>{_e(tip)}</title>'
                   f'<text x="{left - 6}" y="{y + 12}" class="tick" text-anchor="end">{_e(label)}</text>'
                   f'<rect x="{left}" y="{y + 3}" width="{max(0.0, x(value) - left):.1f}" height="{row - 6}" '
                   f'fill="{KIND_COLOURS.get(kind, "#999")}"/>')
        if lo is not None and hi is not None:
            out.append(f'<line x1="{x(lo):.1f}" x2="{x(hi):.1f}" y1="{y + row / 2:.1f}" y2="{y + row / 2:.1f}" '
                       f'stroke="#1b1f24" stroke-width="1.2"/>')
        end = max(x(value), x(hi) if hi is not None else 0)
        out.append(f'<text x="{end + 4:.1f}" y="{y + 12}" class="tick">{_pct(value)}</text></g>')
    legend_x = left
    for kind, colour in KIND_COLOURS.items():
        if not any(b[1] == kind for b in bars):
            continue
        out.append(f'<rect x="{legend_x}" y="{height - 10}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{legend_x + 14}" y="{height - 1}" class="tick">{kind}</text>')
        legend_x += 90
    out.append("</svg>")
    return "".join(out)


def overview_svgs(views: list[RouterView]) -> str:
    """The cross-router figures: final average accuracy of every ranked router at the model and domain level."""
    figures = []
    for level in ("domain", "model"):
        bars = []
        for v in views:
            if v.entry.reference_row or v.entry.scores[level]["final_average_accuracy"].mean is None:
                continue
            ci = v.intervals.get(level, {})
            bars.append((v.entry.router, v.kind, v.entry.scores[level]["final_average_accuracy"].mean,
                         ci.get("ci_low"), ci.get("ci_high")))
        if bars:
            figures.append(f"<figure>{bar_chart_svg(bars, f'{level}-level accuracy after the last experience (%)')}"
                           "</figure>")
    return f'<div class="overview">{"".join(figures)}</div>' if figures else ""


# -------------------------------------------------------------------------------------------- page

TABLE_COLUMNS = [
    # key, header, type, better, tooltip
    ("rank", "#", "num", "low", "rank by the board's sort key"),
    ("router", "Router", "str", "", "router name and version"),
    ("kind", "Type", "str", "", "reference (harness baseline), zero-shot (learns nothing from training prompts) "
                                "or trained"),
    ("m_acc", "M-Acc", "num", "high", "model-level accuracy (Acc@1) after the last experience, averaged over "
                                      "all experiences (%)"),
    ("f_acc", "F-Acc", "num", "high", "family-level final average accuracy (%)"),
    ("d_acc", "D-Acc", "num", "high", "domain-level final average accuracy (%)"),
    ("d_ci", "D 95% CI", "num", "high", "95% bootstrap interval of D-Acc: test prompts resampled within their "
                                        "experience, correctness averaged over seeds (sorts by the lower end)"),
    ("d_vs", "vs #1", "num", "high", "D-Acc minus the first row's, in points, with the paired bootstrap p-value "
                                     "(same prompts resampled for both); ≈: not distinguishable from #1 at p < 0.05"),
    ("d_fgt", "D-FGT", "num", "low", "domain-level forgetting, mean_j A[j,j] - A[T,j] (%, lower is better)"),
    ("d_bwt", "D-BWT", "num", "high", "domain-level backward transfer = -forgetting (%)"),
    ("learn_s", "Learn s", "num", "low", "seconds in learn(), all experiences"),
    ("latency", "p50 ms", "num", "low", "routing latency per prompt, median (ms)"),
    ("seeds", "Seeds", "num", "high", "number of seeds merged (mean ± std)"),
]


def _kind_badge(kind: str) -> str:
    tips = {"reference": "a harness reference router run like any other",
            "zero-shot": "learns nothing from CMRBench training prompts",
            "trained": "learns from the training prompts of each experience",
            "expected": "exact expectation computed by the harness from the answer key (no run)"}
    return f'<span class="badge {kind}" title="{_e(tips[kind])}">{_e(kind)}</span>'


def _interval_cells(view: RouterView) -> list[tuple[str, str]]:
    """The D-Acc confidence interval and the test against the first row ("–" without the build)."""
    ci = view.intervals.get("domain")
    if not ci:
        return [("", "–"), ("", "–")]
    cells = [(repr(ci["ci_low"]), f'{_pct(ci["ci_low"])}–{_pct(ci["ci_high"])}')]
    if "p_value" not in ci:
        return cells + [("0", "#1")]
    p = ci["p_value"]
    tied = ' <span class="tied" title="not distinguishable from #1 at p &lt; 0.05">≈</span>' if p >= 0.05 else ""
    p_text = "p < 0.001" if p < 0.001 else f"p {p:.3f}"
    return cells + [(repr(ci["diff"]), f'{100 * ci["diff"]:+.1f} <span class="std">({p_text})</span>{tied}')]


def _entry_row(rank: int, view: RouterView, experiences: int) -> str:
    """One table row; ``rank`` 0 for a reference row (shown last, never ranked)."""
    e = view.entry
    s = e.scores
    cells = [(str(rank or 10 ** 6), str(rank) if rank else "–"),
             (e.router, f'<a href="#{view.slug}">{_e(e.router)}</a> <span class="ver">v{_e(e.router_version)}</span>'),
             (view.kind, _kind_badge(view.kind)),
             _stat_cell(s["model"]["final_average_accuracy"]), _stat_cell(s["family"]["final_average_accuracy"]),
             _stat_cell(s["domain"]["final_average_accuracy"]), *_interval_cells(view),
             _stat_cell(s["domain"]["forgetting"]),
             _stat_cell(s["domain"]["backward_transfer"]), _stat_cell(e.learn_seconds_total, percent=False),
             _stat_cell(e.latency_p50_ms, percent=False), (str(len(e.seeds)), str(len(e.seeds)))]
    tds = "".join(f'<td data-value="{_e(v)}"{" class=num" if i not in (1, 2) else ""}>{body}</td>'
                  for i, (v, body) in enumerate(cells))
    last = (view.matrices["domain"]["acc@1"] or [[]])[-1]
    tds += "".join(_per_experience_cell(v) for v in last) + _per_experience_cell(None) * (experiences - len(last))
    return (f'<tr class="entry {view.kind}" data-target="{view.slug}" data-router="{_e(e.router)}" '
            f'tabindex="0">{tds}</tr>')


def _per_experience_cell(value: float | None) -> str:
    """D-Acc on one experience's test set after the last experience (hidden until asked for)."""
    return (f'<td class="num per-exp" data-value="{"" if value is None else repr(float(value))}">'
            f'{_e(_pct(value))}</td>')


def _reference_row(name: str, levels: dict, experiences: int) -> str:
    def cell(level: str, fld: str) -> tuple[str, str]:
        v = levels.get(level, {}).get(fld)
        return ("" if v is None else repr(float(v))), _e(_pct(v))
    cells = [("", "–"), (name, f'{_e(name)} <span class="ver">exact</span>'), ("expected", _kind_badge("expected")),
             cell("model", "final_average_accuracy"), cell("family", "final_average_accuracy"),
             cell("domain", "final_average_accuracy"), ("", "–"), ("", "–"), cell("domain", "forgetting"),
             cell("domain", "backward_transfer"), ("", "–"), ("", "–"), ("", "–")]
    tds = "".join(f'<td data-value="{_e(v)}"{" class=num" if i not in (1, 2) else ""}>{body}</td>'
                  for i, (v, body) in enumerate(cells)) + _per_experience_cell(None) * experiences
    return f'<tr class="expected" data-router="{_e(name)}">{tds}</tr>'


def _summary_table(view: RouterView) -> str:
    fields = list(SUMMARY_FIELDS) + ["forward_transfer"]
    head = "".join(f"<th>{_e(FIELD_NAMES[f])}</th>" for f in fields)
    rows = []
    for level in LEVELS:
        stats = [view.entry.scores[level][f] for f in SUMMARY_FIELDS] + [view.forward_transfer[level]]
        rows.append(f"<tr><th>{_e(level)}</th>" + "".join(f'<td class="num">{_stat_cell(st)[1]}</td>'
                                                          for st in stats) + "</tr>")
    table = (f'<table class="summary"><thead><tr><th>level</th>{head}</tr></thead>'
             f'<tbody>{"".join(rows)}</tbody></table>')
    if not view.intervals:
        return table
    cis = " · ".join(f'{LEVEL_SHORT[lv]} {_pct(ci["ci_low"])}–{_pct(ci["ci_high"])}'
                     + (f' ({100 * ci["diff"]:+.1f} vs #1, p {ci["p_value"]:.3f})' if "p_value" in ci else "")
                     for lv, ci in view.intervals.items())
    return table + f'<p class="hint">95% bootstrap intervals of the final average accuracy: {cis}</p>'



def _per_experience_table(view: RouterView) -> str:
    T = max(len(r.timings.learn_seconds) for r in view.runs)

    def col(get) -> list[Stat]:
        return [stat([(get(r)[t] if t < len(get(r)) else None) for r in view.runs]) for t in range(T)]

    learn = col(lambda r: r.timings.learn_seconds)
    route = col(lambda r: r.timings.route_seconds)
    hall = col(lambda r: r.hallucination_rate)
    leak = col(lambda r: r.future_leak_rate)
    rows = "".join(f"<tr><th>E{t + 1}</th><td class=num>{_stat_cell(learn[t], False)[1]}</td>"
                   f"<td class=num>{_stat_cell(route[t], False)[1]}</td><td class=num>{_stat_cell(hall[t])[1]}</td>"
                   f"<td class=num>{_stat_cell(leak[t])[1]}</td></tr>" for t in range(T))
    return ('<table class="summary"><thead><tr><th>experience</th><th>learn s</th><th>route s</th>'
            f'<th>hallucination %</th><th>future leak %</th></tr></thead><tbody>{rows}</tbody></table>')


SLICE_TITLES = {"source": "source dataset", "category": "domain category", "gold_model": "gold model",
                "domain": "domain (the 5 weakest and 5 strongest with 10 prompts or more)"}


def _slices_html(view: RouterView) -> str:
    """Where the router fails: top-1 accuracy per slice after the last experience (mean over seeds)."""
    if not view.slices:
        return ""
    tables = []
    for name, title in SLICE_TITLES.items():
        items = sorted(view.slices.get(name, {}).items(), key=lambda kv: kv[1]["domain"])
        if name == "domain":
            kept = [kv for kv in items if kv[1]["n"] >= 10]
            items = kept[:5] + kept[-5:] if len(kept) > 10 else kept
        rows = "".join(f'<tr><td>{_e(value)}</td><td class="num">{g["n"]:,}</td>'
                       + "".join(f'<td class="num">{_pct(g[lv])}</td>' for lv in LEVELS) + "</tr>"
                       for value, g in items)
        tables.append(f'<table class="slices" data-slice="{name}"><caption>by {_e(title)}</caption><thead><tr>'
                      f'<th>{_e(name.replace("_", " "))}</th><th>prompts</th><th>M-Acc</th><th>F-Acc</th>'
                      f'<th>D-Acc</th></tr></thead><tbody>{rows}</tbody></table>')
    return ("<h3>Where it fails (top-1 after the last experience, %, per prompt)</h3>"
            f'<div class="slice-tables">{"".join(tables)}</div>')


def _detail(view: RouterView) -> str:
    e, meta = view.entry, view.runs[0].router
    T = len(view.matrices["domain"]["acc@1"])
    ref = ""
    if meta.reference and re.match(r"https?://", meta.reference):
        ref = f' · <a href="{_e(meta.reference)}" rel="noopener">reference</a>'
    params = ", ".join(f"{k}={v}" for k, v in sorted(meta.parameters.items())) or "none"
    facts = [f"version {_e(e.router_version)}", f"seeds {_e(', '.join(map(str, e.seeds)))}",
             f"top-k {view.runs[0].top_k}", f"parameters: {_e(params)}",
             f"cmrbench {_e(', '.join(sorted({r.cmrbench_version for r in view.runs})))}",
             f"peak RSS {_e(_num(e.peak_rss_mb.mean))} MB"]
    sizes = view.runs[0].router.statistics
    if "parameters" in sizes:
        facts.append(f"{sizes['parameters']:,} parameters"
                     + (f" ({sizes['trainable_parameters']:,} trained)" if "trainable_parameters" in sizes else ""))
    dates = sorted({r.run.finished_at[:10] for r in view.runs if r.run is not None})
    if dates:
        facts.append("run " + _e(", ".join(dates)))
    if meta.training_data:
        facts.append("extra training data: " + _e(", ".join(meta.training_data)))
    options = "".join(f'<option value="{m}"{" selected" if m == "acc@1" else ""}>{m}</option>' for m in METRICS)
    groups = []
    for metric in METRICS:
        maps = "".join(
            f'<figure>{heatmap_svg(view.matrices[lv][metric], view.matrices_std[lv][metric], f"{lv} level, {metric}", metric)}</figure>'
            for lv in LEVELS)
        groups.append(f'<div class="heatmaps" data-metric="{metric}"{"" if metric == "acc@1" else " hidden"}>{maps}</div>')
    overall = line_chart_svg(
        [(LEVEL_SHORT[lv] + " (" + lv + ")", LEVEL_COLOURS[lv], running_average(view.matrices[lv]["acc@1"]))
         for lv in LEVELS], "accuracy on all experiences seen so far", T)
    per_level = []
    for lv in LEVELS:
        A = view.matrices[lv]["acc@1"]
        series = [(f"E{j + 1}", PALETTE[j % len(PALETTE)], [A[t][j] if t >= j else None for t in range(T)])
                  for j in range(T)]
        per_level.append(line_chart_svg(series, f"{lv} level: accuracy on each experience", T))
    files = "".join(f"<li><code>{_e(f)}</code></li>" for f in e.files)
    return f"""
<section class="detail" id="{view.slug}" aria-label="details of {_e(e.router)}">
  <div class="detail-head"><h2>{_e(e.router)} {_kind_badge(view.kind)}</h2><a class="close" href="#top">close ×</a></div>
  <p class="desc">{_e(meta.description) or "<i>no description</i>"}{ref}</p>
  <p class="facts">{" · ".join(facts)}</p>
  <h3>Summary (mean ± std over seeds, %)</h3>
  {_summary_table(view)}
  <h3>Accuracy matrices <label class="metric-switch">metric <select class="metric">{options}</select></label></h3>
  <p class="hint">Row t, column j: accuracy on experience j's test set after learning experience t.</p>
  {"".join(groups)}
  <h3>Accuracy per experience (Acc@1)</h3>
  <div class="curves"><figure>{overall}</figure>{"".join(f"<figure>{c}</figure>" for c in per_level)}</div>
  <h3>Per experience</h3>
  {_per_experience_table(view)}
  {_slices_html(view)}
  <details class="files"><summary>results files ({len(e.files)})</summary><ul>{files}</ul></details>
</section>"""


CSS = """
:root{--fg:#1b1f24;--muted:#5b6570;--line:#d8dee4;--bg:#fff;--head:#f4f6f8;--hi:#fff7d6;--link:#0b5cad}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 color:var(--fg);background:var(--bg)}
header,main,footer{max-width:1240px;margin:0 auto;padding:0 20px}
header{padding-top:18px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:18px;margin:0}
h3{font-size:15px;margin:22px 0 8px}
a{color:var(--link)}
.meta{color:var(--muted);margin:0 0 12px}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.controls{display:flex;gap:18px;align-items:center;margin:10px 0;flex-wrap:wrap}
.controls input[type=search]{padding:4px 8px;border:1px solid var(--line);border-radius:4px;min-width:220px}
table{border-collapse:collapse}
#leaderboard{width:100%}
#leaderboard .per-exp{display:none}
#leaderboard.show-per-exp .per-exp{display:table-cell}
.table-wrap{overflow-x:auto}
#leaderboard th,#leaderboard td{padding:6px 9px;border-bottom:1px solid var(--line);white-space:nowrap}
#leaderboard thead th{background:var(--head);text-align:left;cursor:pointer;user-select:none;position:sticky;top:0}
#leaderboard thead th:hover{background:#e8ecf0}
#leaderboard th[aria-sort=ascending]::after{content:" \\25B2";font-size:10px}
#leaderboard th[aria-sort=descending]::after{content:" \\25BC";font-size:10px}
#leaderboard tbody tr.entry{cursor:pointer}
#leaderboard tbody tr.entry:hover{background:#f6f8fa}
#leaderboard tbody tr.selected{background:var(--hi)}
#leaderboard tr.expected{color:var(--muted);font-style:italic}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.std{color:var(--muted);font-size:12px}
.tied{color:#17622f;font-weight:600}
.ver{color:var(--muted);font-size:12px}
.slice-tables{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
table.slices td,table.slices th{padding:3px 8px;border-bottom:1px solid var(--line)}
table.slices caption{text-align:left;font-weight:600;padding:2px 0}
.badge{display:inline-block;padding:1px 7px;border-radius:10px;font-size:11px;font-style:normal;font-weight:600;
 vertical-align:middle;border:1px solid transparent}
.badge.reference{background:#eceff3;color:#3d4752;border-color:#c9d1da}
.badge.zero-shot{background:#e3f4e8;color:#17622f;border-color:#9fd3b0}
.badge.trained{background:#e4eefc;color:#0b4a8f;border-color:#a8c5ee}
.badge.expected{background:#fff;color:#6a737d;border-color:#c9d1da;border-style:dashed}
.detail{display:none;border:1px solid var(--line);border-radius:8px;padding:14px 18px;margin:20px 0;
 box-shadow:0 1px 4px rgba(0,0,0,.06)}
.detail:target,.detail.open{display:block}
.detail-head{display:flex;justify-content:space-between;align-items:center}
.close{text-decoration:none;color:var(--muted)}
.desc,.facts,.hint{margin:6px 0;color:var(--muted)}
table.summary th,table.summary td{padding:4px 10px;border-bottom:1px solid var(--line);text-align:left}
table.summary td{text-align:right}
.heatmaps,.curves,.overview{display:flex;flex-wrap:wrap;gap:14px}
.heatmaps[hidden]{display:none}
figure{margin:0}
svg text{font-family:inherit}
.svg-title{font-size:13px;font-weight:600;fill:#1b1f24}
.axis-label{font-size:11px;fill:#5b6570}
.tick{font-size:11px;fill:#3d4752}
.val{font-size:11px;font-weight:600}
rect.empty{fill:#f3f4f6;stroke:#fff}
.cell rect{stroke:#fff;stroke-width:1}
.grid{stroke:#e6e9ed;stroke-width:1}
.notes{color:#8a5a00}
footer{color:var(--muted);font-size:12px;padding-bottom:30px}
details.files{margin-top:12px;color:var(--muted)}
"""

JS = """
(function () {
  'use strict';
  var table = document.getElementById('leaderboard');
  var tbody = table.tBodies[0];
  var heads = table.tHead.rows[0].cells;
  function value(row, idx, type) {
    var v = row.cells[idx].getAttribute('data-value');
    if (type === 'num') { return (v === null || v === '') ? null : parseFloat(v); }
    return (v || row.cells[idx].textContent).toLowerCase();
  }
  function sortBy(th, dir) {
    var idx = th.cellIndex, type = th.getAttribute('data-type');
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.sort(function (a, b) {
      var x = value(a, idx, type), y = value(b, idx, type);
      if (x === null && y === null) { return 0; }
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      var c = x < y ? -1 : (x > y ? 1 : 0);
      return dir === 'ascending' ? c : -c;
    });
    rows.forEach(function (r) { tbody.appendChild(r); });
    for (var i = 0; i < heads.length; i++) { heads[i].removeAttribute('aria-sort'); }
    th.setAttribute('aria-sort', dir);
  }
  function onHead(th) {
    var current = th.getAttribute('aria-sort');
    var first = (th.getAttribute('data-better') === 'low' || th.getAttribute('data-type') === 'str')
      ? 'ascending' : 'descending';
    sortBy(th, current ? (current === 'ascending' ? 'descending' : 'ascending') : first);
  }
  Array.prototype.forEach.call(heads, function (th) {
    if (!th.getAttribute('data-type')) { return; }
    th.tabIndex = 0;
    th.addEventListener('click', function () { onHead(th); });
    th.addEventListener('keydown', function (ev) { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); onHead(th); } });
  });
  function open(target) { if (target) { location.hash = target; } }
  tbody.addEventListener('click', function (ev) {
    var tr = ev.target.closest('tr[data-target]');
    if (tr && !ev.target.closest('a')) { open(tr.getAttribute('data-target')); }
  });
  tbody.addEventListener('keydown', function (ev) {
    var tr = ev.target.closest('tr[data-target]');
    if (tr && ev.key === 'Enter') { open(tr.getAttribute('data-target')); }
  });
  function syncHash() {
    var id = decodeURIComponent(location.hash.slice(1));
    document.querySelectorAll('.detail').forEach(function (s) { s.classList.toggle('open', s.id === id); });
    Array.prototype.forEach.call(tbody.rows, function (r) {
      r.classList.toggle('selected', r.getAttribute('data-target') === id);
    });
  }
  window.addEventListener('hashchange', syncHash);
  syncHash();
  document.querySelectorAll('select.metric').forEach(function (sel) {
    sel.addEventListener('change', function () {
      sel.closest('.detail').querySelectorAll('.heatmaps').forEach(function (g) {
        g.hidden = g.getAttribute('data-metric') !== sel.value;
      });
    });
  });
  var showExpected = document.getElementById('show-expected');
  var filter = document.getElementById('filter');
  var kindFilter = document.getElementById('kind-filter');
  function applyFilters() {
    var q = filter.value.trim().toLowerCase(), kind = kindFilter.value;
    Array.prototype.forEach.call(tbody.rows, function (r) {
      var hide = (!showExpected.checked && r.classList.contains('expected')) ||
        (q && r.getAttribute('data-router').toLowerCase().indexOf(q) < 0) ||
        (kind && !r.classList.contains(kind));
      r.hidden = !!hide;
    });
  }
  showExpected.addEventListener('change', applyFilters);
  filter.addEventListener('input', applyFilters);
  kindFilter.addEventListener('change', applyFilters);
  var perExp = document.getElementById('show-per-exp');
  perExp.addEventListener('change', function () { table.classList.toggle('show-per-exp', perExp.checked); });
  window.CMRBENCH_READY = true;
})();
"""


def _json_for_script(data: object) -> str:
    """JSON that cannot close the surrounding <script> element."""
    return (json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def page_data(board: Leaderboard, views: list[RouterView], references: dict) -> dict:
    """What is embedded in the page as JSON (id ``cmrbench-data``): the board, matrices and reference rows."""
    return {
        "leaderboard": board.model_dump(mode="json"),
        "routers": [{"slug": v.slug, "router": v.entry.router, "router_version": v.entry.router_version,
                     "kind": v.kind, "matrices": v.matrices, "matrices_std": v.matrices_std, "intervals": v.intervals,
                     "meta": v.runs[0].router.model_dump(mode="json")} for v in views],
        "reference_rows": references,
    }


def render_html(board: Leaderboard, views: list[RouterView], references: dict, notes: list[str] | None = None) -> str:
    level, _, fld = board.sort_by.partition(".")
    sort_key = {("model", "final_average_accuracy"): "m_acc", ("family", "final_average_accuracy"): "f_acc",
                ("domain", "final_average_accuracy"): "d_acc", ("domain", "forgetting"): "d_fgt",
                ("domain", "backward_transfer"): "d_bwt"}.get((level, fld))
    heads = []
    for key, label, typ, better, tip in TABLE_COLUMNS:
        sort_attr = ""
        if key == sort_key:
            sort_attr = ' aria-sort="ascending"' if better == "low" else ' aria-sort="descending"'
        heads.append(f'<th data-key="{key}" data-type="{typ}" data-better="{better}" title="{_e(tip)}"'
                     f'{sort_attr}>{_e(label)}</th>')
    T = max((len(v.matrices["domain"]["acc@1"]) for v in views), default=0)
    heads += [f'<th class="per-exp" data-key="d_e{j}" data-type="num" data-better="high" title="domain-level '
              f'Acc@1 on experience {j}\'s test set after the last experience (%)">D E{j}</th>' for j in range(1, T + 1)]
    ranked = [v for v in views if not v.entry.reference_row]
    rows = [_entry_row(i, v, T) for i, v in enumerate(ranked, start=1)]
    rows += [_entry_row(0, v, T) for v in views if v.entry.reference_row]   # references: shown, never ranked
    rows += [_reference_row(name, refs, T) for name, refs in sorted(references.items())]
    details = "".join(_detail(v) for v in views)
    n_files = sum(len(v.entry.files) for v in views)
    notes_html = "".join(f'<p class="notes">{_e(n)}</p>' for n in notes or [])
    title = f"CMRBench leaderboard: {board.dataset}"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="cmrbench {_e(board.cmrbench_version)}">
<title>{_e(title)}</title>
<style>{CSS}</style>
</head>
<body>
<header id="top">
  <h1>CMRBench leaderboard</h1>
  <p class="meta">dataset <b id="dataset">{_e(board.dataset)}</b> · manifest <code title="{_e(board.manifest_sha256)}">{_e(board.manifest_sha256[:12])}</code>
  · cmrbench {_e(board.cmrbench_version)} · leaderboard schema {_e(board.schema_version)}
  · {len(views)} routers from {n_files} results files · ranked by <code>{_e(board.sort_by)}</code></p>
  <p class="meta">download the table: <a href="leaderboard.json" download>JSON</a> ·
  <a href="leaderboard.csv" download>CSV</a> · <a href="leaderboard.tex" download>LaTeX</a></p>
  {notes_html}
</header>
<main>
  <div class="controls">
    <label><input type="checkbox" id="show-expected" checked> show exact reference rows</label>
    <input type="search" id="filter" placeholder="filter routers by name" aria-label="filter routers by name">
    <label><input type="checkbox" id="show-per-exp"> D-Acc per experience</label>
    <label>type <select id="kind-filter"><option value="">all</option><option>trained</option>
      <option>zero-shot</option><option>reference</option></select></label>
    <span class="meta">click a column to sort, a row for details</span>
  </div>
  <div class="table-wrap"><table id="leaderboard">
    <thead><tr>{"".join(heads)}</tr></thead>
    <tbody>
{chr(10).join(rows)}
    </tbody>
  </table></div>
  <p class="meta">Accuracy after the last experience (final average of Acc@1 over all experiences, %), mean ± std
  over seeds. FGT = forgetting (positive = worse), BWT = backward transfer = −FGT. <i>Expected</i> rows are the
  exact expectations the harness stores in every results file (random, most-frequent, oracle, domain-oracle).</p>
  {overview_svgs(views)}
  {details}
</main>
<footer>Generated by <code>cmrbench leaderboard --html</code>. Self-contained: no network access needed.</footer>
<script type="application/json" id="cmrbench-data">{_json_for_script(page_data(board, views, references))}</script>
<script>{JS}</script>
</body>
</html>
"""


def render_site(results_dir: Path, out_dir: Path, sort_by: str = "domain.final_average_accuracy",
                board: Leaderboard | None = None, data: Path | None = None) -> Path:
    """Write ``out_dir/index.html`` (the page) and the tables it links to (:func:`write_tables`); return the page's
    path.

    Args:
        results_dir: folder of results files, as for :func:`build_leaderboard`.
        out_dir: created if missing; the files are replaced atomically.
        sort_by: ``LEVEL.METRIC`` that ranks the table (the page can re-sort by any column).
        board: an already built leaderboard of ``results_dir`` (built here when omitted).
        data: the dataset build the results are verified against (when ``board`` is built here) and the
            routers' slices are computed on (none without it).
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if board is None:           # the build the board is verified on also gives each router's slices
        from cmrbench.data import default_data_dir
        data = default_data_dir() if data is None else data
        board = build_leaderboard(results_dir, sort_by, data)
    views, references, notes = collect(results_dir, board, data)
    page = out_dir / "index.html"
    atomic_write_text(page, render_html(board, views, references, notes))
    write_tables(board, out_dir)
    return page
