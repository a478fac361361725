"""BM25 over model cards, as in the CMR paper (rank-bm25 ``BM25Okapi``, whitespace tokens).

Two routers with the same scores:

* :class:`RankBM25Router` (``bm25-rank``) calls rank-bm25 itself, one query at a time: the paper's code path.
* :class:`BM25Router` (``bm25``) is this module's scipy-sparse implementation of exactly ``BM25Okapi``'s
  formula; all queries of a batch are scored by one sparse matrix product (much faster). Its scores
  equal rank-bm25's up to floating-point summation order.

Both follow the paper's code path by default (``tokenizer="paper"``, ``tie_break="rank-bm25"``): cards and
prompts are split on single spaces (``text.split(" ")``, no lower-casing), and cards are ranked as
rank-bm25's ``get_top_n`` ranks them (``np.argsort(scores)[::-1]``, so among equal scores the later card
comes first; here with a stable sort, because numpy's default one breaks ties differently on CPUs with
AVX-512), a model taking the place of its first card. ``bm25-lower``
is this package's earlier variant: lower-cased, split on runs of whitespace, ties by model id ascending.

``BM25Okapi`` (rank-bm25 0.2.2), for a query ``q`` (a list of tokens, repeats counted) and a document
``d`` with term frequencies ``f(t, d)``, length ``|d|`` (tokens) and average length ``avgdl``::

    score(q, d) = sum_{t in q} idf(t) * f(t, d) * (k1 + 1) / (f(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t) = log(N - n(t) + 0.5) - log(n(t) + 0.5)          (N documents, n(t) of them contain t)
    idf(t) = epsilon * mean_t(idf(t))   when idf(t) < 0    (the mean over the vocabulary, before flooring)

with ``k1 = 1.5``, ``b = 0.75``, ``epsilon = 0.25``; query tokens absent from the corpus add nothing.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from .base import CardRetriever

PAPER_REFERENCE = "https://github.com/collagelab/CMR"


TOKENIZERS = {
    "paper": lambda text: text.split(" "),          # the authors' code: doc.split(" "), instruction.split(" ")
    "lower": lambda text: text.lower().split(),     # lower-case, then runs of whitespace
}


def tokenizer_of(name: str):
    if name not in TOKENIZERS:
        raise ValueError(f"unknown BM25 tokenizer '{name}'; choose one of {', '.join(TOKENIZERS)}")
    return TOKENIZERS[name]


class SparseBM25:
    """``BM25Okapi`` scores as a sparse term-document weight matrix: ``scores = Q @ W``."""

    def __init__(self, documents: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75,
                 epsilon: float = 0.25):
        if not documents:
            raise ValueError("BM25 needs at least one document")
        self.k1, self.b, self.epsilon = k1, b, epsilon
        self.vocabulary: dict[str, int] = {}
        rows, cols, tfs = [], [], []
        doc_len = np.empty(len(documents), dtype=np.float64)
        for d, tokens in enumerate(documents):
            doc_len[d] = len(tokens)
            for term, tf in Counter(tokens).items():
                rows.append(self.vocabulary.setdefault(term, len(self.vocabulary)))
                cols.append(d)
                tfs.append(tf)
        n_docs, n_terms = len(documents), len(self.vocabulary)
        rows_a, cols_a = np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64)
        tf = np.array(tfs, dtype=np.float64)
        self.avgdl = doc_len.sum() / n_docs
        df = np.bincount(rows_a, minlength=n_terms).astype(np.float64)
        idf = np.log(n_docs - df + 0.5) - np.log(df + 0.5)
        self.average_idf = idf.sum() / n_terms if n_terms else 0.0
        idf[idf < 0] = self.epsilon * self.average_idf
        self.idf = idf
        # same operation order as rank-bm25: idf * (tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl)))
        norm = k1 * (1 - b + b * doc_len[cols_a] / self.avgdl)
        weights = idf[rows_a] * (tf * (k1 + 1) / (tf + norm))
        self.weights = sp.csr_matrix((weights, (rows_a, cols_a)), shape=(n_terms, n_docs))  # terms x docs
        self.n_docs = n_docs

    def query_matrix(self, queries: Sequence[Sequence[str]]) -> sp.csr_matrix:
        """Counts of the in-vocabulary tokens of each query, ``[n_queries, n_terms]``."""
        indptr, indices, data = [0], [], []
        for tokens in queries:
            counts = Counter(self.vocabulary[t] for t in tokens if t in self.vocabulary)
            indices.extend(counts)
            data.extend(counts.values())
            indptr.append(len(indices))
        return sp.csr_matrix((np.array(data, dtype=np.float64), np.array(indices, dtype=np.int64), indptr),
                             shape=(len(queries), len(self.vocabulary)))

    def scores(self, queries: Sequence[Sequence[str]]) -> np.ndarray:
        """``[n_queries, n_docs]`` BM25Okapi scores."""
        return (self.query_matrix(queries) @ self.weights).toarray()


class _BM25Params:
    def _bm25_setup(self, name: str, k1: float, b: float, epsilon: float, oracle_domain: bool, template: str,
                    implementation: str, tokenizer: str, tie_break: str) -> None:
        self.k1, self.b, self.epsilon = float(k1), float(b), float(epsilon)
        self.tokenize = tokenizer_of(tokenizer)
        self._setup(name, oracle_domain=oracle_domain, template=template, reference=PAPER_REFERENCE,
                    tie_break=tie_break,
                    parameters={"k1": self.k1, "b": self.b, "epsilon": self.epsilon, "tokenizer": tokenizer,
                                "implementation": implementation},
                    description="zero-shot BM25 (BM25Okapi) over the model cards seen so far; a model scores "
                                "its best card.")


class BM25Router(_BM25Params, CardRetriever):
    """BM25Okapi over the cards, scored with scipy sparse matrices (registered as ``bm25``)."""

    def __init__(self, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25, oracle_domain: bool = False,
                 template: str = "json", tokenizer: str = "paper", tie_break: str = "rank-bm25", name: str = "bm25"):
        self._bm25_setup(name, k1, b, epsilon, oracle_domain, template, "scipy-sparse BM25Okapi", tokenizer,
                         tie_break)
        self.bm25: SparseBM25 | None = None

    def index(self, texts: list[str]) -> None:
        self.bm25 = SparseBM25([self.tokenize(t) for t in texts], self.k1, self.b, self.epsilon)

    def score(self, queries: Sequence[str], candidates: np.ndarray | None = None) -> np.ndarray:
        assert self.bm25 is not None
        return self.bm25.scores([self.tokenize(q) for q in queries])


def bm25_lower(oracle_domain: bool = False, template: str = "json") -> BM25Router:
    """``bm25-lower``: lower-cased whitespace tokens, ties by model id (this package's first BM25 row)."""
    return BM25Router(oracle_domain=oracle_domain, template=template, tokenizer="lower", tie_break="model-id",
                      name="bm25-lower")


class RankBM25Router(_BM25Params, CardRetriever):
    """BM25Okapi over the cards through rank-bm25, one query at a time (registered as ``bm25-rank``)."""

    def __init__(self, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25, oracle_domain: bool = False,
                 template: str = "json", tokenizer: str = "paper", tie_break: str = "rank-bm25"):
        self._bm25_setup("bm25-rank", k1, b, epsilon, oracle_domain, template, "rank-bm25 BM25Okapi", tokenizer,
                         tie_break)
        self.bm25 = None

    def index(self, texts: list[str]) -> None:
        from rank_bm25 import BM25Okapi

        self.bm25 = BM25Okapi([self.tokenize(t) for t in texts], k1=self.k1, b=self.b, epsilon=self.epsilon)

    def score(self, queries: Sequence[str], candidates: np.ndarray | None = None) -> np.ndarray:
        assert self.bm25 is not None
        return np.stack([self.bm25.get_scores(self.tokenize(q)) for q in queries])
