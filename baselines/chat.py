"""A client for any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp server, Ollama, OpenAI).

Written on the standard library so that no extra is needed. What a benchmark run needs from it:

* **concurrency**: requests run on a thread pool (``concurrency`` at once);
* **retries with back-off**: connection errors, time-outs, HTTP 429 / 5xx and malformed bodies are retried
  ``retries`` times, waiting ``backoff * 2**attempt`` seconds (with a little seeded jitter); other HTTP
  errors (401, 404: a wrong key or model name) fail at once, since retrying cannot fix them;
* **a response cache**: every successful answer is stored in SQLite under a key made of the model name, the
  messages and the sampling settings (not the URL: the same model served elsewhere answers alike), so
  a rerun or a resumed run sends no request it has already sent.

A request that still fails gives a :class:`Reply` with ``error`` set; the caller decides what that means.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Reply:
    text: str | None             # the assistant message, None when the request failed
    error: str | None = None     # why it failed, after every retry
    cached: bool = False
    attempts: int = 0


@dataclass
class ChatSettings:
    base_url: str                              # e.g. http://localhost:8000/v1 (the part before /chat/completions)
    model: str
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 2048
    timeout: float = 120.0                     # seconds per request
    retries: int = 4
    backoff: float = 1.0                       # seconds before the first retry
    concurrency: int = 8
    api_key: str | None = None                 # default: $CMRBENCH_CHAT_API_KEY, else $OPENAI_API_KEY
    extra_body: dict[str, Any] = field(default_factory=dict)   # e.g. {"chat_template_kwargs": {...}}

    def sampling(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens,
                **self.extra_body}


class ResponseCache:
    """Answers by request key, in one SQLite file shared by threads (and by processes, through SQLite)."""

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self._db = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=60)
            self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, text TEXT NOT NULL)")
            self._db.commit()

    def get(self, key: str) -> str | None:
        if self._db is None:
            return None
        with self._lock:
            row = self._db.execute("SELECT text FROM replies WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key: str, text: str) -> None:
        if self._db is None:
            return
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO replies (key, text) VALUES (?, ?)", (key, text))
            self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def default_cache_path() -> Path:
    root = Path(os.environ.get("CMRBENCH_CACHE") or Path.home() / ".cache" / "cmrbench")
    return root / "chat" / "replies.sqlite"


class ChatClient:
    """Sends chat requests concurrently, with retries and a response cache (see the module docstring)."""

    def __init__(self, settings: ChatSettings, cache: Path | None | bool = None, seed: int = 0):
        self.settings = settings
        self.cache = ResponseCache(default_cache_path() if cache in (None, True) else (cache or None))
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        self.seed = int(seed)
        self.sent = 0                    # HTTP requests actually sent (cache hits send none)

    def key(self, messages: Sequence[dict[str, str]], seed: int) -> str:
        payload = {"model": self.settings.model, "messages": list(messages), "seed": seed,
                   **self.settings.sampling()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def _post(self, body: bytes) -> str:
        headers = {"Content-Type": "application/json"}
        key = self.settings.api_key or os.environ.get("CMRBENCH_CHAT_API_KEY") or os.environ.get("OPENAI_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.settings.timeout) as response:
            raw = response.read()
        try:
            data = json.loads(raw)
            text = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise MalformedResponse(f"not a chat-completions answer ({type(err).__name__}): {raw[:200]!r}") from None
        if not isinstance(text, str):
            raise MalformedResponse(f"message content is {type(text).__name__}, not text")
        return text

    def complete(self, messages: Sequence[dict[str, str]], seed: int) -> Reply:
        """One request (from the cache when it was answered before)."""
        key = self.key(messages, seed)
        hit = self.cache.get(key)
        if hit is not None:
            return Reply(hit, cached=True)
        s = self.settings
        body = json.dumps({"model": s.model, "messages": list(messages), "seed": seed, **s.sampling()}).encode()
        jitter = random.Random(f"{self.seed}:{key}")
        error = ""
        for attempt in range(s.retries + 1):
            if attempt:
                time.sleep(s.backoff * 2 ** (attempt - 1) * (1 + 0.25 * jitter.random()))
            try:
                self.sent += 1
                text = self._post(body)
            except urllib.error.HTTPError as err:
                error = f"HTTP {err.code} from {self.url}: {_body_of(err)}"
                if err.code not in RETRYABLE_STATUS:
                    return Reply(None, error, attempts=attempt + 1)
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, MalformedResponse) as err:
                error = f"{type(err).__name__} from {self.url}: {getattr(err, 'reason', err)}"
            else:
                self.cache.put(key, text)
                return Reply(text, attempts=attempt + 1)
        return Reply(None, error, attempts=s.retries + 1)

    def complete_many(self, conversations: Sequence[Sequence[dict[str, str]]], seeds: Sequence[int]) -> list[Reply]:
        """Every conversation's reply, in order; ``concurrency`` requests at a time."""
        workers = max(1, min(int(self.settings.concurrency), len(conversations) or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(self.complete, conversations, seeds))


class MalformedResponse(ValueError):
    """The endpoint answered 200 with a body that is not a chat completion."""


def _body_of(err: urllib.error.HTTPError) -> str:
    try:
        return err.read()[:200].decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the body is only for the message
        return ""
