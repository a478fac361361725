"""The leaderboard page (checked in headless Chromium), the figures, publishing, and historic results files.

- The page is opened in Debian's ``chromium`` through the Chrome DevTools Protocol over
  ``--remote-debugging-pipe`` (no extra Python package): a column is sorted, a router's details opened,
  screenshots taken, and the DOM asserted on. Skipped only when no Chromium binary is found
  (``CMRBENCH_CHROMIUM`` names one explicitly); set ``CMRBENCH_SCREENSHOT_DIR`` to keep the screenshots.
- Figures need the ``plots`` extra (matplotlib); those tests are skipped without it.
- Publishing is tested with ``--dry-run`` and against a small Hub emulation on 127.0.0.1 that records every
  request (create repo, validate README, preupload, LFS batch / upload / verify, commit, create branch).
- ``tests/fixtures/results/schema-1.0/`` holds results files written by ``cmrbench evaluate`` with results
  schema 1.0 (random seeds 0 and 1, most-frequent and oracle on the synthetic hub): if the results schema
  changes, these must keep loading.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import select
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cmrbench.data import Benchmark
from cmrbench.harness import evaluate
from cmrbench.leaderboard.board import LEADERBOARD_SCHEMA_VERSION, build_leaderboard
from cmrbench.leaderboard.cli import main as lb_main
from cmrbench.leaderboard.publish import PublishError, plan_upload
from cmrbench.leaderboard.site import render_site
from cmrbench.protocol import RouterMeta
from cmrbench.results import load_results
from toy_routers import OverlapRouter

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "results"
HISTORIC = sorted(FIXTURES.rglob("*.json"))


# ------------------------------------------------------------------------------- a small router

class MemoRouter:
    """A trained router: counts which model each word of the training prompts points to."""

    def __init__(self, seed: int = 0):
        self.meta = RouterMeta(name="memo", version="2", zero_shot=False, description="word counts of training prompts")
        self.counts: dict[str, Counter] = {}
        self.seen: list[str] = []

    def learn(self, experience):
        for prompt, model_id in experience.train.select("prompt", "model_id").rows():
            for w in set(prompt.lower().split()):
                self.counts.setdefault(w, Counter())[model_id] += 1
        self.seen = list(experience.classes_seen_so_far)

    def route(self, prompts, top_k):
        out = []
        for p in prompts:
            c: Counter = Counter()
            for w in set(p.lower().split()):
                c.update(self.counts.get(w, {}))
            out.append([(m, float(c[m])) for m in sorted(self.seen, key=lambda m: (-c[m], m))[:top_k]])
        return out


@pytest.fixture(scope="module")
def results_dir(synthetic_hub, tmp_path_factory) -> Path:
    """The historic fixtures plus fresh runs of a zero-shot and a trained router on the same synthetic hub."""
    out = tmp_path_factory.mktemp("board")
    shutil.copytree(FIXTURES, out / "historic")
    bench = Benchmark(synthetic_hub)
    evaluate(OverlapRouter(), bench, out / "new", progress=False)
    evaluate(MemoRouter(), bench, out / "new", progress=False)
    return out


# ---------------------------------------------------------------------------------- historic files

def test_historic_results_files_still_load_verify_and_rank(synthetic_hub):
    assert len(HISTORIC) >= 3, "tests/fixtures/results lost its historic results files"
    for path in HISTORIC:
        r = load_results(path)
        assert r.schema_version == "1.0" and r.status == "complete"
    board = build_leaderboard(FIXTURES, data=synthetic_hub)
    assert board.schema_version == LEADERBOARD_SCHEMA_VERSION
    assert board.entries == [] and [e.router for e in board.references] == ["oracle", "most-frequent", "random"]
    random_entry = board.references[2]
    assert random_entry.seeds == [0, 1] and random_entry.scores["domain"]["final_average_accuracy"].n == 2


def test_historic_results_render_as_a_page(synthetic_hub, tmp_path):
    page = render_site(FIXTURES, tmp_path / "site", data=synthetic_hub)
    text = page.read_text(encoding="utf-8")
    data = _page_data(text)
    assert [r["router"] for r in data["routers"]] == ["oracle", "most-frequent", "random"]
    assert set(data["reference_rows"]) == {"random", "most-frequent", "oracle", "domain-oracle"}
    assert json.loads((tmp_path / "site" / "leaderboard.json").read_text())["schema_version"] == LEADERBOARD_SCHEMA_VERSION
    # the page links the table as CSV and LaTeX, written beside it
    import csv
    rows = list(csv.DictReader((tmp_path / "site" / "leaderboard.csv").read_text().splitlines()))
    assert [r["router"] for r in rows] == ["oracle", "most-frequent", "random"] and rows[0]["rank"] == "-"
    assert float(rows[0]["D-Acc mean"]) == pytest.approx(100.0)
    tex = (tmp_path / "site" / "leaderboard.tex").read_text()
    assert tex.count("\\toprule") == 1 and "most-frequent & reference" in tex and tex.rstrip().endswith("\\end{tabular}")
    assert 'href="leaderboard.csv"' in text and 'href="leaderboard.tex"' in text


# ------------------------------------------------------------------------------------- static page

def _page_data(text: str) -> dict:
    m = re.search(r'<script type="application/json" id="cmrbench-data">(.*?)</script>', text, re.S)
    assert m, "the page does not embed its data"
    return json.loads(m.group(1))


def test_page_is_self_contained_and_escapes_names(results_dir, synthetic_hub, tmp_path):
    # a results file whose router name tries to close the script element and inject markup
    evil_dir = tmp_path / "runs"
    shutil.copytree(results_dir, evil_dir)
    src = evil_dir / "historic" / "schema-1.0" / "oracle__CMRBench-v1-synthetic__seed0.json"
    data = json.loads(src.read_text())
    evil = '</script><img src=x onerror="alert(1)">'
    data["router"].update(name=evil, reference_row=False, description=evil, reference="javascript:alert(1)")
    (evil_dir / "evil__CMRBench-v1-synthetic__seed0.json").write_text(json.dumps(data))
    shutil.copy(src.with_name(data["predictions_file"]), evil_dir / data["predictions_file"])
    text = render_site(evil_dir, tmp_path / "site", data=synthetic_hub).read_text(encoding="utf-8")
    assert evil not in text and 'href="javascript:' not in text
    assert text.count("</script>") == 2  # the data and the code, nothing else
    assert evil in [r["router"] for r in _page_data(text)["routers"]]
    # nothing fetched from elsewhere: no external scripts, styles, fonts or images
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", text)
    assert "@import" not in text and "url(http" not in text


# ------------------------------------------------------------------------ headless Chromium (CDP)

def _chromium() -> str | None:
    explicit = os.environ.get("CMRBENCH_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


class Chromium:
    """Headless Chromium driven through the DevTools Protocol on --remote-debugging-pipe.

    Chromium reads NUL-terminated JSON commands on fd 3 and writes replies and events on fd 4.
    """

    def __init__(self, binary: str, user_data_dir: Path, width: int = 1280, height: int = 900):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def child_fds():  # runs in the child before exec: put the pipe ends on fds 3 and 4
            os.dup2(to_chrome_r, 100)
            os.dup2(from_chrome_w, 101)
            os.dup2(100, 3)
            os.dup2(101, 4)

        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
                "--disable-dev-shm-usage", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
                f"--user-data-dir={user_data_dir}", f"--window-size={width},{height}",
                "--remote-debugging-pipe", "about:blank"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=child_fds, close_fds=False)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium exited (code {self.proc.poll()})")
                self._buf += chunk
        msg, _, self._buf = self._buf.partition(b"\0")
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, *, browser: bool = False, timeout: float = 20) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if self.session and not browser:
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 20) -> dict:
        for i, ev in enumerate(self.events):
            if ev.get("method") == method:
                return self.events.pop(i)
        while True:
            ev = self._read(timeout)
            if ev.get("method") == method:
                return ev
            self.events.append(ev)

    def open_page(self, url: str, width: int = 1280, height: int = 900) -> None:
        page = next(t for t in self.send("Target.getTargets", browser=True)["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True},
                                 browser=True)["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        params: dict = {"format": "png"}
        if full_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", params)["data"]))
        return path

    def close(self) -> None:
        try:
            self.send("Browser.close", browser=True, timeout=5)
        except Exception:  # noqa: BLE001 - it may already be gone
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


ROWS_JS = "Array.from(document.querySelectorAll('#leaderboard tbody tr')).filter(r => !r.hidden)"


def test_page_in_headless_chromium(results_dir, synthetic_hub, tmp_path):
    binary = _chromium()
    if binary is None:
        pytest.skip("no Chromium binary (apt-get install chromium, or set CMRBENCH_CHROMIUM): page not checked "
                    "in a browser")
    board = build_leaderboard(results_dir, data=synthetic_hub)
    page = render_site(results_dir, tmp_path / "site", board=board, data=synthetic_hub)
    data = _page_data(page.read_text(encoding="utf-8"))
    browser = Chromium(binary, tmp_path / "profile")
    try:
        browser.open_page(page.as_uri())
        assert browser.js("window.CMRBENCH_READY === true")
        assert browser.js("document.querySelector('#dataset').textContent") == board.dataset
        # each (non-reference) router's details show where it fails: its slices, prompts adding up to all of them
        sources = browser.js("Array.from(document.querySelectorAll('table.slices[data-slice=source]'))"
                             ".map(t => Array.from(t.tBodies[0].rows).reduce((n, r) => n + "
                             "Number(r.cells[1].textContent.replace(/,/g, '')), 0))")
        assert len(sources) == len(board.entries) and len(set(sources)) == 1 and sources[0] > 0

        # every router and every exact reference row is in the table: ranked routers in the board's order, then
        # routers that are references (never ranked), then the exact reference rows
        rows = browser.js(f"{ROWS_JS}.map(r => r.dataset.router)")
        entries = [e.router for e in board.entries]
        references = [e.router for e in board.references]
        assert rows[:len(entries)] == entries
        assert rows[len(entries):len(entries) + len(references)] == references
        assert sorted(rows[len(entries) + len(references):]) == sorted(data["reference_rows"])
        ranks = browser.js("Array.from(document.querySelectorAll('tr.entry')).map(r => r.cells[0].textContent)")
        assert ranks == [str(i) for i in range(1, len(entries) + 1)] + ["–"] * len(references)
        badges = browser.js("Object.fromEntries(Array.from(document.querySelectorAll('tr.entry'))"
                            ".map(r => [r.dataset.router, r.querySelector('.badge').textContent]))")
        assert badges["overlap"] == "zero-shot" and badges["memo"] == "trained" and badges["oracle"] == "reference"

        # sort by model-level accuracy: click once (best first), twice (reversed)
        def column(key: str) -> list:
            return browser.js(f"{ROWS_JS}.map(r => r.dataset.router + '|' + r.querySelector("
                              f"'td:nth-child(' + (document.querySelector('th[data-key={key}]').cellIndex + 1) + ')')"
                              f".dataset.value)")

        browser.js("document.querySelector('th[data-key=m_acc]').click()")
        assert browser.js("document.querySelector('th[data-key=m_acc]').getAttribute('aria-sort')") == "descending"
        values = [float(v.split("|")[1]) for v in column("m_acc") if v.split("|")[1]]
        assert values == sorted(values, reverse=True) and len(values) == len(rows)
        best = max([e.scores["model"]["final_average_accuracy"].mean for e in board.entries + board.references]
                   + [lv["model"]["final_average_accuracy"] for lv in data["reference_rows"].values()])
        top = [v.split("|") for v in column("m_acc")][0]
        assert best == 1.0 and float(top[1]) == 1.0
        browser.js("document.querySelector('th[data-key=m_acc]').click()")
        values_up = [float(v.split("|")[1]) for v in column("m_acc")]
        assert values_up == sorted(values_up)
        browser.js("document.querySelector('th[data-key=router]').click()")
        names = [v.split("|")[0].lower() for v in column("router")]
        assert names == sorted(names)
        browser.js("document.querySelector('th[data-key=d_acc]').click()")
        d_values = [float(v.split("|")[1]) for v in column("d_acc")]
        assert d_values == sorted(d_values, reverse=True)
        browser.js("window.scrollTo(0, 0)")
        table_png = browser.screenshot(tmp_path / "leaderboard-sorted.png")

        # filters: hide the exact reference rows, then filter by name
        browser.js("document.getElementById('show-expected').click()")
        assert browser.js(f"{ROWS_JS}.length") == len(entries) + len(references)
        browser.js("const f = document.getElementById('filter'); f.value = 'mem'; "
                   "f.dispatchEvent(new Event('input'))")
        assert browser.js(f"{ROWS_JS}.map(r => r.dataset.router)") == ["memo"]
        browser.js("const g = document.getElementById('filter'); g.value = ''; g.dispatchEvent(new Event('input'))")
        browser.js("const k = document.getElementById('kind-filter'); k.value = 'trained'; "
                   "k.dispatchEvent(new Event('change'))")
        assert browser.js(f"{ROWS_JS}.map(r => r.dataset.router)") == ["memo"]
        browser.js("const k2 = document.getElementById('kind-filter'); k2.value = ''; "
                   "k2.dispatchEvent(new Event('change'))")
        # intervals in the table, the first row marked as the one the others are tested against
        vs = dict(v.split("|") for v in column("d_vs"))
        assert vs[entries[0]] == "0" and float(vs[entries[1]]) <= 0
        assert sorted(r for r, v in (c.split("|") for c in column("d_ci")) if v) == sorted(entries)
        # D-Acc on each experience after the last one: hidden until asked for
        visible_per_exp = "Array.from(document.querySelectorAll('#leaderboard th.per-exp')).filter(h => h.offsetParent)"
        assert browser.js(f"{visible_per_exp}.length") == 0
        browser.js("document.getElementById('show-per-exp').click()")
        memo_row = next(r for r in data["routers"] if r["router"] == "memo")["matrices"]["domain"]["acc@1"][-1]
        assert browser.js(f"{visible_per_exp}.length") == len(memo_row)
        shown = browser.js("Array.from(document.querySelectorAll('tr[data-router=memo] td.per-exp'))"
                           ".map(c => parseFloat(c.dataset.value))")
        assert shown == pytest.approx(memo_row)
        browser.js("document.getElementById('show-per-exp').click()")
        # the cross-router figures: one bar per ranked router at each of two levels, best first
        bars = browser.js("Array.from(document.querySelectorAll('.overview svg')).map(s => "
                          "Array.from(s.querySelectorAll('g.bar text')).map(t => t.textContent))")
        assert len(bars) == 2 and all(len(b) == 2 * len(entries) for b in bars)

        # open the trained router's details by clicking its row
        memo = next(r for r in data["routers"] if r["router"] == "memo")
        assert not browser.js(f"getComputedStyle(document.getElementById('{memo['slug']}')).display !== 'none'")
        browser.js("document.querySelector('tr[data-router=memo] td:nth-child(4)').click()")
        deadline = time.monotonic() + 5
        while browser.js("location.hash") != f"#{memo['slug']}" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert browser.js("location.hash") == f"#{memo['slug']}"
        detail = f"document.getElementById('{memo['slug']}')"
        assert browser.js(f"getComputedStyle({detail}).display") == "block"
        assert browser.js("document.querySelectorAll('.detail.open').length") == 1
        assert browser.js("document.querySelector('tr[data-router=memo]').classList.contains('selected')")
        T = len(memo["matrices"]["domain"]["acc@1"])
        visible_maps = f"Array.from({detail}.querySelectorAll('.heatmaps')).filter(g => !g.hidden)"
        assert browser.js(f"{visible_maps}.map(g => g.dataset.metric)") == ["acc@1"]
        assert browser.js(f"{visible_maps}[0].querySelectorAll('svg.heatmap').length") == 3
        assert browser.js(f"{visible_maps}[0].querySelectorAll('svg.heatmap')[0].querySelectorAll('g.cell').length") \
            == T * (T + 1) // 2
        cell = browser.js(f"{visible_maps}[0].querySelector('svg.heatmap g.cell[data-t=\"{T}\"][data-j=\"1\"] text')"
                          ".textContent")
        assert float(cell) == pytest.approx(100 * memo["matrices"]["model"]["acc@1"][T - 1][0], abs=0.051)
        assert browser.js(f"{detail}.querySelectorAll('.curves svg.chart').length") == 4
        assert browser.js(f"{detail}.querySelector('h2').textContent").startswith("memo")
        # the heatmaps' metric switch
        browser.js(f"const s = {detail}.querySelector('select.metric'); s.value = 'acc@10'; "
                   "s.dispatchEvent(new Event('change'))")
        assert browser.js(f"{visible_maps}.map(g => g.dataset.metric)") == ["acc@10"]
        browser.js(f"const s2 = {detail}.querySelector('select.metric'); s2.value = 'acc@1'; "
                   "s2.dispatchEvent(new Event('change'))")
        detail_png = browser.screenshot(tmp_path / "leaderboard-detail.png")
        browser.js("window.scrollTo(0, 0)")
        full_png = browser.screenshot(tmp_path / "leaderboard-full.png", full_page=True)

        # no script errors, and nothing requested but the page itself
        browser.js("1")
        errors = [e for e in browser.events if e.get("method") == "Runtime.exceptionThrown"
                  or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
        assert not errors, errors
        urls = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
        assert all(u.startswith(("file:", "data:", "about:")) for u in urls), urls
    finally:
        browser.close()
    for png in (table_png, detail_png, full_png):
        head = png.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        assert width == 1280 and height >= 900
    keep = os.environ.get("CMRBENCH_SCREENSHOT_DIR")
    if keep:
        for png in (table_png, detail_png, full_png):
            shutil.copy(png, Path(keep) / png.name)


def test_leaderboard_writes_one_folder(results_dir, synthetic_hub, tmp_path, capsys):
    from cmrbench.cli import main
    assert main(["leaderboard", str(results_dir), "--out", str(tmp_path / "site"), "--html",
                 "--data", str(synthetic_hub)]) == 0
    assert {p.name for p in (tmp_path / "site").iterdir()} == {
        "index.html", "leaderboard.json", "leaderboard.md", "leaderboard.csv", "leaderboard.tex"}
    assert "index.html" in capsys.readouterr().out
    # --out names a folder on every command: a file name is refused before anything is verified or written
    assert main(["leaderboard", str(results_dir), "--out", str(tmp_path / "lb.json"), "--data", str(synthetic_hub)]) == 1
    assert "--out is the folder" in capsys.readouterr().err and not (tmp_path / "lb.json").exists()


def test_page_intervals_match_the_table(results_dir, synthetic_hub):
    """The page's 95% intervals are of the number the table shows (the final average accuracy), and the first
    row's paired test against itself is not run."""
    from cmrbench.leaderboard.site import collect
    board = build_leaderboard(results_dir, data=synthetic_hub)
    views, _, _ = collect(results_dir, board, synthetic_hub)
    ranked = [v for v in views if not v.entry.reference_row]
    assert [v.entry.router for v in ranked] == [e.router for e in board.entries] and len(ranked) == 2
    for v in ranked:
        for level, ci in v.intervals.items():
            shown = v.entry.scores[level]["final_average_accuracy"].mean
            assert ci["mean"] == pytest.approx(shown) and ci["ci_low"] <= shown <= ci["ci_high"]
    assert "p_value" not in ranked[0].intervals["domain"]
    second = ranked[1].intervals["domain"]
    first_d = board.entries[0].scores["domain"]["final_average_accuracy"].mean
    assert second["diff"] == pytest.approx(board.entries[1].scores["domain"]["final_average_accuracy"].mean - first_d)
    assert 0 < second["p_value"] <= 1


# ------------------------------------------------------------------------------------------ plots

def test_plots_render_every_figure(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the plots extra (matplotlib) is not installed")
    from cmrbench.leaderboard import plots
    # two seeds of one router and another router: per-file figures, then comparisons with mean ± std
    files = [FIXTURES / "schema-1.0" / f"{n}__CMRBench-v1-synthetic__seed{s}.json"
             for n, s in (("random", 0), ("random", 1), ("oracle", 0))]
    written = plots.plot_results(files, tmp_path / "png", fmt="png", dpi=80, references=True)
    expected = {f"{p.name[:-5]}__{kind}.png" for p in files
                for kind in ("heatmap_model", "heatmap_family", "heatmap_domain", "heatmaps", "accuracy", "forgetting")}
    expected |= {"comparison__final_accuracy.png", "comparison__accuracy.png"}
    assert {p.name for p in written} == expected
    # by default reference rows stay out of comparisons: here nothing is left to compare
    assert not [p for p in plots.plot_results(files, tmp_path / "refs", dpi=80) if p.name.startswith("comparison")]
    import numpy as np
    assert plots._scale_top(np.array([[0.12, np.nan], [0.08, 0.19]])) == pytest.approx(0.2)   # not 0-100
    for p in written:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 8_000, p.name
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width > 250 and height > 200, p.name

    # the CLI, SVG, one file: no comparison figures
    assert lb_main(["plot", str(files[0]), "--out", str(tmp_path / "svg"), "--format", "svg"]) == 0
    svgs = sorted((tmp_path / "svg").glob("*.svg"))
    assert len(svgs) == 6 and "6 figures (svg)" in capsys.readouterr().out
    for p in svgs:
        assert ET.parse(p).getroot().tag.endswith("svg") and p.stat().st_size > 8_000, p.name
    # same input, same bytes (no dates, fixed hash salt)
    again = plots._accuracy_figure(load_results(files[0]), files[0].name[:-5], tmp_path / "again", "svg", "acc@1", 80)
    assert again.read_bytes() == (tmp_path / "svg" / again.name).read_bytes()


def test_plots_explain_a_missing_matplotlib(monkeypatch, tmp_path, capsys):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert lb_main(["plot", str(HISTORIC[0]), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'cmrbench[plots]'" in err


# ---------------------------------------------------------------------------------------- publish

def _expected_files(dataset: Path, results: Path) -> dict[str, bytes]:
    out = {p.relative_to(dataset).as_posix(): p.read_bytes() for p in dataset.rglob("*") if p.is_file()}
    out |= {"results/" + p.relative_to(results).as_posix(): p.read_bytes() for p in results.rglob("*") if p.is_file()}
    return out


def test_publish_dry_run_lists_exactly_the_files(synthetic_hub, tmp_path, capsys):
    # hidden files and caches are never published
    results = tmp_path / "results"
    shutil.copytree(FIXTURES, results)
    (results / ".cache").mkdir()
    (results / ".cache" / "x").write_text("x")
    (results / ".DS_Store").write_text("x")
    assert lb_main(["publish", "--dataset", str(synthetic_hub), "--results", str(results), "--repo",
                    "org/cmrbench", "--dry-run", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    expected = _expected_files(synthetic_hub, FIXTURES)
    assert [f["path"] for f in listed] == sorted(expected)
    for f in listed:
        assert f["size"] == len(expected[f["path"]]) and f["sha256"] == hashlib.sha256(expected[f["path"]]).hexdigest()
    assert "README.md" in expected and "manifest.json" in expected
    # the human listing: header, one line per file with path, size and sha256
    assert lb_main(["publish", "--dataset", str(synthetic_hub), "--repo", "org/cmrbench", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("dry run: ") and "nothing was sent" in lines[0]
    readme = next(line for line in lines if line.startswith("README.md "))
    assert readme.split()[-1] == hashlib.sha256((synthetic_hub / "README.md").read_bytes()).hexdigest()


def test_publish_checks_folders_before_sending(synthetic_hub, tmp_path):
    broken = tmp_path / "hub"
    shutil.copytree(synthetic_hub, broken)
    with open(broken / "experience_1" / "test.parquet", "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(PublishError, match="differs from manifest.json"):
        plan_upload(broken)
    (broken / "README.md").unlink()
    with pytest.raises(PublishError, match="README.md is missing"):
        plan_upload(broken)
    bad_results = tmp_path / "runs"
    bad_results.mkdir()
    (bad_results / "notes.json").write_text('{"hello": 1}')
    with pytest.raises(PublishError, match="notes.json: neither a results file nor a leaderboard file"):
        plan_upload(results=bad_results, data=synthetic_hub)


def test_publish_offline_or_unreachable_is_one_clear_line(synthetic_hub, monkeypatch, capsys):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert lb_main(["publish", "--dataset", str(synthetic_hub), "--repo", "org/cmrbench"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "offline" in err and "--dry-run" in err
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with socket_closed_port() as port:
        assert lb_main(["publish", "--dataset", str(synthetic_hub), "--repo", "org/cmrbench",
                        "--endpoint", f"http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"cannot reach http://127.0.0.1:{port}" in err


class socket_closed_port:
    """A loopback port with nothing listening (bound, never listened to, so no one else takes it)."""

    def __enter__(self) -> int:
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()


class FakeHub:
    """Just enough of the Hub API for huggingface_hub's create_repo, create_branch and create_commit (with
    LFS uploads through the legacy batch API), on 127.0.0.1; every request is recorded."""

    def __init__(self):
        self.requests: list[dict] = []
        self.repos: dict[str, dict] = {}   # repo id -> {"branches": {name: {"sha": ..., "files": {path: bytes}}}}
        self.lfs: dict[str, bytes] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, status: int, payload: dict | None = None) -> None:
                body = json.dumps(payload if payload is not None else {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if status >= 400:
                    self.send_header("X-Error-Message", (payload or {}).get("error", "error"))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                body = self._body()
                hub.requests.append({"method": self.command, "path": self.path, "body": body,
                                     "authorization": self.headers.get("Authorization")})
                status, payload = hub.route(self.command, self.path, body)
                self._reply(status, payload)

            do_GET = do_POST = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def route(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        path, _, query = path.partition("?")
        if method == "POST" and path == "/api/repos/create":
            req = json.loads(body)
            repo = f"{req['organization']}/{req['name']}"
            if req.get("type") != "dataset":
                return 400, {"error": "expected a dataset repo"}
            if repo in self.repos:
                return 409, {"error": "You already created this dataset repo", "url": f"{self.url}/datasets/{repo}"}
            self.repos[repo] = {"branches": {"main": {"sha": "0" * 40, "files": {}}}}
            return 200, {"url": f"{self.url}/datasets/{repo}"}
        if method == "POST" and path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}
        m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/(preupload|commit|branch)/(.+)", path)
        if m:
            repo, action, rev = m.group(1), m.group(2), m.group(3)
            if repo not in self.repos:
                return 404, {"error": "Repository not found"}
            branches = self.repos[repo]["branches"]
            if action == "branch":
                if rev in branches:
                    return 409, {"error": "Branch already exists"}
                branches[rev] = {"sha": branches["main"]["sha"], "files": dict(branches["main"]["files"])}
                return 200, {}
            if action == "preupload":
                files = json.loads(body)["files"]
                return 200, {"files": [{"path": f["path"], "shouldIgnore": False,
                                        "uploadMode": "lfs" if f["path"].endswith(".parquet") else "regular"}
                                       for f in files]}
            if rev not in branches:
                return 404, {"error": f"Invalid rev id: {rev}"}
            pr = "create_pr=1" in query
            if pr:  # the commit goes to a new refs/pr/N branched from rev
                n = 1 + sum(1 for b in branches if b.startswith("refs/pr/"))
                branches[f"refs/pr/{n}"] = dict(branches[rev])
                rev = f"refs/pr/{n}"
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            assert lines[0]["key"] == "header"
            files = dict(branches[rev]["files"])
            for line in lines[1:]:
                v = line["value"]
                if line["key"] == "file":
                    files[v["path"]] = base64.b64decode(v["content"])
                elif line["key"] == "lfsFile":
                    if v["oid"] not in self.lfs:
                        return 400, {"error": f"LFS object {v['oid']} was never uploaded"}
                    files[v["path"]] = self.lfs[v["oid"]]
                else:
                    return 400, {"error": f"unexpected operation {line['key']}"}
            sha = hashlib.sha1((branches[rev]["sha"] + json.dumps(sorted((p, hashlib.sha256(b).hexdigest())
                                                                         for p, b in files.items()))).encode()).hexdigest()
            branches[rev] = {"sha": sha, "files": files}
            return 200, {"commitUrl": f"{self.url}/datasets/{repo}/commit/{sha}", "commitOid": sha,
                         "pullRequestUrl": f"{self.url}/datasets/{repo}/discussions/{rev.rsplit('/', 1)[1]}" if pr
                         else None}
        m = re.fullmatch(r"/datasets/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)
        if method == "POST" and m:
            req = json.loads(body)
            objects = []
            for obj in req["objects"]:
                entry = {"oid": obj["oid"], "size": obj["size"]}
                if obj["oid"] not in self.lfs:
                    entry.update(authenticated=True, actions={
                        "upload": {"href": f"{self.url}/lfs-store/{obj['oid']}"},
                        "verify": {"href": f"{self.url}/lfs-verify"}})
                objects.append(entry)
            return 200, {"transfer": "basic", "objects": objects}
        m = re.fullmatch(r"/lfs-store/([0-9a-f]{64})", path)
        if method == "PUT" and m:
            if hashlib.sha256(body).hexdigest() != m.group(1):
                return 400, {"error": "content does not match its oid"}
            self.lfs[m.group(1)] = body
            return 200, {}
        if method == "POST" and path == "/lfs-verify":
            req = json.loads(body)
            ok = req["oid"] in self.lfs and len(self.lfs[req["oid"]]) == req["size"]
            return (200, {}) if ok else (404, {"error": "object not found"})
        return 404, {"error": f"no route for {method} {path}"}


@pytest.fixture
def loopback_hub(monkeypatch):
    from huggingface_hub import constants
    from huggingface_hub.utils import _http
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # the legacy LFS protocol: the Xet protocol needs a content-addressed storage service we do not emulate
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("CMRBENCH_TEST_TOKEN", "hf_loopback_token")
    _http.close_session()
    with FakeHub() as hub:
        yield hub
    _http.close_session()


def test_publish_to_a_loopback_hub(loopback_hub, synthetic_hub, capsys):
    hub = loopback_hub
    argv = ["publish", "--dataset", str(synthetic_hub), "--results", str(FIXTURES), "--repo", "org/cmrbench",
            "--endpoint", hub.url, "--token-env", "CMRBENCH_TEST_TOKEN", "--json"]
    assert lb_main(argv) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    main = hub.repos["org/cmrbench"]["branches"]["main"]
    assert report["commit_sha"] == main["sha"] and re.fullmatch(r"[0-9a-f]{40}", report["commit_sha"])
    assert report["branch"] == "main" and report["repo_id"] == "org/cmrbench"
    expected = _expected_files(synthetic_hub, FIXTURES)
    assert main["files"] == expected and report["n_files"] == len(expected)

    # what was asked of the Hub, in order; Parquet files went through LFS, the rest inline in the commit
    calls = [(r["method"], re.sub(r"[0-9a-f]{64}", "<oid>", r["path"].split("?")[0])) for r in hub.requests]
    assert calls[0] == ("POST", "/api/repos/create")
    assert ("POST", "/api/validate-yaml") in calls
    assert ("POST", "/api/datasets/org/cmrbench/preupload/main") in calls
    assert ("POST", "/datasets/org/cmrbench.git/info/lfs/objects/batch") in calls
    n_parquet = sum(1 for p in expected if p.endswith(".parquet"))
    assert calls.count(("PUT", "/lfs-store/<oid>")) == n_parquet == calls.count(("POST", "/lfs-verify"))
    assert calls[-1] == ("POST", "/api/datasets/org/cmrbench/commit/main")
    assert sum(1 for c in calls if c[1].endswith("/commit/main")) == 1  # one atomic commit
    api_calls = [r for r in hub.requests if r["path"].startswith("/api/")]
    assert all(r["authorization"] == "Bearer hf_loopback_token" for r in api_calls)
    commit = [json.loads(line) for line in hub.requests[-1]["body"].decode().splitlines()]
    assert commit[0]["value"]["summary"].startswith("Publish CMRBench v1 (synthetic stream")
    assert sorted(c["value"]["path"] for c in commit[1:]) == sorted(expected)

    # again, onto a new branch of the existing repo: create tolerates 409, the branch is created, sha reported
    hub.requests.clear()
    argv_dev = argv[:-1] + ["--revision", "dev"]
    assert lb_main(argv_dev) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    dev = hub.repos["org/cmrbench"]["branches"]["dev"]
    assert f"pinned revision: {dev['sha']} (branch dev)" in out and dev["sha"] != main["sha"]
    assert f'revision="{dev["sha"]}"' in out
    assert ("POST", "/api/datasets/org/cmrbench/branch/dev") in [(r["method"], r["path"]) for r in hub.requests]
    assert not any("lfs-store" in r["path"] for r in hub.requests)  # LFS objects already stored: not re-sent

    # as a pull request: main is untouched, the PR's commit sha and URL are reported
    assert lb_main(argv + ["--create-pr"]) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    branches = hub.repos["org/cmrbench"]["branches"]
    assert branches["main"]["sha"] == main["sha"]
    assert report["commit_sha"] == branches["refs/pr/1"]["sha"] and report["pr_url"].endswith("/discussions/1")
