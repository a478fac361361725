"""A minimal OpenAI-compatible chat client (standard library only).

``POST {base_url}/chat/completions`` with a JSON body; the API key (if any) comes from an environment
variable and is sent as a bearer token. HTTP 429 and 5xx answers and network errors are retried with
exponential backoff (``Retry-After`` is honoured); other HTTP errors fail at once. Works with vLLM,
OpenAI and any server speaking the same protocol; ``base_url`` is the part before
``/chat/completions`` (e.g. ``http://localhost:8000/v1``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_API_KEY_ENV = "CMRBENCH_LLM_API_KEY"
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


class LLMError(RuntimeError):
    """The LLM endpoint could not be used (HTTP error, retries exhausted, unexpected response shape)."""


class LLMOutputError(LLMError):
    """The LLM answered, but not with what was asked for; the message names the model it was about."""

    def __init__(self, subject: str, problem: str, raw: str = ""):
        self.subject, self.problem, self.raw = subject, problem, raw
        snippet = raw.strip().replace("\n", " ")[:200]
        super().__init__(f"LLM output for model '{subject}': {problem}" + (f" (got: {snippet!r})" if raw else ""))


def parse_json_object(text: str, *, subject: str) -> dict:
    """The JSON object in an LLM answer (``<think>`` blocks and code fences tolerated)."""
    body = _THINK.sub("", text or "").strip()
    fence = _FENCE.match(body)
    if fence:
        body = fence.group(1).strip()
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        start, end = body.find("{"), body.rfind("}")
        if start < 0 or end <= start:
            raise LLMOutputError(subject, "no JSON object in the answer", text or "") from None
        try:
            obj = json.loads(body[start:end + 1])
        except json.JSONDecodeError as err:
            raise LLMOutputError(subject, f"malformed JSON ({err.msg})", text or "") from None
    if not isinstance(obj, dict):
        raise LLMOutputError(subject, f"expected a JSON object, got a JSON {type(obj).__name__}", text or "")
    return obj


@dataclass
class ChatClient:
    """Chat completions against one OpenAI-compatible endpoint and model.

    ``extra_body`` is merged into every request (e.g. ``{"chat_template_kwargs": {"enable_thinking":
    False}}`` for Qwen3 on vLLM). ``max_retries`` counts retries after the first try.
    """

    base_url: str
    model: str
    api_key_env: str = DEFAULT_API_KEY_ENV
    timeout: float = 300.0
    max_retries: int = 5
    backoff: float = 2.0
    max_backoff: float = 60.0
    extra_body: dict = field(default_factory=dict)
    sleep: Callable[[float], None] = time.sleep
    requests_made: int = 0

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        delay = min(self.max_backoff, self.backoff * 2 ** attempt)
        if retry_after:
            try:
                delay = min(self.max_backoff, max(0.0, float(retry_after)))
            except ValueError:
                pass
        self.sleep(delay)

    def complete(self, messages: list[dict], *, temperature: float | None = None, top_p: float | None = None,
                 max_tokens: int | None = None, **extra) -> str:
        """The text of the first choice."""
        body = {"model": self.model, "messages": messages, **self.extra_body, **extra}
        for name, value in (("temperature", temperature), ("top_p", top_p), ("max_tokens", max_tokens)):
            if value is not None:
                body[name] = value
        data = json.dumps(body).encode("utf-8")
        last = ""
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(self.url, data=data, headers=self._headers(), method="POST")
            self.requests_made += 1
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                    payload = resp.read()
                break
            except urllib.error.HTTPError as err:
                detail = err.read()[:500].decode("utf-8", "replace")
                last = f"HTTP {err.code} from {self.url}: {detail}"
                if err.code not in RETRY_STATUS or attempt == self.max_retries:
                    raise LLMError(last) from None
                self._wait(attempt, err.headers.get("Retry-After") if err.headers else None)
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as err:
                last = f"cannot reach {self.url}: {getattr(err, 'reason', err)}"
                if attempt == self.max_retries:
                    raise LLMError(last) from None
                self._wait(attempt, None)
        else:  # pragma: no cover - the loop always breaks or raises
            raise LLMError(last)
        try:
            answer = json.loads(payload)
            content = answer["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            raise LLMError(f"unexpected response from {self.url}: {payload[:300]!r}") from None
        if not isinstance(content, str):
            raise LLMError(f"response from {self.url} has no text content: {payload[:300]!r}")
        return content

    def complete_json(self, messages: list[dict], *, subject: str, **kwargs) -> dict:
        """:meth:`complete` parsed as a JSON object; :class:`LLMOutputError` names ``subject`` otherwise."""
        return parse_json_object(self.complete(messages, **kwargs), subject=subject)
