"""BGE-M3 hybrid retrieval with cross-encoder re-ranking (the paper's BGE-M3 baseline), on transformers.

Implemented directly on ``transformers`` (FlagEmbedding does not import on transformers 5), following
BGE-M3's inference:

* **dense**: the CLS vector of the last hidden state, L2-normalised; similarity = inner product;
* **sparse**: per token ``relu(sparse_linear(hidden_state))``, the weights of a token id repeated in a
  text reduced by max, special tokens (CLS / EOS / PAD / UNK, i.e. the tokenizer's special ids)
  dropped; similarity = lexical matching score = sum over shared token ids of the product of weights,
  i.e. the dot product of the two sparse vocabulary vectors. ``sparse_linear.pt`` (a
  ``Linear(hidden, 1)`` state dict) must be in the model folder / repository: a missing head is an
  error, never a random initialisation;
* **hybrid** card score = ``dense_weight * dense + sparse_weight * sparse`` (0.7 / 0.3);
* **re-ranking**: the ``rerank_top`` (50) best candidate cards of each prompt by hybrid score are
  re-scored by a cross-encoder (``AutoModelForSequenceClassification`` on (prompt, card) pairs; the
  relevance logit), e.g. ``BAAI/bge-reranker-v2-m3``. The other cards keep their hybrid order, shifted
  below the lowest re-ranked score, so re-ranking reorders the top ``rerank_top`` cards only.
  ``reranker=None`` turns re-ranking off.

A model then scores its best card (base class). Dense and sparse card / prompt vectors go through
the shared embedding cache; cross-encoder scores are not cached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from .base import CardRetriever
from .encoders import cached_encode_multi, make_cache, model_identity, resolve_device, top_indices

PAPER_MODEL = "BAAI/bge-m3"
PAPER_RERANKER = "BAAI/bge-reranker-v2-m3"
SPARSE_HEAD = "sparse_linear.pt"


class MissingSparseHeadError(FileNotFoundError):
    """The BGE-M3 model folder has no ``sparse_linear.pt``."""


def _model_file(name_or_path: str, filename: str, revision: str | None = None) -> Path | None:
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path / filename if (path / filename).is_file() else None
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(name_or_path, filename, revision=revision))
    except Exception:  # noqa: BLE001 - absent from the repository, or not reachable
        return None


class BGEM3Router(CardRetriever):
    """BGE-M3 dense + sparse hybrid over the cards, top ``rerank_top`` re-ranked by a cross-encoder (``bge-m3``)."""

    def __init__(self, model: str = PAPER_MODEL, reranker: str | None = PAPER_RERANKER, dense_weight: float = 0.7,
                 sparse_weight: float = 0.3, rerank_top: int = 50, batch_size: int = 16, max_length: int = 512,
                 rerank_max_length: int = 512, cache_dir: str | Path | bool | None = None,
                 oracle_domain: bool = False, template: str = "json", device: str | None = None,
                 revision: str | None = None):
        self.model_name = str(model)
        self.reranker_name = str(reranker) if reranker else None
        self.dense_weight, self.sparse_weight = float(dense_weight), float(sparse_weight)
        self.rerank_top = int(rerank_top)
        self.batch_size = int(batch_size)
        self.max_length, self.rerank_max_length = int(max_length), int(rerank_max_length)
        self.cache = make_cache(cache_dir)
        self.device = device
        self.revision = revision
        self._setup("bge-m3", oracle_domain=oracle_domain, template=template,
                    parameters={"model": self.model_name, "reranker": self.reranker_name,
                                "dense_weight": self.dense_weight, "sparse_weight": self.sparse_weight,
                                "rerank_top": self.rerank_top if self.reranker_name else 0,
                                "max_length": self.max_length, "rerank_max_length": self.rerank_max_length},
                    description="zero-shot BGE-M3 hybrid retrieval (dense CLS + sparse lexical weights) over the "
                                "model cards seen so far, top cards re-ranked by a cross-encoder; a model scores "
                                "its best card.")
        self._encoder = None
        self._identity: dict | None = None
        self._rerank = None
        self.dense: np.ndarray | None = None       # cards x hidden
        self.sparse: sp.csr_matrix | None = None   # vocabulary x cards

    # ----------------------------------------------------------------------------------- models

    def _load_encoder(self):
        if self._encoder is None:
            import torch
            from transformers import AutoModel, AutoTokenizer

            head_file = _model_file(self.model_name, SPARSE_HEAD, self.revision)
            if head_file is None:
                raise MissingSparseHeadError(
                    f"{self.model_name} has no {SPARSE_HEAD}: BGE-M3's sparse head is required (a random head "
                    "would give meaningless lexical scores); use a BGE-M3 checkpoint such as BAAI/bge-m3")
            device = resolve_device(self.device)
            tokenizer = AutoTokenizer.from_pretrained(self.model_name, revision=self.revision)
            model = AutoModel.from_pretrained(self.model_name, revision=self.revision).to(device).eval()
            head = torch.nn.Linear(model.config.hidden_size, 1)
            head.load_state_dict(torch.load(head_file, map_location="cpu", weights_only=True))
            head = head.to(device).eval()
            vocab = max(len(tokenizer), int(model.config.vocab_size))
            self._encoder = (tokenizer, model, head, device, vocab, np.array(tokenizer.all_special_ids))
        return self._encoder

    @property
    def special_ids(self) -> np.ndarray:
        """Token ids that never carry a sparse weight (the tokenizer's special tokens)."""
        return self._load_encoder()[-1]

    def _load_reranker(self):
        if self._rerank is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            device = resolve_device(self.device)
            tokenizer = AutoTokenizer.from_pretrained(self.reranker_name)
            model = AutoModelForSequenceClassification.from_pretrained(self.reranker_name).to(device).eval()
            self._rerank = (tokenizer, model, device)
        return self._rerank

    # --------------------------------------------------------------------------------- encoding

    def _compute(self, texts: list[str]) -> dict[str, object]:
        import torch

        tokenizer, model, head, device, vocab, special = self._load_encoder()
        dense_rows, sparse_rows = [], []
        with torch.inference_mode():
            for lo in range(0, len(texts), self.batch_size):
                enc = tokenizer(texts[lo:lo + self.batch_size], padding=True, truncation=True,
                                max_length=self.max_length, return_tensors="pt").to(device)
                hidden = model(**enc).last_hidden_state
                dense_rows.append(torch.nn.functional.normalize(hidden[:, 0], dim=-1).float().cpu().numpy())
                weights = torch.relu(head(hidden)).squeeze(-1).float().cpu().numpy()       # batch x tokens
                ids = enc["input_ids"].cpu().numpy()
                keep = enc["attention_mask"].cpu().numpy().astype(bool) & ~np.isin(ids, special) & (weights > 0)
                rows, cols = np.nonzero(keep)
                tok, w = ids[rows, cols], weights[rows, cols]
                # max weight per (text, token id)
                order = np.lexsort((tok, rows))
                rows, tok, w = rows[order], tok[order], w[order]
                first = np.ones(len(rows), dtype=bool)
                first[1:] = (rows[1:] != rows[:-1]) | (tok[1:] != tok[:-1])
                starts = np.flatnonzero(first)
                wmax = np.maximum.reduceat(w, starts) if len(w) else w
                sparse_rows.append(sp.csr_matrix((wmax, (rows[starts], tok[starts])), shape=(len(ids), vocab),
                                                 dtype=np.float32))
        return {"dense": np.concatenate(dense_rows).astype(np.float32), "sparse": sp.vstack(sparse_rows, format="csr")}

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, sp.csr_matrix]:
        """(normalised dense ``[n, hidden]``, sparse lexical weights ``[n, vocabulary]``) of ``texts``."""
        if self.cache is not None and self._identity is None:
            if _model_file(self.model_name, SPARSE_HEAD, self.revision) is None:
                self._load_encoder()                  # raises the missing-head error before any lookup
            self._identity = {"encoder": "bge-m3 (transformers)", "max_length": self.max_length,
                              **model_identity(self.model_name, self.revision, self.cache.memo_file)}
        identity = self._identity or {}
        out = cached_encode_multi(self.cache, {"dense": {**identity, "output": "dense CLS, normalised"},
                                               "sparse": {**identity, "output": "sparse lexical weights"}},
                                  texts, self._compute)
        return out["dense"], out["sparse"]

    # ---------------------------------------------------------------------------------- scoring

    def index(self, texts: list[str]) -> None:
        dense, sparse = self.embed(texts)
        self.dense, self.sparse = dense, sparse.T.tocsr()

    def hybrid_scores(self, queries: Sequence[str]) -> np.ndarray:
        """``[n_queries, n_cards]`` ``dense_weight * dense + sparse_weight * lexical`` scores."""
        q_dense, q_sparse = self.embed(queries)
        dense = q_dense.astype(np.float64) @ self.dense.T.astype(np.float64)
        lexical = (q_sparse @ self.sparse).toarray().astype(np.float64)
        return self.dense_weight * dense + self.sparse_weight * lexical

    def rerank_scores(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """Cross-encoder relevance logits of (prompt, card text) pairs."""
        import torch

        tokenizer, model, device = self._load_reranker()
        out = []
        with torch.inference_mode():
            for lo in range(0, len(pairs), self.batch_size):
                chunk = pairs[lo:lo + self.batch_size]
                enc = tokenizer([p[0] for p in chunk], [p[1] for p in chunk], padding=True, truncation=True,
                                max_length=self.rerank_max_length, return_tensors="pt").to(device)
                logits = model(**enc).logits.float()
                # one output: the relevance logit; two: the log-odds of label 1
                score = logits[:, 0] if logits.shape[1] == 1 else logits[:, -1] - logits[:, 0]
                out.append(score.cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def score(self, queries: Sequence[str], candidates: np.ndarray | None = None) -> np.ndarray:
        scores = self.hybrid_scores(queries)
        if not self.reranker_name or self.rerank_top <= 0:
            return scores
        masked = scores if candidates is None else np.where(candidates, scores, -np.inf)
        order = top_indices(masked, self.rerank_top)
        pairs, where = [], []
        for r, (query, cards) in enumerate(zip(queries, order)):
            for c in cards:
                if np.isfinite(masked[r, c]):
                    pairs.append((query, self.card_texts[c]))
                    where.append((r, c))
        logits = self.rerank_scores(pairs)
        out = scores.copy()
        reranked = np.zeros_like(scores, dtype=bool)
        for (r, c), value in zip(where, logits):
            out[r, c] = value
            reranked[r, c] = True
        for r in range(len(queries)):
            if not reranked[r].any():
                continue
            rest = ~reranked[r] if candidates is None else (~reranked[r] & candidates[r])
            if rest.any():
                # keep the hybrid order of the other cards, strictly below every re-ranked card
                shift = out[r, reranked[r]].min() - scores[r, rest].max() - 1.0
                out[r, ~reranked[r]] = scores[r, ~reranked[r]] + shift
        return out
