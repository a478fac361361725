"""CARvE, the reference continual router (paper §4): the trainable embedding router with

- fixed-size candidate sets (positive + mined hard + same-domain / related-domain semantic + far
  negatives) and soft targets over taxonomy neighbours;
- domain-aware batches (two domains per batch, replay mixed in);
- structured replay: a domain- and model-balanced coreset of each previous experience, chosen by
  farthest-point sampling in a fixed embedding space (frozen MiniLM here; BGE-M3 in the paper);
- anchoring to the snapshot of the previous experience (old registry rows: mean 1 - cos; projection:
  mean squared drift), and
- a two-phase schedule for experiences 2..T: the first 40 % of steps train only the router head
  (backbone frozen, anchoring on, replay loss x5, soft targets off), then everything trains without
  anchoring.

Each part is switchable in ``configs/carve.yaml`` (``--router-arg anchoring=none``, ``replay_selection=random``,
``num_candidates=16``, ``init=card``...) for the paper's ablations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import torch

from cmrbench.baselines.strategies.replay import ReplayRouter, with_budget
from cmrbench.baselines.trainable.replay import RandomSelector, Selector
from cmrbench.baselines.trainable.training import Batch, CandidateSet, RouterNet, StepContext, Trainer
from cmrbench.builders.taxonomy import UnknownDomainError, category_of
from cmrbench.data import Experience

from .anchoring import embedding_anchor_loss, projection_anchor_loss
from .candidates import CandidateConfig, HardNegativeCache, ModelIndex, build_candidates, soft_targets
from .replay import select_replay
from .sampler import domain_batches

ANCHORING = ("both", "embedding", "projection", "none")


def _category(domain: str) -> str:
    try:
        return category_of(domain)
    except UnknownDomainError:
        return domain


class FixedEncoder:
    """The frozen embedding space of replay selection and card-guided init (cached on disk)."""

    def __init__(self, model: str):
        from cmrbench.baselines.retrieval.dense import DenseEncoder
        self.dense = DenseEncoder(model)

    def __call__(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.dense.embed(texts, "query"), dtype=np.float32)


class StructuredSelector:
    """Selector for the replay buffer: per-domain quotas, a cap per model, picked in a fixed space."""

    def __init__(self, method: str, encoder: FixedEncoder, floor: int, per_model: int):
        self.name = method
        self.method, self.encoder, self.floor, self.per_model = method, encoder, floor, per_model

    def __call__(self, frame: pl.DataFrame, budget: int, rng: np.random.Generator) -> list[int]:
        if budget <= 0 or frame.height == 0:
            return []
        emb = self.encoder(frame["prompt"].to_list())
        return select_replay(emb, frame["model_id"].to_list(), frame["domain"].to_list(), budget / frame.height,
                             method=self.method, floor=self.floor, per_model=self.per_model,
                             seed=int(rng.integers(2 ** 31)))


class CarveCandidates:
    """Candidate sets with mined hard negatives; soft targets outside phase 1."""

    def __init__(self, router: CarveRouter, index: ModelIndex, families: list[str], seed: int):
        c = router.cfg
        self.router = router
        self.index = index
        self.families = families
        self.config = CandidateConfig(k=c["num_candidates"], hard=c["hard_negatives"], semantic=c["semantic_negatives"],
                                      far=c["far_negatives"], max_related_domains=c["max_related_domains"],
                                      semantic_pool=c["semantic_pool"])
        self.cache = HardNegativeCache(top=c["hard_cache_size"], every=c["mine_every"])
        self.rng = np.random.default_rng(seed)

    def _mine(self, net: RouterNet, step: int) -> None:
        """Score every (domain, gold) key's mean prompt embedding against the registry, no gradients."""
        frame = self.router.training_frame
        keys = list(zip(frame["domain"].to_list(), net.registry.rows(frame["model_id"].to_list()).tolist()))
        z = net.encode(frame["prompt"].to_list(), self.router.cfg["eval_batch_size"])
        groups: dict[tuple[str, int], list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key, []).append(i)
        order = sorted(groups)
        with torch.no_grad():
            means = torch.stack([z[groups[k]].mean(0) for k in order])
            scores = net.logits(torch.nn.functional.normalize(means, dim=-1)).float().cpu().numpy()
        self.cache.mine(step, order, scores)

    def __call__(self, batch: Batch, net: RouterNet, step: int) -> CandidateSet:
        if self.config.hard and self.cache.due(step):
            self._mine(net, step)
        golds = batch.targets.tolist()
        domains = batch.frame["domain"].to_list()
        families = batch.frame["family"].to_list()
        rows, targets = [], []
        soft = self.router.cfg["soft_epsilon"] > 0 and not self.router.in_phase1
        for gold, domain, family in zip(golds, domains, families):
            cands = build_candidates(gold, domain, self.index, self.config, self.rng, self.cache.get(domain, gold))
            rows.append(cands)
            if soft:
                targets.append(soft_targets(cands, domain, self.index, self.families, family,
                                            self.router.cfg["soft_epsilon"], self.router.cfg["soft_neighbours"]))
        width = min(len(r) for r in rows)  # every set has min(K, registry size) rows
        index = torch.as_tensor(np.stack([r[:width] for r in rows]), device=net.device)
        if soft:
            target = torch.as_tensor(np.stack([t[:width] for t in targets]), device=net.device)
            target = target / target.sum(1, keepdim=True)
        else:
            target = torch.zeros(len(rows), dtype=torch.long, device=net.device)
        return CandidateSet(index, target)


class Anchoring:
    """Phase-1 anchoring of old registry rows and of the projection to the previous snapshot."""

    name = "anchor"

    def __init__(self, router: CarveRouter):
        self.router = router
        prev = router.previous
        self.rows = prev.params["registry.weight"][:prev.n_models]
        self.projection = {k: v for k, v in prev.params.items() if k.startswith("projection.")}

    def __call__(self, ctx: StepContext) -> torch.Tensor | None:
        if not self.router.in_phase1:
            return None
        mode = self.router.cfg["anchoring"]
        params = ctx.net.tracked_parameters()
        total = None
        if mode in ("both", "embedding"):
            total = self.router.cfg["lambda_embedding"] * embedding_anchor_loss(params["registry.weight"],
                                                                                self.rows.to(ctx.z.device))
        if mode in ("both", "projection"):
            term = self.router.cfg["lambda_projection"] * projection_anchor_loss(
                {k: params[k] for k in self.projection}, {k: v.to(ctx.z.device) for k, v in self.projection.items()})
            total = term if total is None else total + term
        return total


class TwoPhase:
    """Experiences 2..T: the first ``phase1_fraction`` of steps train the router head only."""

    def __init__(self, router: CarveRouter):
        self.router = router
        self.saved_lr: dict[str, float] = {}

    def __call__(self, trainer: Trainer, step: int, total: int) -> None:
        c = self.router.cfg
        boundary = int(round(c["phase1_fraction"] * total))
        if step == 0 and boundary > 0:
            self.router.in_phase1 = True
            self.saved_lr = dict(trainer.base_lr)
            trainer.set_trainable("backbone", False)
            trainer.base_lr["projection"] = c["phase1_lr_projection"]
            trainer.base_lr["registry"] = c["phase1_lr_registry"]
            boost = float(c["replay_boost"])
            trainer.extra_weight = lambda batch: torch.where(
                torch.as_tensor(batch.frame["replay"].to_numpy(), device=batch.weights.device),
                torch.full_like(batch.weights, boost), torch.ones_like(batch.weights))
        if step == boundary and self.router.in_phase1:
            self.router.in_phase1 = False
            trainer.set_trainable("backbone", True)
            trainer.base_lr.update(self.saved_lr)
            trainer.extra_weight = None


class CarveRouter(ReplayRouter):
    """CARvE: contrastive embedding router with checkpoint-based anchoring and structured replay."""

    config_name = "carve"
    description = ("CARvE: candidate-set contrastive router with hard negatives, structured replay and "
                   "checkpoint-based anchoring (two-phase schedule)")

    def __init__(self, seed: int = 0, config: str | None = None, name: str | None = None, **overrides: Any):
        self._encoder: FixedEncoder | None = None
        super().__init__(seed=seed, config=config, name=name, **overrides)
        if self.cfg["anchoring"] not in ANCHORING:
            raise ValueError(f"anchoring must be one of {ANCHORING}")
        self.in_phase1 = False
        self.training_frame = pl.DataFrame()
        self.model_domain: dict[str, str] = {}
        self.model_family: dict[str, str] = {}

    @property
    def encoder(self) -> FixedEncoder:
        if self._encoder is None:
            self._encoder = FixedEncoder(self.cfg["replay_encoder"])
        return self._encoder

    def make_selector(self) -> Selector:
        if self.cfg["replay_selection"] == "uniform":
            return RandomSelector()
        return StructuredSelector(self.cfg["replay_selection"], self.encoder, self.cfg["replay_floor"],
                                  self.cfg["replay_per_model"])

    def begin_experience(self, experience: Experience, current: pl.DataFrame) -> None:
        for model_id, families, domains in experience.models.select("model_id", "families", "domains").rows():
            self.model_domain.setdefault(model_id, sorted(domains)[0])
            self.model_family.setdefault(model_id, sorted(families)[0])

    def initialise_rows(self, experience: Experience, current: pl.DataFrame, rows: list[int]) -> None:
        if self.cfg["init"] != "card":
            super().initialise_rows(experience, current, rows)
        elif self.previous is not None:
            self._card_guided_init(experience)

    def _card_guided_init(self, experience: Experience) -> None:
        """New rows = softmax(card similarity / tau)-weighted mixture of the top old rows (the paper's
        ablation; it found this worse than random init)."""
        net = self.ensure_net()
        ids = net.registry.ids
        n_old = self.previous.n_models
        if n_old == 0 or n_old == len(ids):
            return
        cards = dict(experience.models.select("model_id", "card").rows())
        texts = [cards.get(m) or m for m in ids]
        emb = self.encoder(texts)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        sims = emb[n_old:] @ emb[:n_old].T
        top = min(self.cfg["card_init_top"], n_old)
        with torch.no_grad():
            old = net.registry.weight[:n_old]
            for i, row in enumerate(sims):
                best = np.argsort(-row, kind="stable")[:top]
                w = torch.softmax(torch.as_tensor(row[best] / self.cfg["card_init_tau"]), dim=0).to(old)
                net.registry.weight[n_old + i] = (w[:, None] * old[best]).sum(0)

    def training_examples(self, experience: Experience, current: pl.DataFrame) -> pl.DataFrame:
        frame = super().training_examples(experience, current)
        self.training_frame = frame
        return frame

    def candidate_sampler(self, experience: Experience, examples: pl.DataFrame):
        if self.cfg["candidates"] != "carve":  # ablation: every registered model, or uniform random negatives
            return super().candidate_sampler(experience, examples)
        net = self.ensure_net()
        domains = [self.model_domain.get(m, "unknown") for m in net.registry.ids]
        index = ModelIndex(domains, {d: _category(d) for d in set(domains)})
        families = [self.model_family.get(m, m) for m in net.registry.ids]
        return CarveCandidates(self, index, families, self.seed * 1000 + experience.current_experience)

    def batch_sampler(self, experience: Experience):
        size, per_batch = self.cfg["batch_size"], self.cfg["domains_per_batch"]
        if per_batch <= 0:  # ablation: plain shuffled batches
            return super().batch_sampler(experience)

        def make(examples: pl.DataFrame, epoch: int, generator: torch.Generator) -> list[list[int]]:
            rng = np.random.default_rng(int(torch.randint(0, 2 ** 31, (1,), generator=generator)))
            return domain_batches(examples["domain"].to_list(), size, rng, per_batch)
        return make

    def loss_hooks(self, experience: Experience) -> list:
        if self.previous is None or self.cfg["anchoring"] == "none":
            return []
        return [Anchoring(self)]

    def callbacks(self, experience: Experience) -> list:
        self.in_phase1 = False
        return [TwoPhase(self)] if self.previous is not None and self.cfg["two_phase"] else []


carve_10 = with_budget(CarveRouter, 0.1, "carve-10", "CARvE with 10 % structured replay.")
carve_20 = with_budget(CarveRouter, 0.2, "carve-20", "CARvE with 20 % structured replay.")
