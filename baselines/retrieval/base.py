"""Shared machinery of the zero-shot card-retrieval routers (the CMR paper's retrieval baselines).

The setting, for every backend (BM25, Lucene, dense, SPLADE, BGE-M3):

* **documents** are the model cards of every model seen so far (``Experience.cards``, cumulative over
  experiences), rendered by :func:`~cmrbench.baselines.retrieval.cardtext.card_text`;
* the **query** is the prompt;
* a **model's score** is the best score among its cards (several cards can share a model id);
* models are ranked by score, **ties broken by model id ascending**; BM25 follows the paper's code instead
  (``tie_break="rank-bm25"``: cards in rank-bm25's ``get_top_n`` order, a model at its first card);
* the candidates are the models that have a card *and* are in ``classes_seen_so_far`` (cards of
  other models stay in the index, so that corpus statistics such as BM25's idf are those of the
  whole card collection, but they are never returned); a seen model without any card cannot be
  retrieved.

``oracle_domain=True`` is the paper's "oracle" variant: the router declares ``needs_gold = True``, the
evaluator then calls ``route_with_gold`` with the gold rows, and only cards whose domain equals the
prompt's gold domain are scored (a prompt whose domain matches no candidate card falls back to all
cards). The variant reads the answer key, so its meta says ``reference_row=True``.

A backend subclasses :class:`CardRetriever` and implements ``index(texts)`` and
``score(queries, candidates) -> [n_queries, n_cards]``; a backend that can only return its best
cards (Lucene, FAISS) also implements ``search(queries, n)`` and sets ``uses_search``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np
import polars as pl

from cmrbench.protocol import Ranking, RouterMeta

from .cardtext import TEMPLATES, card_text
from .encoders import top_indices

TIE_BREAKS = {
    "model-id": "model id ascending",
    "rank-bm25": "cards by np.argsort(scores, kind='stable')[::-1] (rank-bm25 get_top_n: ties, the later card first), "
                 "a model at its first card",
}


def top_rankings(scores: np.ndarray, ids: Sequence[str], top_k: int) -> list[Ranking]:
    """``[n_prompts, n_models]`` scores -> the top ``top_k`` (id, score) per row, best first; equal scores keep
    column order (``ids`` sorted ascending makes that the tie rule); non-finite scores are left out."""
    order = top_indices(scores, top_k)
    return [[(ids[i], float(row[i])) for i in idx if np.isfinite(row[i])] for row, idx in zip(scores, order)]


class NoCardsError(ValueError):
    """The experience has no model cards to retrieve from."""


class CardRetriever(ABC):
    """Base of the card-retrieval routers: card bookkeeping, max aggregation, top-k with the tie rule.

    Subclasses call :meth:`_setup` in their ``__init__`` and implement :meth:`index` and :meth:`score`.
    """

    #: set by subclasses whose ``search`` should be used instead of the full score matrix
    uses_search: bool = False
    #: score of a card that ``search`` did not return once a query's hits are exhausted (must not exceed
    #: any returned score, e.g. 0 for Lucene BM25)
    search_floor: float = -np.inf

    # ------------------------------------------------------------------------------------ setup

    def _setup(self, name: str, *, oracle_domain: bool = False, template: str = "json",
               parameters: dict[str, Any] | None = None, description: str = "",
               reference: str | None = None, version: str = "1", tie_break: str = "model-id") -> None:
        if template not in TEMPLATES:
            raise ValueError(f"unknown card template '{template}'; choose one of {', '.join(TEMPLATES)}")
        if tie_break not in TIE_BREAKS:
            raise ValueError(f"unknown tie_break '{tie_break}'; choose one of {', '.join(TIE_BREAKS)}")
        self.oracle_domain = bool(oracle_domain)
        self.template = template
        self.tie_break = tie_break
        self.needs_gold = self.oracle_domain
        params = {"template": template, "oracle_domain": self.oracle_domain, "aggregation": "max over cards",
                  "tie_break": TIE_BREAKS[tie_break], **(parameters or {})}
        self.meta = RouterMeta(
            name=f"{name}-oracle-domain" if self.oracle_domain else name, version=version,
            description=description + (" Oracle variant: only cards of the gold domain are scored (reads "
                                       "the answer key)." if self.oracle_domain else ""),
            reference=reference, parameters=params, zero_shot=True, reference_row=self.oracle_domain)
        self.card_ids: list[str] = []
        self.card_texts: list[str] = []
        self.card_domains = np.array([], dtype=object)
        self.model_ids: list[str] = []           # sorted ascending: the index order is the tie rule
        self.card_model = np.array([], dtype=np.int64)  # card -> index into model_ids
        self.model_allowed = np.array([], dtype=bool)   # model is among classes_seen_so_far
        self._perm = np.array([], dtype=np.int64)       # cards ordered by model
        self._starts = np.array([], dtype=np.int64)     # first position of each model in _perm

    # ---------------------------------------------------------------------------- backend hooks

    @abstractmethod
    def index(self, texts: list[str]) -> None:
        """Build the backend's index over the card texts (called by ``learn``, card order kept)."""

    @abstractmethod
    def score(self, queries: Sequence[str], candidates: np.ndarray | None = None) -> np.ndarray:
        """Scores ``[n_queries, n_cards]`` (higher is better).

        ``candidates`` is ``None`` or a boolean mask ``[n_queries, n_cards]`` of the cards that may be
        returned; most backends ignore it (the base class masks afterwards), a re-ranking backend uses
        it to spend its budget on candidate cards only.
        """

    def search(self, queries: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` best cards per query: ``(scores, card indices)``, each ``[n_queries, n]``, best first.

        Rows with fewer hits are padded with card index ``-1`` (the query's hits are exhausted: every
        other card scores ``search_floor``). Only backends with ``uses_search = True`` implement it.
        """
        raise NotImplementedError

    # ----------------------------------------------------------------------------- the protocol

    def learn(self, experience) -> None:
        """Index the cards of every model seen so far (the whole cumulative collection, rebuilt)."""
        cards: pl.DataFrame = experience.cards
        if cards.height == 0:
            raise NoCardsError(f"experience {getattr(experience, 'current_experience', '?')} has no model cards; "
                               "card retrieval needs at least one")
        self.card_ids = cards["card_id"].to_list()
        self.card_texts = [card_text(c, self.template) for c in cards["card"].to_list()]
        self.card_domains = np.array(cards["domain"].to_list(), dtype=object)
        card_models = cards["model_id"].to_list()
        self.model_ids = sorted(set(card_models))
        position = {m: i for i, m in enumerate(self.model_ids)}
        self.card_model = np.array([position[m] for m in card_models], dtype=np.int64)
        seen = getattr(experience, "classes_seen_so_far", None)
        seen = set(seen) if seen is not None else set(self.model_ids)
        self.model_allowed = np.array([m in seen for m in self.model_ids], dtype=bool)
        if not self.model_allowed.any():
            raise NoCardsError("no card belongs to a model seen so far")
        self._perm = np.argsort(self.card_model, kind="stable")
        self._starts = np.searchsorted(self.card_model[self._perm], np.arange(len(self.model_ids)))
        self.index(self.card_texts)

    def route(self, prompts: Sequence[str], top_k: int) -> list[Ranking]:
        if self.oracle_domain:
            raise RuntimeError(f"{self.meta.name} reads the gold domain; the evaluator calls route_with_gold "
                               "(construct it with oracle_domain=False for the ordinary router)")
        return self.rank(list(prompts), top_k)

    def route_with_gold(self, prompts: Sequence[str], top_k: int, gold: pl.DataFrame) -> list[Ranking]:
        """Oracle variant: only cards whose domain equals each prompt's gold domain are scored."""
        domains = gold["domain"].to_list()
        if len(domains) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(domains)} gold rows")
        mask = self.card_domains[None, :] == np.array(domains, dtype=object)[:, None]
        mask &= self.model_allowed[self.card_model][None, :]
        empty = ~mask.any(axis=1)
        mask[empty] = True        # no candidate card of that domain: fall back to all cards
        return self.rank(list(prompts), top_k, mask)

    # ---------------------------------------------------------------------------------- ranking

    def model_scores(self, prompts: list[str], card_mask: np.ndarray | None = None) -> np.ndarray:
        """``[n_prompts, n_models]`` best card score per model (``-inf``: not a candidate), full matrix."""
        candidates = self._candidates(len(prompts), card_mask)
        scores = np.asarray(self.score(prompts, candidates), dtype=np.float64)
        if scores.shape != (len(prompts), len(self.card_ids)):
            raise RuntimeError(f"{type(self).__name__}.score returned shape {scores.shape}, expected "
                               f"{(len(prompts), len(self.card_ids))}")
        return self._aggregate(scores, candidates)

    def rank(self, prompts: list[str], top_k: int, card_mask: np.ndarray | None = None) -> list[Ranking]:
        """Top-``top_k`` (model id, score) per prompt, best first, ties by model id ascending."""
        if not self.card_ids:
            raise RuntimeError(f"{type(self).__name__}: route() before learn()")
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        if not prompts:
            return []
        if self.uses_search:       # a backend that hands out its best cards only: ties by model id
            return self._rank_by_search(prompts, top_k, card_mask)
        if self.tie_break == "rank-bm25":
            return self._rank_cards_first(prompts, top_k, card_mask)
        return self._top(self.model_scores(prompts, card_mask), top_k)

    def _rank_cards_first(self, prompts: list[str], top_k: int, card_mask: np.ndarray | None) -> list[Ranking]:
        """Cards in rank-bm25's ``get_top_n`` order (argsort, reversed: among equal scores the later card first),
        each model at the place of its first card: the paper's retrieval, where the top card's model is the
        prediction. The sort is stable so that ties fall the same way on every CPU: numpy's default argsort,
        which ``get_top_n`` calls, orders equal scores differently with and without AVX-512."""
        candidates = self._candidates(len(prompts), card_mask)
        scores = np.asarray(self.score(prompts, candidates), dtype=np.float64)
        if candidates is not None:
            scores = np.where(candidates, scores, -np.inf)
        out = []
        for row in scores:
            ranking: Ranking = []
            taken: set[int] = set()
            for card in np.argsort(row, kind="stable")[::-1]:
                model = int(self.card_model[card])
                if model in taken or not self.model_allowed[model] or not np.isfinite(row[card]):
                    continue
                taken.add(model)
                ranking.append((self.model_ids[model], float(row[card])))
                if len(ranking) == top_k:
                    break
            out.append(ranking)
        return out

    def _candidates(self, n_prompts: int, card_mask: np.ndarray | None) -> np.ndarray | None:
        allowed = self.model_allowed[self.card_model]
        if card_mask is None:
            return None if allowed.all() else np.broadcast_to(allowed, (n_prompts, len(allowed)))
        return card_mask & allowed[None, :]

    def _aggregate(self, card_scores: np.ndarray, candidates: np.ndarray | None) -> np.ndarray:
        if candidates is not None:
            card_scores = np.where(candidates, card_scores, -np.inf)
        models = np.maximum.reduceat(card_scores[:, self._perm], self._starts, axis=1)
        models[:, ~self.model_allowed] = -np.inf
        return models

    def _top(self, model_scores: np.ndarray, top_k: int) -> list[Ranking]:
        return top_rankings(model_scores, self.model_ids, top_k)

    def _rank_by_search(self, prompts: list[str], top_k: int, card_mask: np.ndarray | None) -> list[Ranking]:
        """Top-k from a backend that returns only its best cards: widen the search until it is exact."""
        n_cards = len(self.card_ids)
        candidates = self._candidates(len(prompts), card_mask)
        result: list[Ranking | None] = [None] * len(prompts)
        pending = np.arange(len(prompts))
        n = min(n_cards, max(64, 8 * top_k))
        while len(pending):
            vals, idx = self.search([prompts[i] for i in pending], n)
            vals = np.asarray(vals, dtype=np.float64)
            idx = np.asarray(idx, dtype=np.int64)
            hit = idx >= 0
            exhausted = (~hit).any(axis=1) | (n >= n_cards)
            card = np.full((len(pending), n_cards), -np.inf)
            card[exhausted] = self.search_floor      # cards a finished search did not return
            rows = np.broadcast_to(np.arange(len(pending))[:, None], idx.shape)
            card[rows[hit], idx[hit]] = vals[hit]
            sub = None if candidates is None else candidates[pending]
            ranked = self._top(self._aggregate(card, sub), top_k)
            still = []
            for r, p in enumerate(pending):
                full = len(ranked[r]) == top_k or len(ranked[r]) == self._n_candidates(sub, r)
                last = vals[r][hit[r]][-1] if hit[r].any() else -np.inf
                # exact once every card left out scores below the k-th model (no later card can enter or tie)
                if exhausted[r] or (full and ranked[r] and ranked[r][-1][1] > last):
                    result[p] = ranked[r]
                else:
                    still.append(p)
            pending = np.array(still, dtype=np.int64)
            n = min(n_cards, n * 4)
        return result  # type: ignore[return-value]

    def _n_candidates(self, candidates: np.ndarray | None, row: int) -> int:
        allowed_cards = self.model_allowed[self.card_model]
        if candidates is not None:
            allowed_cards = allowed_cards & candidates[row]
        return len(np.unique(self.card_model[allowed_cards]))
