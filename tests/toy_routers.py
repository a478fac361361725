"""Small routers the tests share."""

from __future__ import annotations

import json

from cmrbench.protocol import RouterMeta


class OverlapRouter:
    """README's zero-shot example: word overlap between the prompt and the model card's description."""

    def __init__(self, seed: int = 0):
        self.meta = RouterMeta(name="overlap", version="1", zero_shot=True, description="word overlap with cards")
        self.words: dict[str, set[str]] = {}

    def learn(self, experience):
        for model_id, card in experience.cards.select("model_id", "card").rows():
            desc = json.loads(card).get("description") or ""
            self.words.setdefault(model_id, set()).update(desc.lower().split())

    def route(self, prompts, top_k):
        out = []
        for p in prompts:
            q = set(p.lower().split())
            top = sorted(self.words, key=lambda m: (-len(q & self.words[m]), m))[:top_k]
            out.append([(m, float(len(q & self.words[m]))) for m in top])
        return out
