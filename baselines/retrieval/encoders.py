"""Embedding cache and vector search shared by the neural retrieval routers.

Cache
-----
An embedding is keyed by (encoder identity, sha256 of the text). The encoder identity is a small dict
-- the model (its name, or for a local folder the sha256 of its weight / config / tokenizer files), its
revision, and the settings that change the output (query or document side, pooling, max length...) --
hashed into a *namespace*. Entries of a namespace are shared by every experience, router and run that
uses the same encoder, so re-indexing the growing card collection only encodes the new cards, and a
second run encodes nothing.

Layout, under the cache folder (argument ``cache_dir``, else ``$CMRBENCH_CACHE``, else the platform
user cache ``.../cmrbench/embeddings``)::

    <namespace sha256[:24]>/meta.json         the identity dict, for people
    <namespace sha256[:24]>/index.jsonl       one line per shard: {"shard": file, "keys": [text sha256...]}
    <namespace sha256[:24]>/<uuid>.npy        dense float32 rows (or .npz: a scipy CSR matrix)
    fingerprints.json                          memo of model-folder content hashes by (path, size, mtime)

Writes are atomic: a shard is written to a temporary file and renamed into place, then its index line
is appended with a single ``write`` on an ``O_APPEND`` descriptor; readers skip a torn last line and
lines whose shard is missing. Concurrent runs may both encode the same text; whichever entry is read
is the same vector.

Search
------
:class:`VectorIndex` scores queries against the card vectors by a matrix product (exact), or with a
FAISS index (exact ``IndexFlatIP``, or approximate HNSW / IVF-PQ with ``index=``) when the pool is larger than
``faiss_threshold``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from cmrbench.fileio import atomic_write, sha256_file

log = logging.getLogger(__name__)

CACHE_ENV = "CMRBENCH_CACHE"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json", ".txt", ".model")
SKIPPED_DIRS = {"onnx", "openvino", ".git", ".cache"}
SKIPPED_FILES = {"README.md", ".gitattributes"}


def default_cache_dir() -> Path:
    """``$CMRBENCH_CACHE`` if set, else the platform user cache's ``cmrbench/embeddings``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("cmrbench")) / "embeddings"


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------------ fingerprints

def folder_fingerprint(folder: str | Path, memo_file: Path | None = None) -> str:
    """sha256 over the (relative path, content sha256) of a model folder's weight, config and tokenizer files.

    Content hashes of files are memoised in ``memo_file`` by (absolute path, size, mtime), so a large
    model is read once per cache folder.
    """
    folder = Path(folder).resolve()
    memo: dict[str, str] = {}
    if memo_file is not None and memo_file.is_file():
        try:
            memo = json.loads(memo_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            memo = {}
    changed = False
    parts = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if (not path.is_file() or path.name in SKIPPED_FILES or path.suffix not in WEIGHT_SUFFIXES
                or any(p in SKIPPED_DIRS for p in rel.parts[:-1])):
            continue
        st = path.stat()
        memo_key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
        digest = memo.get(memo_key)
        if digest is None:
            digest = memo[memo_key] = sha256_file(path)
            changed = True
        parts.append(f"{rel.as_posix()}:{digest}")
    if not parts:
        raise FileNotFoundError(f"{folder} holds no model files ({', '.join(WEIGHT_SUFFIXES)})")
    if changed and memo_file is not None:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(memo_file, lambda fh: fh.write(json.dumps(memo, indent=0, sort_keys=True).encode()))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def model_identity(name_or_path: str | Path, revision: str | None = None,
                   memo_file: Path | None = None) -> dict[str, str]:
    """What identifies a model's weights for the cache.

    A local folder: its content fingerprint (the same weights anywhere share entries). A Hub name: the
    name, plus the content fingerprint of its snapshot when it is in the local Hub cache (looked up
    offline, never downloaded), else the requested revision (``"unpinned"`` when none was given).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return {"model": "local-folder", "fingerprint": folder_fingerprint(path, memo_file)}
    name = str(name_or_path)
    try:
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(name, revision=revision, local_files_only=True))
        return {"model": name, "fingerprint": folder_fingerprint(snapshot, memo_file)}
    except Exception:  # noqa: BLE001 - not in the local Hub cache: identify by name and revision only
        log.warning("embedding cache: %s is not a local folder nor in the local Hub cache; its entries are keyed by "
                    "name and revision (%s) only", name, revision or "unpinned")
        return {"model": name, "revision": revision or "unpinned"}


# ------------------------------------------------------------------------------------------- cache

class EmbeddingCache:
    """A folder of embedding shards, one namespace per encoder identity (see the module docstring)."""

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder).expanduser() if folder is not None else default_cache_dir()
        self._loaded: dict[str, dict[str, tuple[str, int]]] = {}   # namespace -> text key -> (shard, row)
        self._shards: dict[tuple[str, str], Any] = {}
        self._index_size: dict[str, int] = {}

    @property
    def memo_file(self) -> Path:
        return self.folder / "fingerprints.json"

    def namespace(self, identity: dict[str, Any]) -> str:
        blob = json.dumps(identity, sort_keys=True, default=str)
        ns = hashlib.sha256(blob.encode()).hexdigest()[:24]
        folder = self.folder / ns
        if not (folder / "meta.json").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / "meta.json", lambda fh: fh.write(json.dumps(identity, indent=2, sort_keys=True,
                                                                                default=str).encode()))
        return ns

    def _entries(self, ns: str) -> dict[str, tuple[str, int]]:
        index = self.folder / ns / "index.jsonl"
        size = index.stat().st_size if index.is_file() else 0
        if self._index_size.get(ns) == size and ns in self._loaded:
            return self._loaded[ns]
        entries: dict[str, tuple[str, int]] = {}
        if size:
            for line in index.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    shard, keys = rec["shard"], rec["keys"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue                       # a torn or foreign line
                if not (self.folder / ns / shard).is_file():
                    continue
                for row, key in enumerate(keys):
                    entries.setdefault(key, (shard, row))
        self._loaded[ns], self._index_size[ns] = entries, size
        return entries

    def _shard(self, ns: str, shard: str):
        if (ns, shard) not in self._shards:
            path = self.folder / ns / shard
            self._shards[(ns, shard)] = sp.load_npz(path).tocsr() if shard.endswith(".npz") else np.load(path)
        return self._shards[(ns, shard)]

    def get(self, ns: str, keys: Sequence[str]) -> dict[str, Any]:
        """The cached rows (1-D arrays or 1-row CSR matrices) of the keys present."""
        entries = self._entries(ns)
        return {k: self._shard(ns, entries[k][0])[entries[k][1]] for k in keys if k in entries}

    def put(self, ns: str, keys: Sequence[str], rows: Any) -> None:
        """Store ``rows`` (a 2-D array or CSR matrix, one row per key) as one new shard."""
        if not keys:
            return
        sparse = sp.issparse(rows)
        shard = f"{uuid.uuid4().hex}.{'npz' if sparse else 'npy'}"
        folder = self.folder / ns
        folder.mkdir(parents=True, exist_ok=True)
        if sparse:
            atomic_write(folder / shard, lambda fh: sp.save_npz(fh, sp.csr_matrix(rows), compressed=False))
        else:
            atomic_write(folder / shard, lambda fh: np.save(fh, np.ascontiguousarray(rows)))
        line = (json.dumps({"shard": shard, "keys": list(keys)}) + "\n").encode()
        fd = os.open(folder / "index.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        self._shards[(ns, shard)] = sp.csr_matrix(rows) if sparse else np.ascontiguousarray(rows)

    def encode(self, identity: dict[str, Any], texts: Sequence[str], compute: Callable[[list[str]], Any]) -> Any:
        """Rows for ``texts`` in order: cached ones read back, the others computed (once per distinct text)."""
        return cached_encode(self, identity, texts, compute)


def cached_encode(cache: EmbeddingCache | None, identity: dict[str, Any], texts: Sequence[str],
                  compute: Callable[[list[str]], Any]) -> Any:
    """``compute(texts)`` through ``cache`` (``None``: no cache); dense -> ndarray, sparse -> CSR."""
    return cached_encode_multi(cache, {"out": identity}, texts, lambda batch: {"out": compute(batch)})["out"]


def cached_encode_multi(cache: EmbeddingCache | None, identities: dict[str, dict[str, Any]], texts: Sequence[str],
                        compute: Callable[[list[str]], dict[str, Any]]) -> dict[str, Any]:
    """Several outputs of one encoder pass (e.g. BGE-M3 dense + sparse), each in its own namespace.

    ``compute(batch)`` returns ``{output name: rows}``; a text missing from any output's namespace is
    recomputed (once per distinct text) and stored in all of them.
    """
    texts = list(texts)
    if cache is None:
        return compute(texts)
    spaces = {name: cache.namespace(ident) for name, ident in identities.items()}
    keys = [text_key(t) for t in texts]
    found = {name: cache.get(ns, keys) for name, ns in spaces.items()}
    missing: dict[str, str] = {}
    for k, t in zip(keys, texts):
        if any(k not in f for f in found.values()):
            missing.setdefault(k, t)
    if missing:
        new = compute(list(missing.values()))
        for name, ns in spaces.items():
            cache.put(ns, list(missing), new[name])
            for i, k in enumerate(missing):
                found[name][k] = new[name][i]
    out = {}
    for name in spaces:
        rows = [found[name][k] for k in keys]
        if rows and sp.issparse(rows[0]):
            out[name] = sp.vstack(rows, format="csr")
        else:
            out[name] = np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
    return out


# ------------------------------------------------------------------------------------------ search

INDEX_KINDS = ("exact", "flat", "hnsw", "ivfpq")


def _flat_storage(index):
    """The FAISS flat index that holds the full vectors of a flat, HNSW-flat or refine-flat index."""
    import faiss

    if isinstance(index, faiss.IndexRefineFlat):
        return faiss.downcast_index(index.refine_index)
    if isinstance(index, faiss.IndexHNSWFlat):
        return faiss.downcast_index(index.storage)
    return index


def _stored_vectors(index, n: int, dim: int) -> np.ndarray:
    """A read-only view of the full vectors a FAISS flat, HNSW-flat or refine-flat index stores (no copy)."""
    import faiss

    view = faiss.rev_swig_ptr(_flat_storage(index).get_xb(), n * dim).reshape(n, dim)
    view.flags.writeable = False
    return view


def rows_at(chunks: Iterable[np.ndarray], wanted: np.ndarray) -> np.ndarray:
    """The rows at the sorted indices ``wanted`` of the matrix that ``chunks`` yields piece by piece."""
    picked, offset = [], 0
    for chunk in chunks:
        lo, hi = np.searchsorted(wanted, [offset, offset + len(chunk)])
        picked.append(np.asarray(chunk, dtype=np.float32)[wanted[lo:hi] - offset])
        offset += len(chunk)
    return np.ascontiguousarray(np.concatenate(picked))


class VectorIndex:
    """Inner-product search over dense vectors, exact or through FAISS (``faiss-cpu``).

    ``kind``: ``exact`` (a matrix product), ``flat`` (FAISS ``IndexFlatIP``: exact, for large pools), ``hnsw``
    (``IndexHNSWFlat``, M 32, efSearch max(128, 2n): approximate, fast), ``ivfpq`` (``IndexIVFPQ``: 8-bit codes of
    d/8 sub-vectors, sqrt(N) lists trained on 64 vectors each, 16 probed; its best 64 k re-ranked exactly by ``IndexRefineFlat``, which
    keeps the full vectors; this class then reads them from FAISS rather than keeping a second copy). Below ``exact_below`` vectors every kind searches exactly (``kind_used`` says what ran), so results at
    the hub's current size do not depend on an approximation; ``exact_below=0`` forces the index. IVF-PQ also
    needs ``39 x 256`` vectors to train its codebooks and falls back to ``flat`` below that.
    """

    def __init__(self, vectors: np.ndarray, faiss_threshold: int = 50_000, kind: str = "flat",
                 exact_below: int | None = None):
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape if vectors.ndim == 2 else (0, 0)
        self._choose(n, dim, kind, faiss_threshold if exact_below is None else exact_below)
        if self.uses_faiss:
            self._build(lambda: [vectors], n, dim)
        else:
            self.vectors = vectors

    @classmethod
    def from_chunks(cls, chunks: Callable[[], Iterable[np.ndarray]], n: int, dim: int, kind: str = "flat",
                    faiss_threshold: int = 50_000, exact_below: int | None = None) -> VectorIndex:
        """The same index, built from ``n`` vectors that ``chunks()`` yields in pieces (an encoder's batches, a file
        read block by block), so that FAISS's copy is the only full one: at 2M models of 384 floats that is 2.9 GB
        instead of twice that. ``chunks`` is called once, or twice for ``ivfpq`` (its training sample, then the
        vectors); it must yield the same vectors each time."""
        index = cls.__new__(cls)
        index._choose(n, dim, kind, faiss_threshold if exact_below is None else exact_below)
        if index.uses_faiss:
            index._build(chunks, n, dim)
        else:
            index.vectors = np.concatenate([np.asarray(c, dtype=np.float32) for c in chunks()]).reshape(-1, dim)
        if len(index.vectors) != n:
            raise ValueError(f"chunks() yielded {len(index.vectors)} vectors, not the n={n} announced")
        return index

    def _choose(self, n: int, dim: int, kind: str, exact_below: int) -> None:
        if kind not in INDEX_KINDS:
            raise ValueError(f"index must be one of {', '.join(INDEX_KINDS)}, not {kind!r}")
        self.kind_used = "exact" if kind == "exact" or n <= exact_below else kind
        if self.kind_used == "ivfpq" and (n < 39 * 256 or dim % 8):
            self.kind_used = "flat"
        self.uses_faiss = self.kind_used != "exact"
        self._faiss = None
        self._ef = 128

    def _build(self, chunks: Callable[[], Iterable[np.ndarray]], n: int, dim: int) -> None:
        import faiss

        if self.kind_used == "flat":
            index = faiss.IndexFlatIP(dim)
        elif self.kind_used == "hnsw":
            index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
        else:
            lists = int(min(max(16, np.sqrt(n)), n // 39))
            ivf = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, lists, dim // 8, 8, faiss.METRIC_INNER_PRODUCT)
            ivf.nprobe = 16
            # k-means on a seeded sample of 64 vectors per list (FAISS asks 39-256): minutes less at 2M models
            size = max(64 * lists, 39 * 256)         # and 39 per code of the 256 of each sub-quantizer
            sample = np.sort(np.random.default_rng(0).choice(n, size=size, replace=False)) if n > size \
                else np.arange(n)
            ivf.train(rows_at(chunks(), sample))
            index = faiss.IndexRefineFlat(ivf)
            index.k_factor = 64         # 16 gave recall@10 0.92 at 2M models, 64 gives 0.96 (docs/results.md)
        storage = _flat_storage(index).codes       # room for all n vectors at once: added piece by piece, the
        storage.resize(n * dim * 4)                  # store would grow by doubling and briefly hold two copies
        storage.resize(0)
        for chunk in chunks():
            index.add(np.ascontiguousarray(chunk, dtype=np.float32))
        self._faiss = index
        self.vectors = _stored_vectors(index, index.ntotal, dim)   # FAISS keeps a copy: use it, not a second one

    def __len__(self) -> int:
        return len(self.vectors)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """``[n_queries, n_vectors]`` inner products."""
        return np.ascontiguousarray(queries, dtype=np.float32) @ self.vectors.T

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` largest inner products per query, best first: ``(scores, indices)``."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        n = min(n, len(self.vectors))
        if self._faiss is not None:
            if self.kind_used == "hnsw":
                self._faiss.hnsw.efSearch = max(self._ef, 2 * n)
            return self._faiss.search(q, n)
        s = self.scores(q)
        idx = top_indices(s, n)
        return np.take_along_axis(s, idx, axis=1), idx



class IndexedSearch:
    """A router's optional FAISS search over its model vectors, for hub-sized registries.

    A vector router scores a prompt against every model as ``query . key`` (a prototype, a registry row, a ridge
    column). With ``kind`` ``flat`` / ``hnsw`` / ``ivfpq`` and more than ``threshold`` models, :meth:`rankings`
    searches a :class:`VectorIndex` over the keys instead, built on first use and kept until :meth:`clear` (the
    owner calls it whenever the keys change: after learning, after loading a checkpoint). ``exact`` (the
    default) never indexes. Equal scores may come back in any order from FAISS (exact routing breaks ties by
    model order)."""

    def __init__(self, kind: str = "exact", threshold: int = 50_000):
        if kind not in INDEX_KINDS:
            raise ValueError(f"index must be one of {', '.join(INDEX_KINDS)}, not {kind!r}")
        self.kind, self.threshold = kind, int(threshold)
        self._index: VectorIndex | None = None

    @property
    def parameters(self) -> dict[str, Any]:
        """What goes into a router's ``meta.parameters``: nothing when exact (the runs of record stay comparable)."""
        return {} if self.kind == "exact" else {"index": self.kind, "faiss_threshold": self.threshold}

    def applies(self, n_models: int) -> bool:
        return self.kind != "exact" and n_models > self.threshold

    def clear(self) -> None:
        self._index = None

    def rankings(self, keys: Callable[[], np.ndarray], ids: Sequence[str], queries: np.ndarray,
                 top_k: int) -> list[list[tuple[str, float]]]:
        """The ``top_k`` models of each query by inner product with ``keys()`` (row i: model ``ids[i]``)."""
        if self._index is None:
            self._index = VectorIndex(keys(), kind=self.kind, exact_below=self.threshold)
        values, rows = self._index.search(queries, top_k)
        return [[(ids[i], float(v)) for v, i in zip(vs, rs) if i >= 0] for vs, rs in zip(values, rows)]

def top_indices(scores: np.ndarray, n: int) -> np.ndarray:
    """Column indices of the ``n`` largest scores of each row, best first, equal scores in column order:
    exactly ``np.argsort(-scores, axis=1, kind="stable")[:, :n]``, without sorting whole rows.

    Each row is partitioned around its n-th largest score; only the columns at or above it (ties included)
    are sorted, so routing over a large registry costs O(N) per prompt instead of O(N log N). A row whose
    n-th score is not finite (NaN, or fewer than n finite scores) is sorted whole.
    """
    n_cols = scores.shape[1]
    if n >= n_cols or n_cols < 4 * n:
        return np.argsort(-scores, axis=1, kind="stable")[:, :n]
    neg = -scores
    kth = np.partition(neg, n - 1, axis=1)[:, n - 1]
    out = np.empty((len(scores), n), dtype=np.int64)
    for i, (row, bound) in enumerate(zip(neg, kth)):
        if not np.isfinite(bound):
            out[i] = np.argsort(row, kind="stable")[:n]
            continue
        kept = np.flatnonzero(row <= bound)
        out[i] = kept[np.argsort(row[kept], kind="stable")[:n]]
    return out


def make_cache(cache_dir: str | Path | bool | None) -> EmbeddingCache | None:
    """``None``/``True``: the default folder; a path: that folder; ``False``: no disk cache."""
    if cache_dir is False:
        return None
    return EmbeddingCache(None if cache_dir in (None, True) else cache_dir)


def resolve_device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
