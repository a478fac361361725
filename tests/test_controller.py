"""The HuggingGPT-style controller against a loopback server that speaks the chat-completions API.

The server knows each synthetic prompt's domain and answers it in the ways real LLMs do (plainly, with
chatter, in capitals, misspelt, after a reasoning block) or not at all (refusals); some requests first
fail (HTTP 500, a malformed body, a reply slower than the time-out) and succeed when retried.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import polars as pl
import pytest

from cmrbench.baselines.chat import ChatClient, ChatSettings
from cmrbench.baselines.controller import ControllerError, ControllerRouter, parse_domain
from cmrbench.cli import main
from cmrbench.data import Benchmark
from cmrbench.harness import evaluate

DOMAINS = ["Computer Vision Image Classification", "Computer Vision Zero-Shot Image Classification",
           "Natural Language Processing Translation", "Audio Automatic Speech Recognition"]


@pytest.mark.parametrize("answer, expected", [
    ("Natural Language Processing Translation", ("Natural Language Processing Translation", "exact")),
    ("  natural language processing translation.\n", ("Natural Language Processing Translation", "exact")),
    ("Domain: **Audio Automatic Speech Recognition**", ("Audio Automatic Speech Recognition", "exact")),
    ("<think>Image classification? No, speech.</think>\nAudio Automatic Speech Recognition",
     ("Audio Automatic Speech Recognition", "exact")),
    ("Sure! This is Computer Vision Zero-Shot Image Classification, I think.",
     ("Computer Vision Zero-Shot Image Classification", "contained")),       # the longest name wins
    ("Computer Vision Image Clasification", ("Computer Vision Image Classification", "fuzzy")),
    ("I cannot help with that.", (None, "unparseable")),
    ("<think>It could be Natural Language Processing Translation, or", (None, "unparseable")),   # cut short
    ("", (None, "unparseable")),
])
def test_parse_domain(answer, expected):
    assert parse_domain(answer, DOMAINS) == expected


# ------------------------------------------------------------------------------------ the loopback server

class Endpoint:
    """A chat-completions server for the synthetic hub's prompts; records what it was sent."""

    STYLES = ("plain", "chatter", "capitals", "misspelt", "reasoning", "refusal")

    def __init__(self, domain_of: dict[str, str]):
        self.domain_of = domain_of
        self.prompts = sorted(domain_of)
        self.requests: list[dict] = []
        self.failures_left: dict[str, list[str]] = {}      # prompt -> failures to give before answering
        for i, prompt in enumerate(self.prompts):
            if i % 7 == 1:
                self.failures_left[prompt] = ["500"]
            elif i % 7 == 3:
                self.failures_left[prompt] = ["malformed", "slow"]
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def style(self, prompt: str) -> str:
        return self.STYLES[self.prompts.index(prompt) % len(self.STYLES)]

    def answer(self, prompt: str) -> str:
        domain = self.domain_of[prompt]
        return {"plain": domain, "chatter": f"Sure! The request belongs to {domain}.", "capitals": domain.upper(),
                "misspelt": domain[:-3] + domain[-2:], "reasoning": f"<think>Let me see.</think>\n{domain}",
                "refusal": "I am not able to classify this request."}[self.style(prompt)]

    def _handler(self):
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint.lock:
                    endpoint.requests.append(body)
                if self.path != "/v1/chat/completions" or body["model"] != "loopback-llm":
                    return self._send(404, {"error": {"message": f"model {body['model']!r} does not exist"}})
                text = body["messages"][0]["content"]
                prompt = text.split("###Instruction:\n", 1)[1].rsplit("\n\n###Response:", 1)[0]
                with endpoint.lock:
                    pending = endpoint.failures_left.get(prompt) or []
                    failure = pending.pop(0) if pending else None
                if failure == "500":
                    return self._send(500, {"error": "overloaded"})
                if failure == "malformed":
                    return self._send(200, {"choices": []})
                if failure == "slow":
                    time.sleep(1.5)
                self._send(200, {"choices": [{"message": {"role": "assistant", "content": endpoint.answer(prompt)}}]})

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):   # the client timed out and left
                    pass

        return Handler

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def endpoint(synthetic_hub):
    bench = Benchmark(synthetic_hub)
    frames = [bench.test_set(j) for j in range(1, bench.n_experiences + 1)]
    domain_of = dict(pl.concat(frames).select("prompt", "domain").rows())
    server = Endpoint(domain_of)
    yield server
    server.close()


def controller(endpoint, tmp_path, **kw):
    args = {"base_url": endpoint.url, "model": "loopback-llm", "tie_break": "frequency", "timeout": 0.5,
            "backoff": 0.01, "retries": 3, "concurrency": 4, "cache": str(tmp_path / "replies.sqlite"), **kw}
    return ControllerRouter(**args)


def test_controller_routes_by_the_domain_the_llm_names(endpoint, synthetic_hub, tmp_path):
    router = controller(endpoint, tmp_path)
    res = evaluate(router, Benchmark(synthetic_hub), tmp_path / "runs", progress=False)
    assert res.status == "complete" and res.router.parameters["level"] == "domain"
    stats = res.router.statistics
    # every prompt was answered; refusals are counted, not fatal; failed attempts were retried
    assert stats["failed"] == 0 and stats["answers"] == sum(stats[k] for k in
                                                             ("exact", "contained", "fuzzy", "unparseable"))
    assert stats["unparseable"] > 0 and stats["fuzzy"] > 0 and stats["contained"] > 0
    # the server saw the domains seen so far, never a later one, with the paper's sampling settings
    first = endpoint.requests[0]
    assert first["temperature"] == 0.6 and first["top_p"] == 0.95 and "###Possible_domains" in \
        first["messages"][0]["content"]
    # every parsed answer puts a model of its domain first: domain accuracy is that of the parsed answers
    preds = pl.read_parquet(tmp_path / "runs" / res.predictions_file)
    last = preds.filter(pl.col("after_experience") == 3)
    bench = Benchmark(synthetic_hub)
    gold = pl.concat([bench.test_set(j) for j in (1, 2, 3)]).join(last, on="prompt_id")
    domains = dict(bench.label_registry(3).domains.items())
    for prompt, domain, ids in gold.select("prompt", "domain", "model_ids").rows():
        if endpoint.style(prompt) != "refusal":
            assert domain in domains[ids[0]], prompt

    # a rerun sends no request: every answer comes from the cache, the predictions are the same
    sent = len(endpoint.requests)
    again = controller(endpoint, tmp_path)
    res2 = evaluate(again, Benchmark(synthetic_hub), tmp_path / "runs2", progress=False)
    assert len(endpoint.requests) == sent and again.client.sent == 0
    assert res2.router.statistics["cached"] == res2.router.statistics["answers"]
    assert res2.matrices == res.matrices


def test_prototype_tie_break_and_checkpoints(endpoint, synthetic_hub, tmp_path):
    bench = Benchmark(synthetic_hub)
    router = controller(endpoint, tmp_path, tie_break="prototype")
    router.learn(bench.train_stream[0])
    prompts = bench.test_set(1)["prompt"].to_list()[:6]
    ranked = router.route(prompts, 5)
    router.save(tmp_path / "ckpt")
    fresh = controller(endpoint, tmp_path, tie_break="prototype")
    fresh.load(tmp_path / "ckpt")
    assert fresh.route(prompts, 5) == ranked
    assert fresh.meta.statistics["answers"] == 2 * len(prompts)        # statistics survive a resume
    # scores: the chosen domain's models first (score >= 1), each group in the prototype order
    for row in ranked:
        assert all(a[1] >= b[1] for a, b in zip(row, row[1:]))
    assert not router.meta.zero_shot


def test_an_unreachable_endpoint_or_unknown_model_stops_with_the_reason(endpoint, synthetic_hub, tmp_path):
    bench = Benchmark(synthetic_hub)
    wrong_model = controller(endpoint, tmp_path, model="no-such-model", retries=3)
    wrong_model.learn(bench.train_stream[0])
    before = len(endpoint.requests)
    with pytest.raises(ControllerError, match="no-such-model.*HTTP 404"):
        wrong_model.route(["translate this sentence"], 3)
    assert len(endpoint.requests) - before == 1             # a 404 is not retried

    down = controller(endpoint, tmp_path, base_url="http://127.0.0.1:9/v1", retries=1)
    down.learn(bench.train_stream[0])
    with pytest.raises(ControllerError, match=r"127\.0\.0\.1:9"):
        down.route(["translate this sentence"], 3)
    assert main(["evaluate", "--data", str(synthetic_hub), "--router", "controller",
                 "--out", str(tmp_path / "cli"), "--no-progress"]) == 1      # no endpoint given: one clear line


def test_client_retries_then_caches(endpoint, tmp_path):
    prompt = next(p for p, f in endpoint.failures_left.items() if f == ["malformed", "slow"])
    client = ChatClient(ChatSettings(base_url=endpoint.url, model="loopback-llm", timeout=0.5, backoff=0.01),
                        cache=tmp_path / "c.sqlite")
    messages = [{"role": "user", "content": f"###Instruction:\n{prompt}\n\n###Response:\n"}]
    reply = client.complete(messages, seed=1)
    assert reply.text == endpoint.answer(prompt) and reply.attempts == 3 and not reply.cached
    assert client.complete(messages, seed=1).cached and client.sent == 3
    assert not client.complete(messages, seed=2).cached             # another seed is another request
    no_retry = ChatClient(ChatSettings(base_url=endpoint.url, model="loopback-llm", retries=0, timeout=0.5),
                          cache=False)
    assert no_retry.complete(messages, seed=1).text is not None      # answered before: the server is ready now
    assert np.isclose(client.settings.temperature, 0.6)


def test_statistics_reach_the_results_under_isolation(endpoint, synthetic_hub, tmp_path):
    args = [f"base_url={endpoint.url}", "model=loopback-llm", "tie_break=model-id", "timeout=0.5", "backoff=0.01",
            f"cache={tmp_path / 'replies.sqlite'}"]
    assert main(["evaluate", "--data", str(synthetic_hub), "--router", "controller", "--isolate", "--no-progress",
                 "--out", str(tmp_path), *[x for a in args for x in ("--router-arg", a)]]) == 0
    results = json.loads(next(tmp_path.glob("controller__*.json")).read_text())
    assert results["isolation"] == "process" and results["router"]["zero_shot"]
    assert results["router"]["statistics"]["answers"] == 16 * (1 + 2 + 3)     # each test set after each experience
