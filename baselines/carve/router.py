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

Each part is a strategy plugin (``structured-replay``, ``carve``, ``anchoring``, ``two-phase``; the list is in
``configs/carve.yaml``, their settings in ``configs/plugins/``) and switchable (``--router-arg anchoring=none``,
``replay_selection=random``, ``num_candidates=16``, ``init=card``, ``two_phase=false``...) for the paper's ablations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import torch

from cmrbench.baselines.strategies.replay import ReplayPlugin
from cmrbench.baselines.trainable.plugins import StrategyPlugin, register_plugin
from cmrbench.baselines.trainable.buffer import RandomSelector, Selector
from cmrbench.baselines.trainable.router import TrainableRouter, strategy
from cmrbench.baselines.trainable.training import Batch, CandidateSet, RouterNet, StepContext, Trainer
from cmrbench.data import Experience

from .anchoring import embedding_anchor_loss, projection_anchor_loss
from .candidates import CandidateConfig, HardNegativeCache, ModelIndex, build_candidates, soft_targets
from .coreset import select_replay
from .sampler import domain_batches

ANCHORING = ("both", "embedding", "projection", "none")


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

    def __init__(self, router: TrainableRouter, frame: pl.DataFrame, index: ModelIndex, families: list[str],
                 seed: int, current: tuple[int, ModelIndex] | None = None):
        c = router.cfg
        self.cfg = c
        self.frame = frame                       # the training examples, mined for hard negatives
        self.phase = phase_of(router)
        self.index = index                       # where candidates are drawn from
        self.current = current                   # (experience, its own index): its examples' candidates instead
        self.families = families
        self.config = CandidateConfig(k=c["num_candidates"], hard=c["hard_negatives"], semantic=c["semantic_negatives"],
                                      far=c["far_negatives"], max_related_domains=c["max_related_domains"],
                                      semantic_pool=c["semantic_pool"])
        self.cache = HardNegativeCache(top=c["hard_cache_size"], every=c["mine_every"])
        self.rng = np.random.default_rng(seed)

    def _mine(self, net: RouterNet, step: int) -> None:
        """Score every (domain, gold) key's mean prompt embedding against the registry, no gradients."""
        frame = self.frame
        keys = list(zip(frame["domain"].to_list(), net.registry.rows(frame["model_id"].to_list()).tolist()))
        z = net.encode(frame["prompt"].to_list(), self.cfg["eval_batch_size"])
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
        experiences = batch.frame["experience"].to_list()
        rows, targets = [], []
        soft = self.cfg["soft_epsilon"] > 0 and not (self.phase is not None and self.phase.in_phase1)
        for gold, domain, family, exp in zip(golds, domains, families, experiences):
            index = self.current[1] if self.current is not None and exp == self.current[0] else self.index
            cands = build_candidates(gold, domain, index, self.config, self.rng, self.cache.get(domain, gold))
            rows.append(cands)
            if soft:
                targets.append(soft_targets(cands, domain, self.index, self.families, family,
                                            self.cfg["soft_epsilon"], self.cfg["soft_neighbours"]))
        width = min(len(r) for r in rows)  # every set has min(K, registry size) rows
        index = torch.as_tensor(np.stack([r[:width] for r in rows]), device=net.device)
        if soft:
            target = torch.as_tensor(np.stack([t[:width] for t in targets]), device=net.device)
            target = target / target.sum(1, keepdim=True)
        else:
            target = torch.zeros(len(rows), dtype=torch.long, device=net.device)
        return CandidateSet(index, target)


def phase_of(router: TrainableRouter) -> TwoPhasePlugin | None:
    """The router's two-phase schedule, which anchoring and soft targets follow (None: one phase)."""
    plugin = router.plugin("two-phase")
    return plugin if isinstance(plugin, TwoPhasePlugin) else None


@register_plugin("structured-replay")
class StructuredReplayPlugin(ReplayPlugin):
    """Replay whose buffer is a domain- and model-balanced coreset in a fixed embedding space."""

    def make_selector(self, router: TrainableRouter) -> Selector:
        c = router.cfg
        if c["replay_selection"] == "uniform":
            return RandomSelector()
        return StructuredSelector(c["replay_selection"], FixedEncoder(c["replay_encoder"]), c["replay_floor"],
                                  c["replay_per_model"])


@register_plugin("carve")
class CarvePlugin(StrategyPlugin):
    """CARvE's candidate sets (``candidates: carve``), domain-aware batches and card-guided initialisation."""

    def __init__(self, router: TrainableRouter):
        self.model_domain: dict[str, str] = {}
        self.model_family: dict[str, str] = {}
        self.category: dict[str, str] = {}      # domain -> its category, as the training prompts carry it
        self.training_frame = pl.DataFrame()
        self._encoder: FixedEncoder | None = None

    def before_experience(self, router: TrainableRouter, experience: Experience, current: pl.DataFrame) -> None:
        for model_id, families, domains in experience.models.select("model_id", "families", "domains").rows():
            self.model_domain.setdefault(model_id, sorted(domains)[0])
            self.model_family.setdefault(model_id, sorted(families)[0])
        for frame in (experience.train, experience.validation):
            for domain, category in frame.select("domain", "category").unique().rows():
                self.category.setdefault(domain, category)

    def initialise_rows(self, router: TrainableRouter, experience: Experience, current: pl.DataFrame,
                        rows: list[int]) -> bool:
        if router.cfg["init"] != "card":
            return False
        if router.previous is not None:
            self._card_guided_init(router, experience)
        return True

    def _card_guided_init(self, router: TrainableRouter, experience: Experience) -> None:
        """New rows = softmax(card similarity / tau)-weighted mixture of the top old rows (the paper's
        ablation; it found this worse than random init)."""
        net = router.ensure_net()
        ids = net.registry.ids
        n_old = router.previous.n_models
        if n_old == 0 or n_old == len(ids):
            return
        if self._encoder is None:
            self._encoder = FixedEncoder(router.cfg["replay_encoder"])
        cards = dict(experience.models.select("model_id", "card").rows())
        texts = [cards.get(m) or m for m in ids]
        emb = self._encoder(texts)
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        sims = emb[n_old:] @ emb[:n_old].T
        top = min(router.cfg["card_init_top"], n_old)
        with torch.no_grad():
            old = net.registry.weight[:n_old]
            for i, row in enumerate(sims):
                best = np.argsort(-row, kind="stable")[:top]
                w = torch.softmax(torch.as_tensor(row[best] / router.cfg["card_init_tau"]), dim=0).to(old)
                net.registry.weight[n_old + i] = (w[:, None] * old[best]).sum(0)

    def candidate_sampler(self, router: TrainableRouter, experience: Experience, examples: pl.DataFrame):
        if router.cfg["candidates"] != "carve":  # ablation: every registered model, or uniform random negatives
            return None
        net = router.ensure_net()
        domains = [self.model_domain.get(m, "unknown") for m in net.registry.ids]
        categories = {d: self.category.get(d, d) for d in set(domains)}  # a domain with no prompt yet: its own
        scope, old_scope = router.scoring_scopes(experience, examples)
        current = None if scope is None else (experience.current_experience, ModelIndex(domains, categories, scope))
        families = [self.model_family.get(m, m) for m in net.registry.ids]
        return CarveCandidates(router, examples, ModelIndex(domains, categories, old_scope), families,
                               router.seed * 1000 + experience.current_experience, current)

    def batch_sampler(self, router: TrainableRouter, experience: Experience):
        size, per_batch = router.cfg["batch_size"], router.cfg["domains_per_batch"]
        if per_batch <= 0:  # ablation: plain shuffled batches
            return None

        def make(examples: pl.DataFrame, epoch: int, generator: torch.Generator) -> list[list[int]]:
            rng = np.random.default_rng(int(torch.randint(0, 2 ** 31, (1,), generator=generator)))
            return domain_batches(examples["domain"].to_list(), size, rng, per_batch)
        return make


class Anchoring:
    """Phase-1 anchoring of old registry rows and of the projection to the previous snapshot."""

    name = "anchor"

    def __init__(self, router: TrainableRouter, phase: TwoPhasePlugin):
        self.cfg = router.cfg
        self.phase = phase
        prev = router.previous
        self.rows = prev.params["registry.weight"][:prev.n_models]
        self.projection = {k: v for k, v in prev.params.items() if k.startswith("projection.")}

    def __call__(self, ctx: StepContext) -> torch.Tensor | None:
        if not self.phase.in_phase1:
            return None
        mode = self.cfg["anchoring"]
        params = ctx.net.tracked_parameters()
        total = None
        if mode in ("both", "embedding"):
            total = self.cfg["lambda_embedding"] * embedding_anchor_loss(params["registry.weight"],
                                                                         self.rows.to(ctx.z.device))
        if mode in ("both", "projection"):
            term = self.cfg["lambda_projection"] * projection_anchor_loss(
                {k: params[k] for k in self.projection}, {k: v.to(ctx.z.device) for k, v in self.projection.items()})
            total = term if total is None else total + term
        return total


@register_plugin("anchoring")
class AnchoringPlugin(StrategyPlugin):
    """Pulls old registry rows and the projection to the previous snapshot, during phase 1 of ``two-phase``."""

    def __init__(self, router: TrainableRouter):
        if router.cfg["anchoring"] not in ANCHORING:
            raise ValueError(f"anchoring must be one of {ANCHORING}")

    def loss_hooks(self, router: TrainableRouter, experience: Experience) -> list:
        phase = phase_of(router)
        if router.previous is None or router.cfg["anchoring"] == "none" or phase is None:
            return []
        return [Anchoring(router, phase)]


class TwoPhase:
    """Experiences 2..T: the first ``phase1_fraction`` of steps train the router head only."""

    def __init__(self, cfg: dict[str, Any], phase: TwoPhasePlugin):
        self.cfg = cfg
        self.phase = phase
        self.saved_lr: dict[str, float] = {}

    def __call__(self, trainer: Trainer, step: int, total: int) -> None:
        c = self.cfg
        boundary = int(round(c["phase1_fraction"] * total))
        if step == 0 and boundary > 0:
            self.phase.in_phase1 = True
            self.saved_lr = dict(trainer.base_lr)
            trainer.set_trainable("backbone", False)
            trainer.base_lr["projection"] = c["phase1_lr_projection"]
            trainer.base_lr["registry"] = c["phase1_lr_registry"]
            boost = float(c["replay_boost"])
            trainer.extra_weight = lambda batch: torch.where(
                torch.as_tensor(batch.frame["replay"].to_numpy(), device=batch.weights.device),
                torch.full_like(batch.weights, boost), torch.ones_like(batch.weights))
        if step == boundary and self.phase.in_phase1:
            self.phase.in_phase1 = False
            trainer.set_trainable("backbone", True)
            trainer.base_lr.update(self.saved_lr)
            trainer.extra_weight = None


@register_plugin("two-phase")
class TwoPhasePlugin(StrategyPlugin):
    """Experiences 2..T start with a phase that trains the router head only (``two_phase: false`` turns it off)."""

    def __init__(self, router: TrainableRouter):
        self.in_phase1 = False

    def callbacks(self, router: TrainableRouter, experience: Experience) -> list:
        self.in_phase1 = False
        return [TwoPhase(router.cfg, self)] if router.previous is not None and router.cfg["two_phase"] else []


CarveRouter = strategy("carve", "carve", "CARvE with the replay share of configs/carve.yaml.")
carve_10 = strategy("carve", "carve-10", "CARvE with 10 % structured replay.", replay_fraction=0.1)
carve_20 = strategy("carve", "carve-20", "CARvE with 20 % structured replay.", replay_fraction=0.2)
