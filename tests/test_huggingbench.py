"""HuggingBench builders: the live pipeline against a loopback Hub + LLM server, and the offline release.

No test here touches the network: a ``http.server`` on 127.0.0.1 plays both the Hugging Face Hub
(``/api/models``, ``/api/models/<id>``, ``/<id>/resolve/main/README.md``) and an OpenAI-compatible
``/v1/chat/completions`` endpoint with canned answers.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from collections import Counter
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from cmrbench.builders.huggingbench import generate, llm, pipeline, release, scrape, split
from cmrbench.builders.records import Quarantine
from cmrbench.sources import SOURCES_ENV, SourceResolver

pytestmark = pytest.mark.network_free


def _mirror() -> Path:
    return Path(os.environ.get(SOURCES_ENV) or Path(__file__).resolve().parents[2] / "shared/data/raw")


# ------------------------------------------------------------------------------ fake Hub content

def _prose(tag: str, words: int) -> str:
    """Distinct English-ish prose of exactly ``words`` words (after cleaning) for model ``tag``."""
    pool = ("the classifier reads short reviews and assigns a sentiment label with calibrated scores "
            "trained on public corpora across many domains reaching strong accuracy on held out data").split()
    out = [f"{tag}-card"] + [pool[i % len(pool)] for i in range(words - 1)]
    return " ".join(out)


FRONT = "---\nlicense: mit\ntags:\n- demo\n---\n"


def _card(tag: str, words: int, extra: str = "") -> str:
    return f"{FRONT}# {tag}\n\n{_prose(tag, words)}\n{extra}"


TC_A_CARD = _card("tc-a", 260)
TC_DUP_CARD = (TC_A_CARD.replace("# tc-a", "## tc-a") + "\n| metric | value |\n|---|---|\n| acc | 0.9 |\n"
               "![badge](https://img.shields.io/x.svg)\n<!-- note -->\n")
CODE_BLOCK = "```python\n" + " ".join(f"token{i}" for i in range(400)) + "\n```\n"

# (id, task listed under, downloads, createdAt or None, pipeline_tag, card or None)
MODELS = [
    ("org/old-popular", "text-classification", 10000, "2020-01-01T00:00:00.000Z", "text-classification",
     _card("old", 300)),
    ("org/tc-a", "text-classification", 9000, "2024-09-01T00:00:00.000Z", "text-classification", TC_A_CARD),
    ("legacy/bert-old", "text-classification", 8500, "2021-01-01T00:00:00.000Z", "text-classification",
     _card("bert-old", 600)),
    ("org/tc-autogen", "text-classification", 8000, "2024-10-01T00:00:00.000Z", "text-classification",
     _card("autogen", 300, "\n<!-- This model card has been generated automatically according to the information "
                           "the Trainer had access to. You should probably proofread and complete it. -->\n")),
    ("org/tc-template", "text-classification", 7900, "2024-10-05T00:00:00.000Z", "text-classification",
     _card("template", 300, "\n## Uses\n[More Information Needed]\n## Bias\n[More Information Needed]\n"
                            "## Training\n[More Information Needed]\n")),
    ("org/tc-short", "text-classification", 7000, "2024-11-01T00:00:00.000Z", "text-classification",
     _card("short", 50, CODE_BLOCK)),
    ("org/tc-b", "text-classification", 6000, "2025-01-10T00:00:00.000Z", "text-classification", _card("tc-b", 250)),
    ("org/tc-dup", "text-classification", 5000, "2025-02-01T00:00:00.000Z", "text-classification", TC_DUP_CARD),
    ("org/tc-omni", "text-classification", 4500, "2025-01-01T00:00:00.000Z", "any-to-any", _card("omni", 300)),
    ("org/tc-nocard", "text-classification", 4000, "2025-03-01T00:00:00.000Z", "text-classification", None),
    ("org/tc-c", "text-classification", 3000, None, "text-classification", _card("tc-c", 250)),
    ("org/tc-none", "text-classification", 2500, "2025-04-15T00:00:00.000Z", "text-classification",
     _card("tc-none", 250)),
    ("org/tc-e", "text-classification", 2200, "2025-04-20T00:00:00.000Z", "text-classification", _card("tc-e", 250)),
    ("legacy/short-old", "text-classification", 2100, "2021-02-01T00:00:00.000Z", "text-classification",
     _card("short-old", 300)),
    ("org/tc-known-new", "text-classification", 2050, "2025-09-01T00:00:00.000Z", "text-classification",
     _card("known-new", 600)),
    ("org/tc-other", "text-classification", 2020, "2025-01-01T00:00:00.000Z", "text-generation", _card("other", 300)),
    ("org/tc-f", "text-classification", 1000, "2025-05-01T00:00:00.000Z", "text-classification", _card("tc-f", 250)),
    ("art/t2i-a", "text-to-image", 9000, "2024-12-01T00:00:00.000Z", "text-to-image", _card("t2i-a", 250)),
    ("art/t2i-b", "text-to-image", 8000, "2025-06-01T00:00:00.000Z", "text-to-image", _card("t2i-b", 250)),
    ("art/t2i-c", "text-to-image", 7000, "2025-09-01T00:00:00.000Z", "text-to-image", _card("t2i-c", 250)),
    ("art/t2i-zh", "text-to-image", 6000, "2025-03-01T00:00:00.000Z", "text-to-image", _card("t2i-zh", 250)),
    ("art/t2i-short", "text-to-image", 5500, "2025-04-01T00:00:00.000Z", "text-to-image", _card("t2i-short", 250)),
    ("legacy/sd-old", "text-to-image", 5000, "2022-06-01T00:00:00.000Z", "text-to-image", _card("sd-old", 600)),
]
CREATED_BY_INFO = {"org/tc-c": "2025-04-01T00:00:00.000Z"}
KNOWN = ["legacy/bert-old", "legacy/short-old", "legacy/sd-old", "org/tc-known-new"]
TASKS = ["text-classification", "text-to-image", "any-to-any"]
SELECTED_RECENT = {"org/tc-a", "org/tc-b", "org/tc-c", "org/tc-none", "org/tc-e", "art/t2i-a", "art/t2i-b",
                   "art/t2i-c", "art/t2i-zh", "art/t2i-short"}
SELECTED_LEGACY = {"legacy/bert-old", "legacy/sd-old"}
KEPT_AFTER_FILTER = {"org/tc-a", "org/tc-b", "org/tc-c", "art/t2i-a", "art/t2i-b", "art/t2i-c",
                     "legacy/bert-old", "legacy/sd-old"}

SUBJECTS = ["lighthouse", "harbour", "orchard", "glacier", "bazaar", "vineyard", "canyon", "meadow", "volcano",
            "library", "market", "station", "cathedral", "reef", "desert", "island", "forest", "bridge", "castle",
            "garden", "temple", "valley"]


def _description(model_id: str) -> str:
    if model_id == "org/tc-none":
        return "None"
    if model_id == "org/tc-e":
        return _description("org/tc-a")  # a duplicate of a more downloaded model's description
    if model_id == "art/t2i-short":
        return "Makes pictures from text."
    text = (f"{model_id} turns requests into results. " + "It was trained on a broad public collection and "
            "reports strong scores on standard benchmarks, with clear notes on its limits and licence. " * 6)
    return text + ("支持中文提示。" if model_id == "art/t2i-zh" else "")


def _queries(model_id: str) -> list[str]:
    stem = model_id.split("/")[1]
    out = [f"Please handle request {i} about the {SUBJECTS[i]} for my {stem.replace('-', ' ')} project"
           for i in range(20)]
    if model_id == "org/tc-b":
        out[3] = "Which model should I pick to label these reviews?"
        out[7] = "Run tc-b on this paragraph about the harbour"
    if model_id == "org/tc-a":
        out[5] = "Sort these customer reviews using their overall tone"  # "using" is allowed
    if model_id in ("org/tc-c", "art/t2i-a"):
        out[0] = "Describe the mood of a rainy harbour at dusk"  # the same query for two models
    return out


class FakeServer:
    """Hub + chat endpoint on loopback, with request logs and switchable failures."""

    def __init__(self):
        self.hub_requests: list[str] = []
        self.llm_requests: list[dict] = []
        self.fail_generation_for: set[str] = set()
        self.flaky_left = 1
        self.seen: Counter = Counter()
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body=b"", headers=None):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _hub(self):
                with fake.lock:
                    fake.hub_requests.append(f"{self.command} {self.path}")
                url = urlparse(self.path)
                if url.path == "/api/models":
                    q = parse_qs(url.query)
                    assert q["sort"] == ["downloads"]
                    task = q["filter"][0]
                    items = [{"id": m, "modelId": m, "downloads": d, "likes": 0, "private": False, "tags": [t, p],
                              "pipeline_tag": p, **({"createdAt": c} if c else {})}
                             for m, t, d, c, p, _ in MODELS if t == task][: int(q["limit"][0])]
                    return self._send(200, json.dumps(items).encode(), {"Content-Type": "application/json"})
                if url.path.startswith("/api/models/"):
                    model_id = url.path[len("/api/models/"):]
                    m = next(m for m in MODELS if m[0] == model_id)
                    info = {"id": m[0], "modelId": m[0], "downloads": m[2], "pipeline_tag": m[4], "tags": [],
                            "createdAt": m[3] or CREATED_BY_INFO[m[0]], "private": False}
                    return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})
                if url.path.endswith("/resolve/main/README.md"):
                    model_id = url.path[1:-len("/resolve/main/README.md")]
                    card = next((m[5] for m in MODELS if m[0] == model_id), None)
                    if card is None:
                        return self._send(404, b'{"error":"Entry not found"}', {"X-Error-Code": "EntryNotFound"})
                    body = card.encode()
                    return self._send(200, body, {"X-Repo-Commit": "c" * 40, "ETag": f'"{abs(hash(card))}"',
                                                  "Content-Type": "text/plain"})
                return self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"})

            do_GET = do_HEAD = _hub

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.llm_requests.append({**body, "_auth": self.headers.get("Authorization")})
                assert self.path == "/v1/chat/completions"
                if body["model"] == "flaky" and fake.flaky_left:
                    fake.flaky_left -= 1
                    return self._send(429, b"slow down", {"Retry-After": "0"})
                if body["model"] == "bad-request":
                    return self._send(400, b'{"error": "no such model"}')
                content = body["messages"][-1]["content"]
                model_id = max((m[0] for m in MODELS if m[0] in content), key=len, default="?")
                with fake.lock:
                    fake.seen[(model_id, "queries" if '"queries"' in content else "clean")] += 1
                    n = fake.seen[(model_id, "queries" if '"queries"' in content else "clean")]
                if '"model_description"' in content:
                    answer = json.dumps({"model_description": _description(model_id)}, ensure_ascii=False)
                    if model_id == "org/tc-c":  # a thinking block and a code fence around the JSON
                        answer = f"<think>short</think>\n```json\n{answer}\n```"
                elif '"queries"' in content:
                    if model_id in fake.fail_generation_for:
                        return self._send(500, b"internal error")
                    if model_id == "art/t2i-c" and n == 1:
                        answer = '{"queries": ["unterminated'  # malformed once, fine on the retry
                    elif model_id == "art/t2i-b":
                        answer = json.dumps({"queries": _queries(model_id)[:19]})  # always one short
                    else:
                        answer = json.dumps({"queries": _queries(model_id)})
                else:
                    answer = "plain text, no JSON here"
                payload = {"id": "x", "object": "chat.completion", "model": body["model"],
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                        "finish_reason": "stop"}]}
                return self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def clear(self):
        self.hub_requests.clear()
        self.llm_requests.clear()


@pytest.fixture
def server(monkeypatch):
    from huggingface_hub import constants
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read at import time; the Hub here is loopback
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("CMRBENCH_LLM_API_KEY", "test-key")
    fake = FakeServer()
    fake.thread.start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


def _config(server: FakeServer, out: Path, seed: int = 3) -> pipeline.HuggingBenchConfig:
    return pipeline.HuggingBenchConfig(
        out_dir=out, llm_base_url=f"{server.url}/v1", llm_model="fake-qwen", hf_endpoint=server.url, hf_token=False,
        recent_after=date(2024, 8, 1), legacy_before=date(2025, 8, 1), seed=seed, disable_progress=True,
        tasks=TASKS, known_ids=KNOWN, per_task=5, llm_max_retries=1, llm_backoff=0.0,
        move_models=1, legacy_to_e3=1)


# ------------------------------------------------------------------------------ unit rules

def test_card_cleaning_and_auto_generated_rule():
    assert scrape.clean_card_text(TC_DUP_CARD) == scrape.clean_card_text(TC_A_CARD)
    # heading + prose; the code block does not count
    assert scrape.card_word_count(scrape.clean_card_text(_card("short", 50, CODE_BLOCK))) == 51
    assert scrape.card_word_count(scrape.clean_card_text(FRONT + "a [link](http://x.y/z)\n| b | c |\n")) == 2
    assert scrape.is_auto_generated("This model card has been automatically generated.")
    assert scrape.is_auto_generated("## A\n[More Information Needed]\n## B\n[More Information Needed]\n"
                                    "## C\n[More Information Needed]")
    assert not scrape.is_auto_generated("## A\n[More Information Needed]\nA real description of the weights.")
    assert scrape.to_ms(date(2024, 8, 1)) == 1722470400000
    assert scrape.to_ms("2024-08-01T00:00:00Z") == 1722470400000


def test_forbidden_terms_and_query_validation():
    assert generate.forbidden_terms("Which MODEL fits?", "a/b") == ["model"]
    assert generate.forbidden_terms("Call the APIs and tools", "a/b") == ["apis", "tools"]
    assert generate.forbidden_terms("Try org/net-x please", "org/net-x") == ["org/net-x"]
    assert generate.forbidden_terms("Is net-x good?", "org/net-x") == ["net-x"]
    assert generate.forbidden_terms("Sort them using tone; the user modelled it", "org/net-x") == []
    accepted, rejected = generate.validate_queries({"queries": _queries("org/tc-b")}, "org/tc-b")
    assert len(accepted) == 18 and [r["terms"] for r in rejected] == [["model"], ["tc-b"]]
    with pytest.raises(generate.QueryValidationError, match="org/tc-b.*exactly 20"):
        generate.validate_queries({"queries": _queries("org/tc-b")[:19]}, "org/tc-b")
    with pytest.raises(generate.QueryValidationError, match="non-empty string"):
        generate.validate_queries({"queries": [""] + _queries("x/y")[1:]}, "x/y")
    kept = generate.filter_descriptions([{"id": m, "downloads": i, "description": _description(m)} for i, m in
                                         enumerate(["org/tc-e", "org/tc-a", "org/tc-none", "art/t2i-zh",
                                                    "art/t2i-short"])], stats := Counter())
    assert [k["id"] for k in kept] == ["org/tc-a"]
    assert stats == {"duplicate description": 1, "empty description": 1, "description has Chinese characters": 1,
                     "description too short": 1}
    assert "{{" not in generate.render(generate.load_prompt("generate_queries"), model_id="a/b", task="t",
                                       description="d", n=20)


def test_llm_client_retries_and_errors(server):
    sleeps = []
    client = llm.ChatClient(f"{server.url}/v1", "flaky", backoff=0.0, max_retries=2, sleep=sleeps.append)
    assert client.complete_json([{"role": "user", "content": '"model_description" org/tc-a'}],
                                subject="org/tc-a")["model_description"].startswith("org/tc-a")
    assert client.requests_made == 2 and sleeps == [0.0]
    assert server.llm_requests[-1]["_auth"] == "Bearer test-key"
    with pytest.raises(llm.LLMError, match="HTTP 400"):
        llm.ChatClient(f"{server.url}/v1", "bad-request", backoff=0.0).complete([{"role": "user", "content": "x"}])
    with pytest.raises(llm.LLMOutputError, match="model 'org/x'"):
        llm.ChatClient(f"{server.url}/v1", "m").complete_json([{"role": "user", "content": "hi"}], subject="org/x")
    with pytest.raises(llm.LLMError, match="cannot reach"):
        llm.ChatClient("http://127.0.0.1:9/v1", "m", max_retries=1, backoff=0.0, timeout=2,
                       sleep=lambda s: None).complete([{"role": "user", "content": "x"}])


def test_split_rules_and_determinism():
    rows = []
    for i in range(200):
        rows += [{"model_id": f"r/{i:03d}", "instruction": f"q{j} of r{i}", "created_at": 1_700_000_000_000 + i * 1000,
                  "legacy": False} for j in range(20)]
    for i in range(100):
        rows += [{"model_id": f"l/{i:03d}", "instruction": f"q{j} of l{i}", "created_at": 1_600_000_000_000,
                  "legacy": True} for j in range(15)]
    rows += [{"model_id": "r/tiny", "instruction": f"t{j}", "created_at": 1_800_000_000_000, "legacy": False}
             for j in range(9)]
    stats: Counter = Counter()
    a = split.build_experiences(rows, seed=7, stats=stats)
    assert a == split.build_experiences(list(reversed(rows)), seed=7)
    assert a != split.build_experiences(rows, seed=8)
    assert stats["models with prompts moved to E4"] == 60 and stats["legacy models in E3"] == 70
    assert stats["legacy models in E4"] == 30 and stats["E4 models dropped (< 10 prompts)"] == 1
    groups = Counter((r["experience"], r["model_id"], r["split"]) for r in a)
    sizes = Counter((r["experience"], r["model_id"]) for r in a)
    assert min(sizes.values()) >= 10
    e3 = {m for e, m in sizes if e == 3}
    e4 = {m for e, m in sizes if e == 4}
    moved = {m for m in e3 & e4 if m.startswith("r/")}
    assert len(moved) == 60 and all(sizes[(4, m)] == 10 and sizes[(3, m)] == 10 for m in moved)
    # 201 recent models: the median is r/100's date, and models created on or before it form E3
    assert {m for m in e3 if m.startswith("r/")} == {f"r/{i:03d}" for i in range(101)}
    for (e, m), n in sizes.items():
        assert (groups[(e, m, "val")], groups[(e, m, "test")]) == {10: (1, 1), 15: (2, 2), 20: (2, 2)}[n]


# ------------------------------------------------------------------------------ end to end

def test_pipeline_end_to_end_and_resume(server, tmp_path):
    out = pipeline.run_pipeline(_config(server, tmp_path / "hb"))
    cache = out / "cache"
    models = {json.loads(line)["id"]: json.loads(line) for line in (cache / "1-models.jsonl").open()}
    assert {m for m, r in models.items() if not r["legacy"]} == SELECTED_RECENT
    assert {m for m, r in models.items() if r["legacy"]} == SELECTED_LEGACY
    assert models["org/tc-c"]["created_at"] == scrape.to_ms("2025-04-01T00:00:00Z")  # from model info
    stats = json.loads((out / "stats.json").read_text())["steps"]
    assert stats["1-models"] == {
        "any-to-any model": 1, "auto-generated card": 2, "card too short": 2, "created before the recent cut-off": 1,
        "duplicate card": 1, "known model outside the legacy window": 1,
        "listed under another task than its pipeline tag": 1, "metadata fetched separately": 1,
        "no model card": 1, "beyond the per-task cap": 1, "selected legacy models": 2, "selected recent models": 10,
        "task skipped: any-to-any": 1}
    assert stats["2-descriptions"] == {"llm_calls": 12, "unusable LLM answer": 0}
    assert {json.loads(line)["id"] for line in (cache / "3-filtered.jsonl").open()} == KEPT_AFTER_FILTER
    assert stats["3-filtered"] == {"description has Chinese characters": 1, "description too short": 1,
                                   "duplicate description": 1, "empty description": 1, "kept": 8,
                                   "no description (unusable LLM answer)": 0}
    assert stats["4-generations"] == {"llm_calls": 10, "models without a valid answer": 1,
                                      "queries accepted": 138, "queries rejected (forbidden word or model id)": 2}
    assert stats["5-queries"] == {"duplicate query": 1, "rows": 137}
    gen_requests = [r for r in server.llm_requests if '"queries"' in r["messages"][-1]["content"]]
    assert {(r["temperature"], r["top_p"]) for r in gen_requests} == {(0.6, 0.9)}
    assert all(r["chat_template_kwargs"] == {"enable_thinking": False} and r["model"] == "fake-qwen"
               for r in server.llm_requests)

    rows = [json.loads(line) for line in (cache / "6-experiences.jsonl").open()]
    assert all(not generate.forbidden_terms(r["instruction"], r["model_id"]) for r in rows)
    sizes = Counter((r["experience"], r["model_id"]) for r in rows)
    assert min(sizes.values()) >= 10
    legacy_exp = {r["model_id"]: r["experience"] for r in rows if r["legacy"]}
    assert sorted(legacy_exp.values()) == [3, 4]
    assert {m for e, m in sizes if e == 4} >= {"org/tc-c", "art/t2i-c"}  # the newer half
    moved = [m for e, m in sizes if e == 4 and m in {"org/tc-a", "art/t2i-a", "org/tc-b"}]
    assert len(moved) == 1 and sizes[(4, moved[0])] == 10
    queries = [json.loads(line) for line in (cache / "5-queries.jsonl").open()]
    assert rows == split.build_experiences(queries, seed=3, move_models=1, legacy_to_e3=1)

    # the release layout: loadable by the offline reader, every row accounted for
    q = Quarantine()
    loaded = [r for exp in (3, 4) for s in ("train", "val", "test")
              for r in release.generation_rows(out / "raw" / f"exp{exp}" / f"exp{exp}-{s}.jsonl", f"exp{exp}-{s}",
                                               s, q)]
    assert len(loaded) == len(rows) and not q.rows
    assert {r["domain"] for r in loaded} == {"Natural Language Processing Text Classification",
                                             "Computer Vision Text-to-Image"}

    # resume: a second run makes no request at all and changes nothing
    before = {p.name: p.read_bytes() for p in cache.glob("*.jsonl")}
    server.clear()
    pipeline.run_pipeline(_config(server, tmp_path / "hb"))
    assert server.llm_requests == [] and server.hub_requests == []
    assert {p.name: p.read_bytes() for p in cache.glob("*.jsonl")} == before


def test_pipeline_resumes_after_a_crash(server, tmp_path):
    server.fail_generation_for = {"org/tc-b"}
    with pytest.raises(llm.LLMError, match="HTTP 500"):
        pipeline.run_pipeline(_config(server, tmp_path / "hb"))
    cache = tmp_path / "hb" / "cache"
    assert (cache / "2-descriptions.jsonl").exists() and not (cache / "4-generations.jsonl").exists()
    assert len((cache / "4-generations.partial.jsonl").read_text().splitlines()) == 6  # models before tc-b
    server.fail_generation_for = set()
    server.clear()
    pipeline.run_pipeline(_config(server, tmp_path / "hb"))
    assert server.hub_requests == []
    assert [(r["messages"][-1]["content"].count("org/tc-b") > 0) for r in server.llm_requests] == [True, False]
    assert not (cache / "4-generations.partial.jsonl").exists()
    assert json.loads((tmp_path / "hb" / "stats.json").read_text())["steps"]["5-queries"]["rows"] == 137


def test_pipeline_refuses_hub_offline_mode(monkeypatch, tmp_path):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    config = pipeline.HuggingBenchConfig(out_dir=tmp_path, llm_base_url="http://127.0.0.1:9/v1", tasks=TASKS,
                                         known_ids=KNOWN, disable_progress=True)
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        pipeline.run_pipeline(config)


def test_default_tasks_and_known_ids_come_from_the_release(tmp_path):
    if not (_mirror() / pipeline.TASKS_KEY).is_file():
        pytest.skip("the CMR release is not in the source mirror")
    config = pipeline.HuggingBenchConfig(out_dir=tmp_path, llm_base_url="x", sources=str(_mirror()))
    tasks, known = pipeline._inputs(config)
    assert len(tasks) == 45 and "fill-mask" in tasks and "any-to-any" in tasks
    assert len(known) == 1213 and "stabilityai/stable-diffusion-2-base" in known


def test_cli_registration(tmp_path):
    parser = argparse.ArgumentParser(prog="cmrbench")
    pipeline.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["huggingbench", "scrape", "--hf-endpoint", "http://127.0.0.1:1", "--llm-base-url",
                              "http://127.0.0.1:2/v1", "--llm-model", "q", "--out", str(tmp_path), "--seed", "5",
                              "--no-progress", "--tasks", "fill-mask,translation"])
    assert args.func is pipeline._run_scrape
    assert (args.seed, args.no_progress, args.tasks, args.llm_model) == (5, True, ["fill-mask", "translation"], "q")
    assert args.recent_after == date(2024, 8, 1) and args.llm_extra_body == pipeline.NO_THINKING
    with pytest.raises(SystemExit):
        parser.parse_args(["huggingbench", "scrape", "--out", str(tmp_path)])  # --llm-base-url is required


# ------------------------------------------------------------------------------ offline release

RELEASE_ROWS = {("exp3", "val"): 983, ("exp3", "test"): 984, ("exp3", "eval"): 984,
                ("exp4", "val"): 1033, ("exp4", "test"): 1033, ("exp4", "eval"): 1033}


def test_release_on_the_mirror(tmp_path):
    resolver = SourceResolver(_mirror() if _mirror().is_dir() else None, cache_dir=tmp_path, offline=True)
    if not resolver.available(release.release_key(3, "val")):
        pytest.skip("the CMR release is not in the source mirror")
    q, missing = Quarantine(), []
    frames = release.build_huggingbench_release(resolver, q, missing=missing)
    assert set(frames) == {3, 4}
    counts = {(f"exp{e}", s): n for e, df in frames.items()
              for s, n in df.group_by("upstream_split").len().iter_rows()}
    has_train = [k for k in ("cmr-release/raw/exp3/exp3-train.jsonl", "cmr-release/raw/exp4/exp4-train.jsonl")
                 if k not in missing]
    assert {k: v for k, v in counts.items() if k[1] != "train"} == RELEASE_ROWS
    assert len(has_train) == sum(1 for k in counts if k[1] == "train")
    if not has_train:  # the offline mirror: 18 x 3 + 16 x 3 lines have a null domain
        assert q.counts() == {"missing field: domain": 102}
    for exp, df in frames.items():
        assert list(df.columns) == [*release.PROMPT_SCHEMA, "upstream_split"]
        assert df["model_id"].null_count() == 0 and (df["model_id"].str.len_chars() > 0).all()
        assert df["prompt"].null_count() == 0 and df["created_at"].null_count() == 0
        assert set(df["source"]) == {"HuggingBench"} and df["modality"].null_count() == df.height
        assert df["origin"].str.starts_with(f"cmr-release/raw/exp{exp}/exp{exp}-").all()
        card = json.loads(df["card"][0])
        assert card["framework"] == "Hugging Face Transformers" and card["model_name"] == df["model_id"][0]
        assert card["api_name"] == df["model_id"][0] and card["performance"] == {"dataset": "", "accuracy": None}
    assert frames[3].filter(frames[3]["domain"] == "Audio Audio Text-to-Text").height > 0  # kept verbatim
    assert frames[3]["model_id"].n_unique() == 538 and frames[4]["model_id"].n_unique() == 565


def test_generation_rows_quarantine(tmp_path):
    good = {"index": 1, "instruction": "###Instruction:  Draw   a cat", "model_name": "a/b", "description": "d",
            "domain": "Computer Vision Text-to-Image", "created_at": "1730378160000"}
    lines = [json.dumps(good), "{broken", json.dumps([1]), json.dumps({**good, "model_name": ""}),
             json.dumps({**good, "instruction": "###Instruction:   "}), json.dumps({**good, "created_at": "soon"}),
             json.dumps({**good, "domain": None}), json.dumps({**good, "description": 3}), ""]
    path = tmp_path / "x.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    q = Quarantine()
    rows = release.generation_rows(path, "k", "val", q)
    assert [(r["prompt"], r["created_at"], r["origin"]) for r in rows] == [("Draw a cat", 1730378160000, "k:1")]
    assert sorted(r["origin"] for r in q.rows) == [f"k:{n}" for n in range(2, 9)]
    assert q.counts() == {"description is not a string": 1, "empty prompt": 1, "malformed JSON (Expecting property "
                          "name enclosed in double quotes)": 1, "missing field: domain": 1,
                          "missing field: model_name": 1, "missing or malformed created_at": 1,
                          "not a JSON object": 1}
