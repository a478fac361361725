"""Black-box systems: predictions computed elsewhere, read from a folder.

Folder format (documented in docs/protocol.md, "Naming a router"):

- ``meta.json``: a RouterMeta object, e.g. ``{"name": "my-system", "zero_shot": false}``;
- ``after_experience_<t>.jsonl`` for t = 1..T: one line per test prompt of experiences 1..t, routed by
  the system as it stood after learning experience t:
  ``{"prompt": "<prompt text exactly as in the dataset>", "predictions": [["<model id>", <score>], ...]}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from cmrbench.data import Experience
from cmrbench.protocol import Ranking, RouterMeta


def _ranking(pairs: object) -> Ranking:
    """Stored ``[[id, score], ...]`` -> a ranking; ids must be strings and scores numbers (no null, bool, text)."""
    if not isinstance(pairs, list):
        raise TypeError("predictions must be a list of [id, score] pairs")
    out = []
    for pair in pairs:
        if not isinstance(pair, list) or len(pair) != 2:
            raise TypeError(f"{pair!r:.60} is not an [id, score] pair")
        model_id, score = pair
        if type(model_id) is not str:
            raise TypeError(f"model id {model_id!r:.60} is not a string")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise TypeError(f"score {score!r:.60} of '{model_id}' is not a number")
        out.append((model_id, float(score)))
    return out


class PrecomputedRouter:
    """Replays stored rankings; ``learn`` only selects the file of the current experience."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} is missing: a predictions folder needs meta.json "
                                    "(RouterMeta fields: name, zero_shot, ...)")
        self.meta = RouterMeta.model_validate_json(meta_path.read_text(encoding="utf-8"))
        self.table: dict[str, Ranking] = {}

    def learn(self, experience: Experience) -> None:
        path = self.folder / f"after_experience_{experience.current_experience}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (predictions after experience "
                                    f"{experience.current_experience})")
        self.table = {}
        first_line: dict[str, int] = {}
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    prompt, ranking = row["prompt"], _ranking(row["predictions"])
                    if type(prompt) is not str:
                        raise TypeError(f"prompt is a {type(prompt).__name__}, not a string")
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                    raise ValueError(f"{path}:{n}: expected {{\"prompt\": str, \"predictions\": [[id, score], ...]}}"
                                     f" ({type(err).__name__}: {err})") from err
                if prompt in self.table and self.table[prompt] != ranking:
                    # a router sees only the text, so one text has one ranking; two differing lines are a bug
                    raise ValueError(f"{path}:{n}: the prompt of line {first_line[prompt]} again, with another "
                                     "ranking; keep one line per prompt text")
                first_line.setdefault(prompt, n)
                self.table[prompt] = ranking

    def route(self, prompts: Sequence[str], top_k: int) -> list[Ranking]:
        out = []
        for prompt in prompts:
            if prompt not in self.table:
                raise KeyError(f"no stored prediction for prompt {prompt[:80]!r} in {self.folder}")
            out.append(self.table[prompt][:top_k])
        return out
