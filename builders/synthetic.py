"""A small synthetic model hub with the same folder layout as CMRBench, for unit tests and ``mock-run``.

Every model has a few "signature" words that appear in its card and in its prompts, and every domain
has its own vocabulary, so that a working router scores well above chance and a broken one does not.
Models recur across experiences and families group name variants, as in the real hub.

``hard=True`` (what ``cmrbench mock-run`` uses) makes card overlap a weak cue, as on the real hub: most prompt
words are a model's "usage" words, which only its training prompts show (never its card), and a prompt
often borrows a card word of another model of its domain. Word overlap with the cards then stays well below
what a router that learns from the training prompts reaches.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from .assemble import EXPERIENCE_SCHEMA, Assembled, models_table, split_validation
from .folder import write_folder
from .records import Quarantine, prompt_id
from .taxonomy import category_of, task_of

DOMAINS = ["Natural Language Processing Translation", "Natural Language Processing Summarization",
           "Computer Vision Image Classification", "Computer Vision Object Detection",
           "Audio Automatic Speech Recognition", "Multimodal Visual Question Answering"]
_SYLLABLES = ["ka", "lo", "mi", "ra", "tu", "ve", "zo", "ne", "shi", "po", "qua", "fe", "di", "gru", "sa", "bel"]


def _word(rng: np.random.Generator, n: int = 3) -> str:
    return "".join(rng.choice(_SYLLABLES, size=n))


def make_synthetic_hub(out: str | Path, *, n_experiences: int = 3, models_per_experience: int = 8,
                       prompts_per_model: int = 6, recurring: int = 2, seed: int = 0,
                       overwrite: bool = False, hard: bool = False) -> Path:
    """Write a synthetic CMRBench folder to ``out`` and return its path (``hard``: see the module docstring)."""
    rng = np.random.default_rng(seed)
    domain_words = {d: [_word(rng) for _ in range(4)] for d in DOMAINS}
    experiences: dict[int, pl.DataFrame] = {}
    cards, seen = [], []
    card_no = 0
    for t in range(1, n_experiences + 1):
        new = []
        for i in range(models_per_experience - (recurring if seen else 0)):
            family = _word(rng, 2)
            model = {"model_id": f"org{t}/{family}-{['base', 'large', 'v2'][i % 3]}-{t}{i}", "family": family,
                     "domain": DOMAINS[int(rng.integers(len(DOMAINS)))], "words": [_word(rng) for _ in range(3)],
                     "created_at": 1_600_000_000_000 + t * 10_000_000_000 + i}
            if hard:
                model["usage"] = [_word(rng) for _ in range(3)]
            new.append(model)
            card_no += 1
            card = {"api_name": model["model_id"], "model_name": model["model_id"], "domain": model["domain"],
                    "description": f"{' '.join(model['words'])} model for {model['domain'].lower()}"}
            cards.append({"card_id": f"card-{card_no:05d}", "model_id": model["model_id"], "experience": t,
                          "domain": model["domain"], "card": json.dumps(card, sort_keys=True)})
        again = [seen[int(k)] for k in rng.choice(len(seen), size=min(recurring, len(seen)), replace=False)] \
            if seen else []
        rows = []
        for model in new + again:
            neighbours = [m for m in new + seen if m["domain"] == model["domain"] and m is not model]
            for k in range(prompts_per_model):
                if hard:
                    words = [str(rng.choice(model["words"]))] if rng.random() < 0.3 else []
                    words += list(rng.choice(model["usage"], size=3 - len(words)))
                    if neighbours and rng.random() < 0.6:
                        words.append(str(rng.choice(neighbours[int(rng.integers(len(neighbours)))]["words"])))
                    words += list(rng.choice(domain_words[model["domain"]], size=2))
                else:
                    words = list(rng.choice(model["words"], size=2)) + list(rng.choice(domain_words[model["domain"]],
                                                                                       size=2))
                text = f"please {' '.join(words)} request {t}-{k} {_word(rng, 2)}"
                rows.append({"prompt_id": prompt_id(t, text, model["model_id"]), "prompt": text,
                             "model_id": model["model_id"], "family": model["family"],
                             "family_cmrbench": model["family"], "domain": model["domain"],
                             "category": category_of(model["domain"]), "task": task_of(model["domain"]),
                             "experience": t, "split": "test" if k < 2 else "train", "source": "Synthetic",
                             "modality": None, "created_at": model["created_at"], "origin": f"synthetic:{t}"})
        frame = pl.DataFrame(rows, schema=EXPERIENCE_SCHEMA)
        pool = frame.filter(pl.col("split") == "train")
        experiences[t] = pl.concat([pool.with_columns(split_validation(pool, seed)),
                                    frame.filter(pl.col("split") == "test")])
        seen.extend(new)
    card_frame = pl.DataFrame(cards, schema={"card_id": pl.String, "model_id": pl.String, "experience": pl.Int8,
                                             "domain": pl.String, "card": pl.String})
    data = Assembled(experiences, models_table(experiences, card_frame), card_frame,
                     "synthetic-hard" if hard else "synthetic", seed)
    write_folder(data, {}, Quarantine(), Path(out), overwrite=overwrite)
    return Path(out)
