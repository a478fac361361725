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

import numpy as np

from .base import Batch, FrozenFeatureRouter


class NCMRouter(FrozenFeatureRouter):
    """Cosine similarity to per-model prototypes of frozen embeddings."""

    name = "ncm"
    description = ("nearest class mean (SimpleCIL) over a frozen sentence encoder: per-model prototypes of "
                   "training prompts and card descriptions, cosine similarity")

    def __init__(self, seed: int = 0, model: str | None = None, card_weight: float = 0.5, use_validation: bool = True,
                 batch_size: int = 64, cache_dir: str | Path | bool | None = None, device: str | None = None,
                 index: str = "exact", faiss_threshold: int = 50_000):
        super().__init__(seed, model, card_weight, use_validation, batch_size, cache_dir, device, {}, index,
                         faiss_threshold)
        self.reset()

    def reset(self) -> None:
        self.sums = np.zeros((0, 0))

    def update(self, batch: Batch, rows: np.ndarray) -> None:
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

    def keys(self) -> np.ndarray:
        return self.prototypes()
