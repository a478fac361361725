"""``ncm``: nearest class mean over a frozen sentence encoder (SimpleCIL; Zhou et al., IJCV 2024).

Each model seen so far has a prototype: the weighted mean of the normalised embeddings of its training
prompts (weight 1 each) and of its card descriptions (``card_weight`` each), re-normalised. A prompt is
routed to the models whose prototypes are closest in cosine similarity. No gradient step: old prototypes
never change, so forgetting comes only from new models crowding old ones.

``card_weight`` 0.5 and the description template were chosen on the validation split
(``benchmarks/out/validation.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cmrbench.protocol import Ranking

from ..retrieval.encoders import VectorIndex
from .base import Batch, FrozenFeatureRouter


class NCMRouter(FrozenFeatureRouter):
    """Cosine similarity to per-model prototypes of frozen embeddings."""

    name = "ncm"
    description = ("nearest class mean (SimpleCIL) over a frozen sentence encoder: per-model prototypes of "
                   "training prompts and card descriptions, cosine similarity")

    def __init__(self, seed: int = 0, model: str | None = None, card_weight: float = 0.5, use_validation: bool = True,
                 batch_size: int = 64, cache_dir: str | Path | bool | None = None, device: str | None = None,
                 index: str = "exact", faiss_threshold: int = 50_000):
        extra = {} if index == "exact" else {"index": index, "faiss_threshold": int(faiss_threshold)}
        super().__init__(seed, model, card_weight, use_validation, batch_size, cache_dir, device, extra)
        self.index_kind, self.faiss_threshold = index, int(faiss_threshold)
        self._index: tuple[list[str], VectorIndex] | None = None
        self.reset()

    def reset(self) -> None:
        self.sums = np.zeros((0, 0))

    def route(self, prompts: Sequence[str], top_k: int) -> list[Ranking]:
        """Above ``faiss_threshold`` models with ``index`` hnsw / ivfpq / flat: a FAISS search over the prototypes
        (for hub-sized registries) instead of scoring every model."""
        if self.index_kind == "exact" or len(self.ids) <= self.faiss_threshold:
            return super().route(prompts, top_k)
        if self._index is None or len(self._index[0]) != len(self.ids):
            self._index = (list(self.ids), VectorIndex(self.prototypes(), self.faiss_threshold, self.index_kind))
        ids, index = self._index
        values, rows = index.search(self.encoder.embed(list(prompts), "query"), top_k)
        return [[(ids[i], float(v)) for v, i in zip(vs, rs) if i >= 0] for vs, rs in zip(values, rows)]

    def update(self, batch: Batch, rows: np.ndarray) -> None:
        self._index = None
        if self.sums.shape[0] < len(self.ids) or (batch.vectors.size and self.sums.shape[1] == 0):
            dim = batch.vectors.shape[1] if batch.vectors.size else self.sums.shape[1]
            grown = np.zeros((len(self.ids), dim))
            grown[:self.sums.shape[0], :self.sums.shape[1]] = self.sums
            self.sums = grown
        if len(rows):
            np.add.at(self.sums, rows, batch.vectors.astype(np.float64) * batch.weights[:, None])

    def prototypes(self) -> np.ndarray:
        norms = np.linalg.norm(self.sums, axis=1, keepdims=True)
        return np.divide(self.sums, norms, out=np.zeros_like(self.sums), where=norms > 0)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        return queries.astype(np.float64) @ self.prototypes().T
