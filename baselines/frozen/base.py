"""The shared part of the frozen-feature routers: their evidence, bookkeeping, routing and checkpoints.

**Evidence**: what such a router learns from, every training prompt and every model card, once each.
At each experience, :meth:`Evidence.new` returns the embeddings of the prompts and cards not used yet,
with the model each belongs to and its weight: 1 per prompt, ``card_weight`` per card. Prompts come from
the experience's ``train`` frame (and ``validation``, unless ``use_validation`` is off: under
``--eval-split validation`` that frame is empty anyway); cards are the card descriptions of the models seen
so far (a card of a model not seen yet waits until it is).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl

from cmrbench.protocol import Ranking, RouterMeta
from cmrbench.fileio import atomic_write_text

from cmrbench.baselines.retrieval.cardtext import card_text
from cmrbench.baselines.retrieval.base import top_rankings
from cmrbench.baselines.retrieval.dense import DenseEncoder
from cmrbench.baselines.retrieval.encoders import IndexedSearch


@dataclass
class Batch:
    vectors: np.ndarray          # (n, dim) normalised float32 embeddings
    model_ids: list[str]
    weights: np.ndarray          # (n,)


@dataclass
class Evidence:
    encoder: DenseEncoder
    card_weight: float = 0.5
    card_template: str = "description"
    use_validation: bool = True
    used_prompts: set[str] = field(default_factory=set)
    used_cards: set[str] = field(default_factory=set)

    def new(self, experience) -> Batch:
        frames = [experience.train] + ([experience.validation] if self.use_validation else [])
        prompts = pl.concat([f.select("prompt_id", "prompt", "model_id") for f in frames], how="vertical_relaxed")
        prompts = prompts.filter(~pl.col("prompt_id").is_in(list(self.used_prompts))).unique("prompt_id",
                                                                                              keep="first",
                                                                                              maintain_order=True)
        seen = set(experience.classes_seen_so_far)
        cards = experience.cards.filter(pl.col("model_id").is_in(list(seen))
                                        & ~pl.col("card_id").is_in(list(self.used_cards)))
        if self.card_weight <= 0:
            cards = cards.head(0)
        self.used_prompts.update(prompts["prompt_id"].to_list())
        self.used_cards.update(cards["card_id"].to_list())
        parts, ids, weights = [], [], []
        if prompts.height:
            parts.append(self.encoder.embed(prompts["prompt"].to_list(), "query"))
            ids += prompts["model_id"].to_list()
            weights += [1.0] * prompts.height
        if cards.height:
            texts = [card_text(c, self.card_template) or m for c, m in cards.select("card", "model_id").rows()]
            parts.append(self.encoder.embed(texts, "document"))
            ids += cards["model_id"].to_list()
            weights += [self.card_weight] * cards.height
        vectors = np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
        return Batch(vectors, ids, np.asarray(weights, dtype=np.float64))

    def state(self) -> dict[str, Any]:
        return {"used_prompts": sorted(self.used_prompts), "used_cards": sorted(self.used_cards)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.used_prompts = set(state["used_prompts"])
        self.used_cards = set(state["used_cards"])


class FrozenFeatureRouter:
    """Base of ``ncm`` and ``ranpac``: a frozen encoder, an append-only model table, exact incremental updates.

    Subclasses implement :meth:`update` (fold a batch of evidence into their statistics) and :meth:`keys` (one
    vector per model, table order), and :meth:`query_features` when a prompt's embedding is not its query vector:
    a prompt scores ``query_features(embedding) . key`` for every model. Models are ranked by score, ties by model
    id ascending; with ``index`` (``flat`` / ``hnsw`` / ``ivfpq``) above ``faiss_threshold`` models the ranking
    comes from a FAISS search over the keys instead (:class:`~cmrbench.baselines.retrieval.encoders.IndexedSearch`).
    A checkpoint holds the evidence batches in order; loading replays the updates, so a resumed run computes bit
    for bit what an unbroken one does.
    """

    name = ""
    description = ""

    def __init__(self, seed: int, model: str | None, card_weight: float, use_validation: bool, batch_size: int,
                 cache_dir: str | Path | bool | None, device: str | None, parameters: dict[str, Any],
                 index: str = "exact", faiss_threshold: int = 50_000):
        self.seed = int(seed)
        self.search = IndexedSearch(index, faiss_threshold)
        self.encoder = DenseEncoder(model, batch_size, cache_dir, device)
        self.evidence = Evidence(self.encoder, float(card_weight), "description", bool(use_validation))
        self.ids: list[str] = []            # table order: the order models were first seen
        self.index: dict[str, int] = {}
        self.batches: list[Batch] = []
        self.sizes: list[int] = []          # table size after each batch (to replay a checkpoint exactly)
        self.meta = RouterMeta(name=self.name, version="1", description=self.description, zero_shot=False,
                               reference="https://arxiv.org/abs/2605.28577",
                               parameters={"model": self.encoder.label, "card_weight": float(card_weight),
                                           "card_template": "description", "use_validation": bool(use_validation),
                                           "seed": self.seed, **parameters, **self.search.parameters},
                               training_data=[f"pre-trained encoder {self.encoder.label}"])

    # ------------------------------------------------------------------------------------ subclass hooks

    def update(self, batch: Batch, rows: np.ndarray) -> None:
        """Fold ``batch`` (``rows``: its model ids' table positions) into the statistics."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget every statistic (before a checkpoint's batches are replayed)."""
        raise NotImplementedError

    def keys(self) -> np.ndarray:
        """``[n_models, d]``: each model's vector, in table order."""
        raise NotImplementedError

    def query_features(self, embeddings: np.ndarray) -> np.ndarray:
        """``[n, d]``: the prompts' vectors that the keys are scored against (by default their embeddings)."""
        return embeddings.astype(np.float64)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """``[n_prompts, n_models]`` scores, table order, of the prompts' embeddings ``queries``."""
        return self.query_features(queries) @ self.keys().T

    # ------------------------------------------------------------------------------------ protocol

    def _register(self, model_ids: Sequence[str]) -> None:
        """Append the ids not in the table yet, in the given order."""
        for m in model_ids:
            if m not in self.index:
                self.index[m] = len(self.ids)
                self.ids.append(m)

    def _fold(self, batch: Batch) -> None:
        self.search.clear()
        self.update(batch, np.array([self.index[m] for m in batch.model_ids], dtype=np.int64))
        self.batches.append(batch)
        self.sizes.append(len(self.ids))

    def learn(self, experience) -> None:
        self._register(sorted(experience.classes_seen_so_far))
        self._fold(self.evidence.new(experience))

    def score_models(self, prompts: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Every model seen so far (sorted by id) and each prompt's score for it, ``[n_prompts, n_models]``."""
        if not self.ids:
            raise RuntimeError("route() before learn(): no model is registered yet")
        order = np.argsort(np.array(self.ids, dtype=object), kind="stable")
        return [self.ids[i] for i in order], self.scores(self.encoder.embed(list(prompts), "query"))[:, order]

    def route(self, prompts: Sequence[str], top_k: int) -> list[Ranking]:
        if self.search.applies(len(self.ids)):
            queries = self.query_features(self.encoder.embed(list(prompts), "query"))
            return self.search.rankings(self.keys, self.ids, queries, top_k)
        ids, scores = self.score_models(prompts)
        return top_rankings(scores, ids, top_k)

    # ------------------------------------------------------------------------------------ checkpoints

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for t, b in enumerate(self.batches):
            arrays[f"vectors_{t}"], arrays[f"weights_{t}"] = b.vectors, b.weights
        np.savez(folder / "evidence.npz", **arrays)
        info = {"router": self.meta.name, "parameters": self.meta.parameters, "ids": self.ids, "sizes": self.sizes,
                "batches": [b.model_ids for b in self.batches], "evidence": self.evidence.state()}
        atomic_write_text(folder / "router.json", json.dumps(info))

    def load(self, folder: Path) -> None:
        folder = Path(folder)
        info = json.loads((folder / "router.json").read_text())
        if info["router"] != self.meta.name or info["parameters"] != self.meta.parameters:
            raise ValueError(f"{folder} holds a checkpoint of '{info['router']}' with other parameters than "
                             f"this {self.meta.name} router")
        self.ids, self.index, self.batches, self.sizes = [], {}, [], []
        self.reset()
        with np.load(folder / "evidence.npz") as arrays:
            for t, (model_ids, size) in enumerate(zip(info["batches"], info["sizes"])):
                self._register(info["ids"][:size])
                self._fold(Batch(arrays[f"vectors_{t}"], list(model_ids), arrays[f"weights_{t}"]))
        self.evidence.load_state(info["evidence"])
