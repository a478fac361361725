"""Figures for papers from results files (``cmrbench plot RESULTS.json [...] --out DIR --format png|svg``).

matplotlib is an optional extra (``pip install 'cmrbench[plots]'``); it is imported only when a figure is
drawn. Figures are built with :class:`matplotlib.figure.Figure` and saved through the Agg (PNG) or SVG
canvas, never through ``pyplot``: nothing global (backend, open figures) is touched, so plotting from a
notebook or a headless server behaves the same. SVG output carries no date and a fixed hash salt, so the
same results give the same bytes.

Per results file ``STEM.json`` (STEM = the file name without ``.json``):

- ``STEM__heatmap_{model,family,domain}.FMT``: the accuracy matrix A[t][j] of one level;
- ``STEM__heatmaps.FMT``: the three levels side by side;
- ``STEM__accuracy.FMT``: accuracy on the experiences seen so far after each experience, a line per level;
- ``STEM__forgetting.FMT``: forgetting of each experience j < T (A[j][j] - A[T][j]), bars per level.

With several files (seeds of one router are merged as mean ± std):

- ``comparison__final_accuracy.FMT``: final average accuracy per router and level;
- ``comparison__accuracy.FMT``: accuracy on the experiences seen so far after each experience, per level.

Comparisons order routers by final domain accuracy, best first, and leave reference rows (the oracles,
random, most-frequent) out. Heatmaps scale their colours to the largest cell (rounded up to a tenth), so
model-level matrices of 10-20 % are as readable as domain-level ones.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from cmrbench.leaderboard.site import (LEVEL_COLOURS, LEVEL_SHORT, PALETTE, experience_forgetting, mean_matrix,
                                       running_average)
from cmrbench.metrics import mean_std
from cmrbench.results import LEVELS, MATRIX_METRICS as METRICS, Results, find_results_files, load_results

log = logging.getLogger("cmrbench.plots")

FORMATS = ("png", "svg")
INSTALL_HINT = "matplotlib is not installed; install the plots extra: pip install 'cmrbench[plots]'"


class PlotsUnavailableError(RuntimeError):
    """matplotlib is missing."""


def _matplotlib():
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as err:
        raise PlotsUnavailableError(INSTALL_HINT) from err
    return matplotlib, Figure


def collect_results_files(paths: list[Path]) -> list[Path]:
    """Files as given; folders expand to the results files in them (:func:`cmrbench.results.find_results_files`:
    recursively, skipping hidden names, checkpoints and other JSON)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = find_results_files(p)
            if not found:
                raise ValueError(f"{p}: no results files (<router>__<dataset>__seed<N>.json) in this folder")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such results file or folder")
    return out


def _stem(path: Path) -> str:
    return path.name[:-5] if path.name.endswith(".json") else path.stem


def _save(fig, path: Path, fmt: str, dpi: int) -> Path:
    matplotlib, _ = _matplotlib()
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    with matplotlib.rc_context({"svg.hashsalt": "cmrbench", "svg.fonttype": "path"}):
        fig.savefig(path, format=fmt, dpi=dpi, metadata=metadata)
    return path


def _pct_label(v: float | None) -> str:
    from cmrbench.metrics import percent
    return "" if v is None else percent(v)


def _draw_heatmap(fig, ax, matrix, title: str, metric: str, colourbar: bool = True, ylabel: bool = True):
    import numpy as np
    T = len(matrix)
    cols = max((len(r) for r in matrix), default=0)
    data = np.full((T, cols), np.nan)
    for t, row in enumerate(matrix):
        for j, v in enumerate(row):
            if v is not None:
                data[t, j] = v
    masked = np.ma.masked_invalid(data)
    import matplotlib as mpl
    cmap = mpl.colormaps["viridis"].with_extremes(bad="#f3f4f6")
    top = _scale_top(data)
    im = ax.imshow(masked, cmap=cmap, vmin=0.0, vmax=top, aspect="equal")
    ax.set_xticks(range(cols), [f"E{j + 1}" for j in range(cols)])
    ax.set_yticks(range(T), [f"E{t + 1}" for t in range(T)])
    ax.set_xlabel("test experience")
    if ylabel:
        ax.set_ylabel("after learning")
    ax.xaxis.set_label_position("top")
    ax.xaxis.tick_top()
    ax.set_title(title, pad=8, fontsize=10)
    if T <= 12:
        for t in range(T):
            for j in range(cols):
                if not np.isnan(data[t, j]):
                    ax.text(j, t, _pct_label(data[t, j]), ha="center", va="center", fontsize=8,
                            color="white" if data[t, j] < 0.62 * top else "black")
    if colourbar:
        _colourbar(fig, im, ax, metric, top)
    return im


def _scale_top(data) -> float:
    """The colour scale's top: the largest cell rounded up to a tenth (model-level cells of 10-20 % would
    all look alike on a 0-100 scale)."""
    import numpy as np
    finite = data[np.isfinite(data)]
    peak = float(finite.max()) if finite.size else 1.0
    return min(1.0, max(0.1, np.ceil(peak * 10 - 1e-9) / 10))


def _colourbar(fig, im, ax, metric: str, top: float = 1.0) -> None:
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.set_label(f"{metric} (%)" if metric != "mrr@10" else f"{metric} (x100)")
    ticks = [top * k / 4 for k in range(5)]
    cb.set_ticks(ticks, labels=[f"{100 * v:.0f}" if top >= 0.4 else f"{100 * v:.1f}" for v in ticks])


def _heatmap_figures(results: Results, stem: str, out: Path, fmt: str, metric: str, dpi: int) -> list[Path]:
    _, Figure = _matplotlib()
    files = []
    name = results.router.name
    for level in LEVELS:
        fig = Figure(layout="constrained", figsize=(4.2, 3.6))
        ax = fig.add_subplot()
        _draw_heatmap(fig, ax, results.matrices[level][metric], f"{name}: {level} level, {metric}", metric)
        files.append(_save(fig, out / f"{stem}__heatmap_{level}.{fmt}", fmt, dpi))
    fig = Figure(layout="constrained", figsize=(12, 3.8))
    axes = fig.subplots(1, 3)
    for k, (ax, level) in enumerate(zip(axes, LEVELS)):
        im = _draw_heatmap(fig, ax, results.matrices[level][metric], f"{level} level", metric, colourbar=False,
                           ylabel=k == 0)
    _colourbar(fig, im, list(axes), metric)
    fig.suptitle(f"{name} on {results.dataset.name}-{results.dataset.version}-{results.dataset.stream} "
                 f"(seed {results.seed}): accuracy matrices, {metric}", fontsize=11)
    files.append(_save(fig, out / f"{stem}__heatmaps.{fmt}", fmt, dpi))
    return files


def _experience_axis(ax, T: int) -> None:
    ax.set_xticks(range(1, T + 1), [f"E{t}" for t in range(1, T + 1)])
    ax.set_xlim(0.7, T + 0.3)
    ax.set_ylim(0, 100)
    ax.grid(axis="y", color="#e6e9ed")
    ax.set_axisbelow(True)


def _accuracy_figure(results: Results, stem: str, out: Path, fmt: str, metric: str, dpi: int) -> Path:
    _, Figure = _matplotlib()
    fig = Figure(layout="constrained", figsize=(5.2, 3.6))
    ax = fig.add_subplot()
    T = len(results.matrices["domain"][metric])
    for level in LEVELS:
        A = results.matrices[level][metric]
        avg = running_average(A)
        ax.plot(range(1, T + 1), [100 * v if v is not None else float("nan") for v in avg], marker="o",
                color=LEVEL_COLOURS[level], label=f"{LEVEL_SHORT[level]} ({level}): seen so far")
        ax.plot(range(1, T + 1), [100 * A[t][t] if A[t][t] is not None else float("nan") for t in range(T)],
                linestyle="--", marker=".", color=LEVEL_COLOURS[level], alpha=0.6, label=f"{LEVEL_SHORT[level]}: newest experience")
    _experience_axis(ax, T)
    ax.set_xlabel("after learning experience")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"{results.router.name}: accuracy after each experience", fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="best")
    return _save(fig, out / f"{stem}__accuracy.{fmt}", fmt, dpi)


def _forgetting_figure(results: Results, stem: str, out: Path, fmt: str, metric: str, dpi: int) -> Path:
    _, Figure = _matplotlib()
    fig = Figure(layout="constrained", figsize=(5.2, 3.6))
    ax = fig.add_subplot()
    T = len(results.matrices["domain"][metric])
    width = 0.26
    for k, level in enumerate(LEVELS):
        fgt = experience_forgetting(results.matrices[level][metric])
        xs = [j + 1 + (k - 1) * width for j in range(len(fgt))]
        ax.bar(xs, [100 * v if v is not None else 0.0 for v in fgt], width=width, color=LEVEL_COLOURS[level],
               label=f"{LEVEL_SHORT[level]} ({level})")
    ax.axhline(0, color="#333", linewidth=0.8)
    if T > 1:
        ax.set_xticks(range(1, T), [f"E{j}" for j in range(1, T)])
    else:
        ax.text(0.5, 0.5, "one experience: no forgetting", transform=ax.transAxes, ha="center", va="center")
        ax.set_xticks([])
    ax.set_xlabel("experience")
    ax.set_ylabel("forgetting (pp, positive = worse)")
    ax.set_title(f"{results.router.name}: forgetting A[j,j] − A[T,j] after E{T}", fontsize=10)
    ax.grid(axis="y", color="#e6e9ed")
    ax.set_axisbelow(True)
    ax.legend(fontsize=8)
    return _save(fig, out / f"{stem}__forgetting.{fmt}", fmt, dpi)


def _comparison_figures(runs: list[tuple[Path, Results]], out: Path, fmt: str, metric: str, dpi: int,
                        references: bool = False) -> list[Path]:
    import numpy as np
    _, Figure = _matplotlib()
    found: dict[tuple[str, str], list[Results]] = defaultdict(list)
    for _, r in runs:
        if references or not r.router.reference_row:     # the oracles would squash the real routers' differences
            found[(r.router.name, r.router.version)].append(r)
    if not found:
        return []

    def final_domain(rs: list[Results]) -> float:
        vals = [running_average(r.matrices["domain"][metric])[-1] for r in rs]
        return mean_std([v for v in vals if v is not None] or [0.0])[0]

    # best first, by final domain accuracy (the leaderboard's default ranking)
    groups = dict(sorted(found.items(), key=lambda kv: (-final_domain(kv[1]), kv[0])))
    names = [n if sum(1 for (m, _) in groups if m == n) == 1 else f"{n} v{v}" for (n, v) in groups]
    most = max(len(rs) for rs in groups.values())
    over_seeds = "one seed" if most == 1 else f"mean ± std over up to {most} seeds"
    files = []

    # final average accuracy, grouped bars per router
    fig = Figure(layout="constrained", figsize=(max(5.0, 1.3 * len(groups) + 2), 3.8))
    ax = fig.add_subplot()
    width = 0.26
    for k, level in enumerate(LEVELS):
        means, stds = [], []
        for rs in groups.values():
            vals = [running_average(r.matrices[level][metric])[-1] for r in rs]
            m, s = mean_std([v for v in vals if v is not None] or [float("nan")])
            means.append(100 * m)
            stds.append(100 * s)
        xs = np.arange(len(groups)) + (k - 1) * width
        bars = ax.bar(xs, means, width=width, yerr=stds if any(stds) else None, capsize=3,
                      color=LEVEL_COLOURS[level], label=f"{LEVEL_SHORT[level]} ({level})")
        ax.bar_label(bars, labels=[_pct_label(m / 100) for m in means], fontsize=6, padding=2)
    ax.set_xticks(np.arange(len(groups)), names, rotation=20 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center")
    ax.set_ylim(0, 122)
    ax.set_yticks([0, 20, 40, 60, 80, 100])
    ax.set_ylabel(f"final average {metric} (%)")
    ax.set_title(f"final average accuracy ({over_seeds})", fontsize=10)
    ax.grid(axis="y", color="#e6e9ed")
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, ncol=3, loc="upper left")
    files.append(_save(fig, out / f"comparison__final_accuracy.{fmt}", fmt, dpi))

    # accuracy after each experience, one panel per level, a line per router
    fig = Figure(layout="constrained", figsize=(12, 3.8))
    axes = fig.subplots(1, 3, sharey=True)
    T = max(len(r.matrices["domain"][metric]) for rs in groups.values() for r in rs)
    for ax, level in zip(axes, LEVELS):
        for i, ((key, rs), name) in enumerate(zip(groups.items(), names)):
            mean, _ = mean_matrix([r.matrices[level][metric] for r in rs])
            avg = running_average(mean)
            per_seed = [running_average(r.matrices[level][metric]) for r in rs]
            xs = np.arange(1, len(avg) + 1)
            ys = np.array([100 * v if v is not None else np.nan for v in avg])
            colour = PALETTE[i % len(PALETTE)]
            ax.plot(xs, ys, marker="o", color=colour, label=name)
            if len(rs) > 1:
                sd = np.array([100 * np.std([p[t] for p in per_seed if p[t] is not None], ddof=1) for t in range(len(avg))])
                ax.fill_between(xs, ys - sd, ys + sd, color=colour, alpha=0.15, linewidth=0)
        _experience_axis(ax, T)
        ax.set_title(f"{level} level", fontsize=10)
        ax.set_xlabel("after learning experience")
    axes[0].set_ylabel(f"{metric} on experiences seen so far (%)")
    axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"accuracy after each experience ({over_seeds})", fontsize=11)
    files.append(_save(fig, out / f"comparison__accuracy.{fmt}", fmt, dpi))
    return files


def plot_results(paths: list[Path], out_dir: Path, fmt: str = "png", metric: str = "acc@1", dpi: int = 150,
                 compare: bool | None = None, references: bool = False) -> list[Path]:
    """Draw every figure for the given results files (or folders of them); return the files written.

    Args:
        paths: results JSON files, or folders searched for ``*.json`` results files.
        out_dir: created if missing; existing figures of the same names are replaced.
        fmt: ``png`` or ``svg``.
        metric: matrix metric to draw (``acc@1`` default; ``acc@3``, ``acc@5``, ``acc@10``, ``mrr@10``).
        dpi: resolution of PNG files.
        compare: draw the comparison figures; default: when more than one file is given. Skipped (with a
            warning) when the files come from different dataset builds.
        references: also put reference rows (oracles, random, most-frequent) in the comparison figures.
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if metric not in METRICS:
        raise ValueError(f"--metric {metric!r}: use one of {', '.join(METRICS)}")
    _matplotlib()  # fail early, before reading anything, when matplotlib is missing
    files = collect_results_files(paths)
    runs = [(p, load_results(p)) for p in files]  # errors name the file
    out_dir = Path(out_dir)
    written: list[Path] = []
    stems: dict[str, int] = {}
    for path, results in runs:
        if not results.matrices.get("domain", {}).get(metric):
            log.warning("%s: no finished experience, nothing to plot", path)
            continue
        stem = _stem(path)
        if stem in stems:  # same file name in two folders
            stems[stem] += 1
            stem = f"{stem}__{stems[stem]}"
        else:
            stems[stem] = 1
        written += _heatmap_figures(results, stem, out_dir, fmt, metric, dpi)
        written.append(_accuracy_figure(results, stem, out_dir, fmt, metric, dpi))
        written.append(_forgetting_figure(results, stem, out_dir, fmt, metric, dpi))
    if compare is None:
        compare = len(runs) > 1
    if compare:
        builds = {r.dataset.manifest_sha256 for _, r in runs}
        usable = [(p, r) for p, r in runs if r.matrices.get("domain", {}).get(metric)]
        if len(builds) > 1:
            log.warning("comparison skipped: the files come from %d dataset builds", len(builds))
        elif usable:
            written += _comparison_figures(usable, out_dir, fmt, metric, dpi, references)
    return written
