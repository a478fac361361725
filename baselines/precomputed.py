"""Black-box systems: predictions computed elsewhere, read from a folder.

Folder format (documented in the README):

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
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    self.table[row["prompt"]] = [(str(m), float(s)) for m, s in row["predictions"]]
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                    raise ValueError(f"{path}:{n}: expected {{\"prompt\": str, \"predictions\": [[id, score], ...]}}"
                                     f" ({type(err).__name__}: {err})") from err

    def route(self, prompts: Sequence[str], top_k: int) -> list[Ranking]:
        out = []
        for prompt in prompts:
            if prompt not in self.table:
                raise KeyError(f"no stored prediction for prompt {prompt[:80]!r} in {self.folder}")
            out.append(self.table[prompt][:top_k])
        return out
