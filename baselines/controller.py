"""``controller``: the HuggingGPT-style router of the paper (§5): an instruction-following LLM names a domain.

Every prompt goes to an LLM behind an OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama...)
with the list of domains seen so far; the answer is parsed into one of those domains. The paper ran
Qwen3-32B through vLLM (temperature 0.6, top-p 0.95, thinking off) and reports domain accuracy only
(D 51.7). The protocol ranks models, so the router ranks the models of the chosen domain first, ordered by
a named tie-break, then every other model in that order:

* ``prototype`` (default): nearest class mean over a frozen encoder (the ``ncm`` router's prototypes);
* ``frequency``: models with more training prompts first;
* ``model-id``: id order, nothing learnt (the router is then zero-shot).

Its model- and family-level numbers are therefore those of the tie-break inside the chosen domain; the
results record ``level: domain`` and the tie-break. **Parsing**: reasoning blocks (``<think>...</think>``)
are dropped; then, in order, an exact match of the normalised answer (case, spaces, quotes, trailing
punctuation, a leading "domain:"), the longest domain named inside the answer, and the closest domain by
normalised Levenshtein similarity (>= ``snap_threshold``, 0.8 as the paper's label snapping). An answer
that matches nothing, and a request that fails after its retries, fall back to the tie-break's ranking
over all models; both are counted in ``router.statistics`` of the results, never a crash. Only when every
request of a ``route`` call fails (endpoint down, wrong model name) does the run stop, naming the
endpoint and its error. Answers are cached (:mod:`.chat`), so a rerun costs no request.

Needs an endpoint: ``--router-arg base_url=http://HOST:8000/v1 model=Qwen/Qwen3-32B thinking=false``
(or ``$CMRBENCH_CHAT_BASE_URL`` / ``$CMRBENCH_CHAT_MODEL``). Tested here against a loopback server only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cmrbench.data import Experience
from cmrbench.fileio import atomic_write_text
from cmrbench.protocol import Ranking, RouterMeta

from .chat import ChatClient, ChatSettings
from .retrieval.base import top_rankings

# The authors' domain prompt (collagelab/CMR, HuggingGPT-style baseline), one user message.
PAPER_PROMPT = ("You are given an ###Instruction\nYour task is to identify which domain it belongs to.\n\n"
                "###Possible_domains \n{domains}\n\n###Output_format\n"
                "- Return ONLY the domain name, exactly as written in the list above.\n"
                "- Do NOT include explanations or extra text.\n"
                "- If uncertain, choose the closest matching domain.\n\n"
                "###Instruction:\n{prompt}\n\n###Response:\n")
TIE_BREAKS = ("prototype", "frequency", "model-id")
OUTCOMES = ("exact", "contained", "fuzzy", "unparseable", "failed")


class ControllerError(RuntimeError):
    """The endpoint answered none of a route call's requests."""


def _normalise(text: str) -> str:
    text = text.lower().replace("_", " ")
    text = re.sub(r"[*`\"'“”‘’]", "", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"^(the )?(domain|answer|response|output)( is)?\s*[:\-]?\s*", "", text)
    return re.sub(r"[\s.,;:!?]+$", "", text)


def strip_reasoning(answer: str) -> str:
    """The answer without reasoning blocks; an unclosed ``<think>`` leaves nothing (the answer was cut)."""
    text = re.sub(r"<think>.*?</think>", " ", answer, flags=re.S | re.I)
    return text.split("<think>")[0] if "<think>" in text.lower() else text


def parse_domain(answer: str, domains: Sequence[str], snap_threshold: float = 0.8) -> tuple[str | None, str]:
    """The domain an LLM answer names, and how it was found (``exact``, ``contained``, ``fuzzy``,
    ``unparseable``)."""
    from rapidfuzz.distance import Levenshtein

    text = strip_reasoning(answer or "")
    by_norm = {_normalise(d): d for d in domains}
    lines = [_normalise(re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line)) for line in text.splitlines()]
    lines = [line for line in lines if line]
    whole = _normalise(text)
    for candidate in [whole, *lines]:
        if candidate in by_norm:
            return by_norm[candidate], "exact"
    padded = f" {re.sub(r'[^a-z0-9]+', ' ', whole)} "
    named = []
    for norm, domain in by_norm.items():
        words = f" {re.sub(r'[^a-z0-9]+', ' ', norm).strip()} "
        position = padded.find(words)
        if position >= 0:
            named.append((-len(words), position, domain))
    if named:
        return min(named)[2], "contained"          # the longest name, then the first mentioned
    best, best_sim = None, 0.0
    for candidate in [whole, *lines]:
        for norm, domain in sorted(by_norm.items()):
            sim = Levenshtein.normalized_similarity(candidate, norm)
            if sim > best_sim:
                best, best_sim = domain, sim
    if best is not None and best_sim >= snap_threshold:
        return best, "fuzzy"
    return None, "unparseable"


class ControllerRouter:
    """An LLM picks the domain through a chat endpoint; a named tie-break orders the models (module docstring)."""

    def __init__(self, base_url: str | None = None, model: str | None = None, seed: int = 0,
                 tie_break: str = "prototype", encoder: str | None = None, temperature: float = 0.6,
                 top_p: float = 0.95, max_tokens: int = 2048, thinking: bool | None = None,
                 snap_threshold: float = 0.8, timeout: float = 120.0, retries: int = 4, backoff: float = 1.0,
                 concurrency: int = 8, cache: str | bool | None = True, name: str | None = None):
        base_url = base_url or os.environ.get("CMRBENCH_CHAT_BASE_URL")
        model = model or os.environ.get("CMRBENCH_CHAT_MODEL")
        if not base_url or not model:
            raise ValueError("the controller needs an OpenAI-compatible chat endpoint and a model name: "
                             "--router-arg base_url=http://HOST:8000/v1 --router-arg model=Qwen/Qwen3-32B "
                             "(or set CMRBENCH_CHAT_BASE_URL and CMRBENCH_CHAT_MODEL)")
        if tie_break not in TIE_BREAKS:
            raise ValueError(f"tie_break must be one of {', '.join(TIE_BREAKS)}, not {tie_break!r}")
        extra = {} if thinking is None else {"chat_template_kwargs": {"enable_thinking": bool(thinking)}}
        self.settings = ChatSettings(base_url=str(base_url), model=str(model), temperature=float(temperature),
                                     top_p=float(top_p), max_tokens=int(max_tokens), timeout=float(timeout),
                                     retries=int(retries), backoff=float(backoff), concurrency=int(concurrency),
                                     extra_body=extra)
        cache_path = Path(cache) if isinstance(cache, str) else cache
        self.client = ChatClient(self.settings, cache=cache_path, seed=seed)
        self.seed, self.tie_break, self.snap_threshold = int(seed), tie_break, float(snap_threshold)
        self.ranker = None
        if tie_break == "prototype":
            from .frozen.ncm import NCMRouter
            self.ranker = NCMRouter(seed=seed, model=encoder)
        self.domains: list[str] = []                  # seen so far, sorted
        self.model_domains: dict[str, set[str]] = {}
        self.prompt_counts: dict[str, int] = {}
        self.meta = RouterMeta(
            name=name or "controller", version="1", zero_shot=tie_break == "model-id",
            description="HuggingGPT-style controller: an LLM names the domain from the domains seen so far "
                        f"(domain-level router); models inside it ordered by the '{tie_break}' tie-break",
            reference="https://arxiv.org/abs/2303.17580",
            parameters={"level": "domain", "llm": self.settings.model, "prompt": "paper",
                        "temperature": self.settings.temperature, "top_p": self.settings.top_p,
                        "max_tokens": self.settings.max_tokens, "thinking": thinking, "tie_break": tie_break,
                        "encoder": self.ranker.encoder.label if self.ranker else None,
                        "snap_threshold": self.snap_threshold, "seed": self.seed},
            training_data=[f"instruction-tuned LLM {self.settings.model} (served at the given endpoint)"],
            statistics={k: 0 for k in ("answers", "cached", *OUTCOMES)})

    # ------------------------------------------------------------------------------------ protocol

    def learn(self, experience: Experience) -> None:
        for model_id, domains in experience.models.select("model_id", "domains").rows():
            self.model_domains[model_id] = set(domains or [])
        self.domains = sorted(set().union(*self.model_domains.values()))
        for frame in (experience.train, experience.validation):
            for model_id in frame["model_id"].to_list():
                self.prompt_counts[model_id] = self.prompt_counts.get(model_id, 0) + 1
        if self.ranker is not None:
            self.ranker.learn(experience)

    def _base_scores(self, prompts: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """The tie-break: models sorted by id and a score per prompt and model (higher first)."""
        if self.ranker is not None:
            return self.ranker.score_models(prompts)
        ids = sorted(self.model_domains)
        if self.tie_break == "frequency":
            row = np.array([self.prompt_counts.get(m, 0) for m in ids], dtype=np.float64)
        else:
            row = np.zeros(len(ids))
        return ids, np.broadcast_to(row, (len(prompts), len(ids)))

    def prompt_for(self, prompt: str) -> str:
        return PAPER_PROMPT.format(domains=", ".join(self.domains), prompt=prompt)

    def request_seed(self, prompt: str) -> int:
        return int(hashlib.sha256(f"{self.seed}:{prompt}".encode()).hexdigest()[:8], 16)

    def choose_domains(self, prompts: Sequence[str]) -> list[str | None]:
        """The domain the LLM names for each prompt (None: unparseable or failed), counted in the statistics."""
        if not self.domains:
            raise RuntimeError("route() before learn(): no domain is known yet")
        replies = self.client.complete_many([[{"role": "user", "content": self.prompt_for(p)}] for p in prompts],
                                            [self.request_seed(p) for p in prompts])
        if replies and all(r.text is None for r in replies):
            raise ControllerError(f"controller: all {len(replies)} requests to {self.client.url} failed "
                                  f"(model {self.settings.model!r}); the first error: {replies[0].error}")
        stats = self.meta.statistics
        chosen = []
        for reply in replies:
            stats["answers"] += 1
            stats["cached"] += reply.cached
            if reply.text is None:
                domain, how = None, "failed"
            else:
                domain, how = parse_domain(reply.text, self.domains, self.snap_threshold)
            stats[how] += 1
            chosen.append(domain)
        return chosen

    def route(self, prompts: Sequence[str], top_k: int) -> list[Ranking]:
        chosen = self.choose_domains(prompts)
        ids, base = self._base_scores(prompts)
        # rank inside each group by the tie-break: (1 - rank / n) keeps its order and stays in [0, 1)
        order = np.argsort(-base, axis=1, kind="stable")
        within = np.empty_like(base, dtype=np.float64)
        np.put_along_axis(within, order, 1.0 - np.arange(len(ids))[None, :] / max(1, len(ids)), axis=1)
        member = {d: np.array([d in self.model_domains.get(m, ()) for m in ids], dtype=np.float64)
                  for d in set(chosen) if d is not None}
        scores = np.stack([within[i] + (member[d] if d is not None else 0.0) for i, d in enumerate(chosen)]) \
            if chosen else within
        return top_rankings(scores, ids, top_k)

    # ------------------------------------------------------------------------------------ checkpoints

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.ranker is not None:
            self.ranker.save(folder / "ranker")
        state = {"domains": self.domains, "model_domains": {m: sorted(d) for m, d in self.model_domains.items()},
                 "prompt_counts": self.prompt_counts, "statistics": self.meta.statistics}
        atomic_write_text(folder / "controller.json", json.dumps(state, sort_keys=True))

    def load(self, folder: Path) -> None:
        folder = Path(folder)
        state: dict[str, Any] = json.loads((folder / "controller.json").read_text())
        self.domains = list(state["domains"])
        self.model_domains = {m: set(d) for m, d in state["model_domains"].items()}
        self.prompt_counts = {m: int(c) for m, c in state["prompt_counts"].items()}
        self.meta.statistics = dict(state["statistics"])
        if self.ranker is not None:
            self.ranker.load(folder / "ranker")
