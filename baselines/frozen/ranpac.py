"""``ranpac``: RanPAC over a frozen sentence encoder (McDonald et al., NeurIPS 2023).

Frozen embeddings h (normalised) go through a fixed random projection with a ReLU, phi(h) = max(0, h R)
(R: ``dim`` x ``features``, Gaussian, drawn from the seed). A ridge-regression classifier is solved from
second-order statistics that add up over experiences: the Gram matrix G = sum w phi phi^T and the class
sums C = sum w phi y^T (one column per model), W = (G + lambda I)^-1 C. Updating G and C is exact, so the
classifier after experience t is the one joint training on experiences 1..t would give. Training prompts
weigh 1, card descriptions ``card_weight``. ``normalize_weights`` scales each model's column of W to unit
norm (a cosine-style classifier, which treats models with one prompt and with many alike).

Not done here: RanPAC's first-session adaptation of the backbone (the encoder stays frozen). Features,
lambda and the column normalisation were chosen on the validation split (``benchmarks/out/validation.json``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.linalg

from .base import Batch, FrozenFeatureRouter


class RanPACRouter(FrozenFeatureRouter):
    """Random-feature ridge regression on frozen embeddings, updated exactly at every experience."""

    name = "ranpac"
    description = ("RanPAC: frozen sentence-encoder features, fixed random ReLU projection, ridge-regression "
                   "classifier from accumulated Gram matrix and class sums (exact continual updates)")

    def __init__(self, seed: int = 0, model: str | None = None, features: int = 5000, ridge: float = 1000.0,
                 normalize_weights: bool = True, card_weight: float = 0.5, use_validation: bool = True,
                 batch_size: int = 64, cache_dir: str | Path | bool | None = None, device: str | None = None,
                 index: str = "exact", faiss_threshold: int = 50_000):
        if int(features) < 1 or float(ridge) <= 0:
            raise ValueError("ranpac needs features >= 1 and ridge > 0")
        self.features, self.ridge, self.normalize_weights = int(features), float(ridge), bool(normalize_weights)
        super().__init__(seed, model, card_weight, use_validation, batch_size, cache_dir, device,
                         {"features": self.features, "ridge": self.ridge, "normalize_weights": self.normalize_weights,
                          "activation": "relu"}, index, faiss_threshold)
        self.reset()

    def reset(self) -> None:
        self.projection: np.ndarray | None = None
        self.gram = np.zeros((self.features, self.features))
        self.class_sums = np.zeros((self.features, 0))
        self.weights: np.ndarray | None = None

    def phi(self, h: np.ndarray) -> np.ndarray:
        if self.projection is None:
            rng = np.random.default_rng([self.seed, 0xAA9AC])
            self.projection = rng.standard_normal((h.shape[1], self.features))
        return np.maximum(h.astype(np.float64) @ self.projection, 0.0)

    def update(self, batch: Batch, rows: np.ndarray) -> None:
        grown = np.zeros((self.features, len(self.ids)))
        grown[:, :self.class_sums.shape[1]] = self.class_sums
        self.class_sums = grown
        if len(rows):
            features = self.phi(batch.vectors)
            weighted = features * batch.weights[:, None]
            self.gram += weighted.T @ features
            np.add.at(self.class_sums.T, rows, weighted)
        factor = scipy.linalg.cho_factor(self.gram + self.ridge * np.eye(self.features))
        weights = scipy.linalg.cho_solve(factor, self.class_sums)
        if self.normalize_weights:
            norms = np.linalg.norm(weights, axis=0, keepdims=True)
            weights = np.divide(weights, norms, out=np.zeros_like(weights), where=norms > 0)
        self.weights = weights

    def query_features(self, embeddings: np.ndarray) -> np.ndarray:
        return self.phi(embeddings)

    def keys(self) -> np.ndarray:
        return self.weights.T
