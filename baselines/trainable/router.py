"""The trainable embedding router: a ``cmrbench`` router whose continual strategy is a list of plugins.

:class:`TrainableRouter` implements the protocol (``meta``, ``learn``, ``route``, ``save``, ``load``).
``learn`` runs, for experience t:

1. build the network on first use (backbone + projection + registry; seeded);
2. take :attr:`previous` = a snapshot of every tracked parameter and the registry size at the end
   of experience t-1 (what EWC, LwF and CARvE's anchoring compare against);
3. register the models seen so far (append-only) and initialise the new rows (prototypes by default);
4. the plugins' ``before_experience``, then ``training_examples`` (current data, + replay, + history);
5. train with the plugins' candidate sampler, batch sampler, loss hooks and callbacks (or the defaults:
   every model seen so far, shuffled batches) for ``epochs`` epochs;
6. the plugins' ``after_experience`` (a Fisher estimate, the replay buffer, merging deltas...).

A strategy is a YAML file naming its plugins (:mod:`.plugins`); each plugin's state goes into checkpoints.
Every random choice draws from a generator seeded by (seed, experience, purpose), so a run resumed from a
checkpoint continues exactly as an unbroken one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import polars as pl
import torch

from cmrbench import progress
from cmrbench.data import Experience
from cmrbench.protocol import Ranking, RouterMeta
from cmrbench.fileio import atomic_write_text

from cmrbench.baselines.models import spec_of
from cmrbench.baselines.retrieval.cardtext import card_text
from cmrbench.baselines.retrieval.encoders import IndexedSearch

from .backbone import ALIASES, TextBackbone
from .config import load_config, strategy_plugins
from .plugins import StrategyPlugin, make_plugin, merge_states
from .training import (AllModels, BatchSampler, Callback, CandidateSampler, LossHook, RandomCandidates, RouterNet,
                       Trainer, mix_prior, seeded_generator, shuffled_batches)

VERSION = "1"
SHARDING = ("none", "fsdp")    # config key ``shard``: see cmrbench.distributed.shard_frozen
log = logging.getLogger("cmrbench.trainable")
EXAMPLE_COLUMNS = ["prompt_id", "prompt", "model_id", "family", "domain", "category", "task"]


@contextlib.contextmanager
def deterministic(enabled: bool = True):
    """torch.use_deterministic_algorithms for the duration (warn-only where an op has no such kernel)."""
    if not enabled:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    before_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)


def examples_from(frame: pl.DataFrame, experience: int, *, replay: bool = False, weight: float = 1.0,
                  card: bool = False) -> pl.DataFrame:
    """Learner rows -> training examples (adds ``experience``, ``replay``, ``weight`` and ``card`` columns)."""
    cols = [c for c in EXAMPLE_COLUMNS if c in frame.columns]
    return frame.select(cols).with_columns(pl.lit(experience, dtype=pl.Int32).alias("experience"),
                                           pl.lit(replay).alias("replay"),
                                           pl.lit(weight, dtype=pl.Float32).alias("weight"),
                                           pl.lit(card).alias("card"))


def card_examples(experience: Experience, weight: float) -> pl.DataFrame:
    """The card descriptions of the models new in ``experience`` as training examples (prompt = description,
    ``card`` True), so a router also learns from the text every model is published with."""
    new = set(experience.new_classes_in_this_experience)
    cards = experience.cards.filter(pl.col("model_id").is_in(list(new)))
    family = {m: sorted(f)[0] if len(f) else m for m, f in experience.models.select("model_id", "families").rows()}
    frame = pl.DataFrame({
        "prompt_id": [f"card:{c}" for c in cards["card_id"]],
        "prompt": [card_text(c, "description") or m for c, m in cards.select("card", "model_id").rows()],
        "model_id": cards["model_id"], "family": [family.get(m, m) for m in cards["model_id"]],
        "domain": cards["domain"]}, schema={c: pl.String for c in ("prompt_id", "prompt", "model_id", "family",
                                                                   "domain")})
    return examples_from(frame, experience.current_experience, weight=weight, card=True)


# settings added after runs of record existed, recorded in a run's parameters only away from the value that
# behaves as before: seeds run before and after one was added still share their settings (leaderboard)
RECORDED_AWAY_FROM = {"shard": "none", "out_of_scope": "masked"}


def backbone_label(name: str) -> str:
    """A readable backbone name for metadata (never a local path of the machine that ran it)."""
    spec = spec_of(name)
    if spec is not None:
        return f"{spec.hub_id} (offline copy)"
    resolved = ALIASES.get(str(name).lower(), str(name))
    return Path(resolved).name if Path(resolved).is_absolute() else resolved


class FrozenPrior:
    """The ``ncm`` router's cosine scores in registry row order: a prototype classifier on a frozen encoder that
    learns every experience exactly and never forgets (config ``prior_weight`` > 0 mixes it into the logits)."""

    def __init__(self, weight: float, encoder: str, card_weight: float, use_validation: bool):
        from cmrbench.baselines.frozen.ncm import NCMRouter

        self.weight = float(weight)
        self.ncm = NCMRouter(model=None if encoder == "minilm" else encoder, card_weight=card_weight,
                             use_validation=use_validation)
        self.columns: np.ndarray | None = None   # prototypes in registry row order

    def learn(self, experience: Experience, registry_ids: Sequence[str]) -> None:
        self.ncm.learn(experience)
        self.align(registry_ids)

    def align(self, registry_ids: Sequence[str]) -> None:
        self.columns = self.ncm.prototypes()[[self.ncm.index[m] for m in registry_ids]].astype(np.float32)

    def cosines(self, prompts: Sequence[str]) -> torch.Tensor:
        return torch.from_numpy(self.ncm.encoder.embed(list(prompts), "query") @ self.columns.T)


@dataclass
class Snapshot:
    """The router as it was at the end of an experience."""

    experience: int
    n_models: int                         # registry rows that existed then (old rows are [0, n_models))
    params: dict[str, torch.Tensor]       # tracked parameter name -> detached copy


class TrainableRouter:
    """Text backbone + projection + append-only registry, trained on each experience in turn.

    ``strategy`` names the configuration (``configs/<strategy>.yaml``: its plugins and settings); ``seed``
    fixes everything; ``config`` names a YAML file layered over it; any other keyword overrides one
    configuration key (``--router-arg epochs=1``, ``--router-arg plugins=replay,ewc``).
    """

    def __init__(self, seed: int = 0, config: str | None = None, name: str | None = None, *,
                 strategy: str = "naive", **overrides: Any):
        self.strategy = strategy
        self.cfg = load_config(strategy, config, overrides)
        self.description = self.cfg.pop("description", "")
        plugins = self.cfg.pop("plugins", [])
        self.seed = int(seed)
        self.search = IndexedSearch(self.cfg["index"], self.cfg["faiss_threshold"])
        if self.cfg["shard"] not in SHARDING:
            raise ValueError(f"shard must be one of {SHARDING}, not {self.cfg['shard']!r}")
        if self.cfg["out_of_scope"] not in ("masked", "detached"):
            raise ValueError(f"out_of_scope must be 'masked' or 'detached', not {self.cfg['out_of_scope']!r}")
        if self.cfg["out_of_scope"] == "detached" and self.cfg["candidates"] != "all":
            raise ValueError(f"out_of_scope=detached applies to the full softmax (candidates=all), not to "
                             f"candidates={self.cfg['candidates']}")
        params = {k: v for k, v in self.cfg.items() if k not in ("index", "faiss_threshold")
                  and not (k in RECORDED_AWAY_FROM and v == RECORDED_AWAY_FROM[k])}
        params.update(self.search.parameters)            # only when not exact: earlier runs stay comparable
        if plugins != strategy_plugins(strategy):        # a composition of one's own is part of the settings
            params["plugins"] = plugins
        params["seed"] = self.seed
        self.meta = RouterMeta(name=name or self.cfg.get("name") or strategy, version=VERSION,
                               description=self.description, parameters=params, zero_shot=False,
                               reference="https://arxiv.org/abs/2605.28577",
                               training_data=[f"pre-trained backbone {backbone_label(self.cfg['backbone'])}"])
        self.net: RouterNet | None = None
        self.prior = (FrozenPrior(self.cfg["prior_weight"], self.cfg["prior_encoder"], self.cfg["card_weight"],
                                  self.cfg["train_on_validation"]) if self.cfg["prior_weight"] > 0 else None)
        self.base: dict[str, torch.Tensor] | None = None   # tracked parameters right after building
        self.previous: Snapshot | None = None
        self.finished = 0
        self.n_experiences: int | None = None
        self.history: list[dict[str, Any]] = []
        self.plugins: list[StrategyPlugin] = [make_plugin(p, self) for p in plugins]

    def plugin(self, name: str) -> StrategyPlugin | None:
        """This router's plugin named ``name`` (None without one)."""
        return next((p for p in self.plugins if p.name == name), None)

    # ------------------------------------------------------------------------------------ building

    def build_backbone(self) -> TextBackbone:
        c = self.cfg
        with progress.quiet_model_loading():
            return TextBackbone(c["backbone"], kind=c["backbone_kind"], pooling=c["pooling"], max_seq_len=c["max_seq_len"],
                                prompt_template=c["prompt_template"], freeze_layers=c["freeze_layers"],
                                cache_frozen=c["cache_frozen"], cache_dtype=c["cache_dtype"], lora=c["lora"],
                                lora_r=c["lora_r"], lora_alpha=c["lora_alpha"], lora_dropout=c["lora_dropout"],
                                lora_targets=c["lora_targets"], dtype=c["dtype"],
                                gradient_checkpointing=c["gradient_checkpointing"], device=c["device"],
                                cache_batch_size=c["eval_batch_size"])

    def ensure_net(self) -> RouterNet:
        if self.net is None:
            torch.manual_seed(self.seed)            # LoRA initialisation draws from the global generator
            self.net = RouterNet(self.build_backbone(), self.cfg["dim"], self.cfg["tau"], self.seed,
                                 self.cfg["projection_init"])
            self.base = self.net.snapshot()
            if self.cfg["shard"] == "fsdp":
                if not self.net.backbone.shard_frozen({id(p) for p in self.net.tracked_parameters().values()}):
                    log.warning("shard=fsdp splits nothing here: one process (launch with torchrun or accelerate "
                                "launch) or no frozen weight in the backbone's layers (lora=true or freeze_layers>0)")
                self.meta.statistics["sharded_parameters"] = self.net.backbone.sharded
        return self.net

    # ------------------------------------------------------------------------------------ hooks

    def begin_experience(self, experience: Experience, current: pl.DataFrame) -> None:
        """Before training on ``experience`` (registry already extended)."""
        for plugin in self.plugins:
            plugin.before_experience(self, experience, current)

    def training_examples(self, experience: Experience, current: pl.DataFrame) -> pl.DataFrame:
        """What to train on: this experience's examples, and what each plugin adds."""
        examples = current
        for plugin in self.plugins:
            examples = plugin.training_examples(self, experience, current, examples)
        return examples

    def candidate_sampler(self, experience: Experience, examples: pl.DataFrame) -> CandidateSampler:
        """What each training example is scored against (``examples``: this experience's training set)."""
        for plugin in self.plugins:
            if (sampler := plugin.candidate_sampler(self, experience, examples)) is not None:
                return sampler
        if self.cfg["candidates"] == "all":
            registry = self.ensure_net().registry
            rows: dict[str, list[int]] = {}
            for model_id, domains in experience.models.select("model_id", "domains").rows():
                for d in domains:
                    rows.setdefault(d, []).append(registry.index[model_id])
            scope, old_scope = self.scoring_scopes(experience, examples)
            return AllModels(float(self.cfg["domain_smoothing"]), rows, scope=scope,
                             current=experience.current_experience, old_scope=old_scope,
                             detach_outside=self.cfg["out_of_scope"] == "detached")
        if self.cfg["candidates"] == "sampled":
            return RandomCandidates(self.cfg["num_candidates"], self.seed * 1000 + experience.current_experience)
        raise ValueError(f"candidates must be 'all' or 'sampled', not {self.cfg['candidates']!r}")

    def scoring_scopes(self, experience: Experience, examples: pl.DataFrame) -> tuple[list[int] | None,
                                                                                     list[int] | None]:
        """The registry rows a training example is contrasted with, by ``softmax_scope``: (for examples of
        the current experience, for examples of earlier ones); None is every registered model.

        ``all``: every model for both. ``experience`` (ER-ACE): current examples vs this experience's models.
        ``memory``: that, and earlier examples (replayed, kept) vs the models with an example in ``examples``,
        so no old model without a prompt of its own is ever pushed down.
        """
        scope = self.cfg["softmax_scope"]
        if scope not in ("all", "experience", "memory"):
            raise ValueError(f"softmax_scope must be 'all', 'experience' or 'memory', not {scope!r}")
        if scope == "all":
            return None, None
        registry = self.ensure_net().registry
        current = registry.rows(sorted(experience.classes_in_this_experience)).tolist()
        if scope == "experience":
            return current, None
        present = sorted(set(examples["model_id"].to_list()) | set(experience.classes_in_this_experience))
        return current, registry.rows(present).tolist()

    def batch_sampler(self, experience: Experience) -> BatchSampler:
        for plugin in self.plugins:
            if (sampler := plugin.batch_sampler(self, experience)) is not None:
                return sampler
        return shuffled_batches(self.cfg["batch_size"])

    def loss_hooks(self, experience: Experience) -> list[LossHook]:
        return [hook for plugin in self.plugins for hook in plugin.loss_hooks(self, experience)]

    def callbacks(self, experience: Experience) -> list[Callback]:
        return [callback for plugin in self.plugins for callback in plugin.callbacks(self, experience)]

    def epochs(self, experience: Experience) -> int:
        for plugin in self.plugins:
            if (epochs := plugin.epochs(self, experience)) is not None:
                return int(epochs)
        return int(self.cfg["epochs"])

    def make_trainer(self, experience: Experience) -> Trainer:
        c = self.cfg
        return Trainer(self.ensure_net(), lr_backbone=c["lr_backbone"], lr_projection=c["lr_projection"],
                       lr_registry=c["lr_registry"], weight_decay=c["weight_decay"], warmup_steps=c["warmup_steps"],
                       grad_clip=c["grad_clip"], schedule=c["schedule"], prior=self.prior)

    def end_experience(self, experience: Experience, current: pl.DataFrame, trained_on: pl.DataFrame | None) -> None:
        """After training on ``experience``."""
        for plugin in self.plugins:
            plugin.after_experience(self, experience, current, trained_on)

    def initialise_rows(self, experience: Experience, current: pl.DataFrame, rows: list[int]) -> None:
        """Set the registry rows just added for new models (config ``init``).

        ``random`` keeps their Xavier draw (the paper's). ``prototype`` replaces each by its model's
        prototype through the current network (SimpleCIL's classifier initialisation): the normalised,
        weighted mean of z(q) over the model's examples in ``current`` (weight 1 each) and of z(card) over
        its card descriptions (``card_weight`` each), so a model with no training prompt starts from its
        card. Training then starts from a nearest-class-mean router instead of noise.
        """
        if any(plugin.initialise_rows(self, experience, current, rows) for plugin in self.plugins):
            return
        init = self.cfg["init"]
        if init == "random" or not rows:
            return
        if init != "prototype":
            raise ValueError(f"init must be 'random' or 'prototype' for {self.strategy}, not {init!r}")
        net = self.ensure_net()
        new_ids = [net.registry.ids[r] for r in rows]
        wanted = set(new_ids)
        texts, owners, weights = [], [], []
        for prompt, model_id, weight in current.filter(~pl.col("card")).select("prompt", "model_id", "weight").rows():
            if model_id in wanted:
                texts.append(prompt), owners.append(model_id), weights.append(float(weight))
        card_weight = float(self.cfg["card_weight"])
        if card_weight > 0:
            for model_id, card in experience.cards.select("model_id", "card").rows():
                if model_id in wanted:
                    texts.append(card_text(card, "description") or model_id)
                    owners.append(model_id), weights.append(card_weight)
        if not texts:
            return
        z = net.encode(texts, self.cfg["eval_batch_size"]).float()
        position = {m: i for i, m in enumerate(new_ids)}
        owner_index = torch.tensor([position[m] for m in owners], device=z.device)
        sums = torch.zeros(len(new_ids), z.shape[1], device=z.device)
        sums.index_add_(0, owner_index, z * torch.tensor(weights, device=z.device)[:, None])
        has = sums.norm(dim=1) > 0
        target = torch.tensor(rows, device=z.device)[has]
        with torch.no_grad():
            net.registry.weight[target] = torch.nn.functional.normalize(sums[has], dim=-1).to(net.registry.weight)

    # ------------------------------------------------------------------------------------ protocol

    def current_examples(self, experience: Experience) -> pl.DataFrame:
        """This experience's training prompts (+ validation ones, + new models' cards, as configured)."""
        t = experience.current_experience
        frames = [experience.train]
        if self.cfg["train_on_validation"]:
            frames.append(experience.validation)
        examples = examples_from(pl.concat(frames, how="vertical_relaxed"), t)
        if self.cfg["card_examples"]:
            examples = pl.concat([examples, card_examples(experience, float(self.cfg["card_weight"]))],
                                 how="diagonal_relaxed")
        return examples

    def learn(self, experience: Experience) -> None:
        with deterministic(self.cfg["deterministic"]):
            t = experience.current_experience
            self.n_experiences = experience.n_experiences
            net = self.ensure_net()
            self.search.clear()
            torch.manual_seed(self.seed * 1000 + t)   # dropout
            self.previous = (Snapshot(self.finished, len(net.registry), net.snapshot()) if self.finished else None)
            new_rows = net.registry.extend(sorted(experience.classes_seen_so_far), experience=t,
                                           generator=seeded_generator(self.seed, t, 3))
            if self.prior is not None:
                self.prior.learn(experience, net.registry.ids)
            current = self.current_examples(experience)
            self.initialise_rows(experience, current, new_rows)
            self.begin_experience(experience, current)
            examples = self.training_examples(experience, current)
            start = time.perf_counter()
            trainer = self.make_trainer(experience)
            stats = trainer.fit(examples, epochs=self.epochs(experience), batches=self.batch_sampler(experience),
                                seed=self.seed * 1000 + t, sampler=self.candidate_sampler(experience, examples),
                                losses=self.loss_hooks(experience), callbacks=self.callbacks(experience),
                                log=lambda msg: log.info("%s, experience %d: %s", self.meta.name, t, msg))
            self.end_experience(experience, current, examples)
            self.finished = t
            # sizes for readers of the results (the leaderboard page shows them); the registry grows each time
            self.meta.statistics.update(parameters=sum(p.numel() for p in net.parameters()),
                                        trainable_parameters=sum(p.numel() for p in net.parameters() if p.requires_grad))
            self.history.append({"experience": t, **stats.as_dict(),
                                 "seconds_total": round(time.perf_counter() - start, 3)})

    def route(self, prompts: Sequence[str], top_k: int) -> list[Ranking]:
        net = self.ensure_net()
        if len(net.registry) == 0:
            raise RuntimeError("route() before learn(): no model is registered yet")
        with deterministic(self.cfg["deterministic"]):
            z = net.encode(list(prompts), self.cfg["eval_batch_size"])
            if self.search.applies(len(net.registry)):
                queries, keys = self.routing_vectors(prompts, z)
                return self.search.rankings(keys, net.registry.ids, queries, top_k)
            with torch.no_grad():
                scores = mix_prior(net.logits(z), self.prior, prompts, None, net.tau).float().cpu()
        k = min(top_k, scores.shape[1])
        values, index = torch.sort(scores, dim=1, descending=True, stable=True)
        ids = net.registry.ids
        return [[(ids[i], float(v)) for i, v in zip(row_i[:k].tolist(), row_v[:k].tolist())]
                for row_i, row_v in zip(index, values)]

    def routing_vectors(self, prompts: Sequence[str], z: torch.Tensor) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
        """The routing scores as one inner product, for a FAISS search: queries ``[B, d]`` and the registry's key
        vectors (built only when the index is). Without a prior, z / tau against the normalised rows; with one,
        ``[(1 - w) z, w q] / tau`` against ``[row, prototype]``, which is ``mix_prior``'s score term by term."""
        net = self.net
        queries = z.float().cpu().numpy() / net.tau

        def rows() -> np.ndarray:
            return net.registry.normalized().detach().float().cpu().numpy()

        if self.prior is None or self.prior.weight <= 0:
            return queries, rows
        w = self.prior.weight
        prior_queries = self.prior.ncm.encoder.embed(list(prompts), "query") / net.tau
        return (np.hstack([(1.0 - w) * queries, w * prior_queries]),
                lambda: np.hstack([rows(), self.prior.columns]))

    # ------------------------------------------------------------------------------------ checkpoints

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        net = self.ensure_net()
        torch.save({n: p.detach().cpu() for n, p in net.tracked_parameters().items()}, folder / "weights.pt")
        extra = merge_states(self.plugins)
        torch.save(extra.get("tensors", {}), folder / "strategy.pt")
        for name, frame in extra.get("frames", {}).items():
            frame.write_parquet(folder / f"{name}.parquet")
        if self.prior is not None:
            self.prior.ncm.save(folder / "prior")
        info = {"router": self.meta.name, "strategy": self.strategy, "plugins": [p.name for p in self.plugins], "version": VERSION, "seed": self.seed,
                "config": self.cfg, "finished": self.finished, "n_experiences": self.n_experiences,
                "registry": net.registry.state(), "history": self.history,
                "frames": sorted(extra.get("frames", {})), "json": extra.get("json", {})}
        atomic_write_text(folder / "router.json", json.dumps(info, indent=1, sort_keys=True))

    def load(self, folder: Path) -> None:
        folder = Path(folder)
        info = json.loads((folder / "router.json").read_text())
        plugins = [p.name for p in self.plugins]
        if info["strategy"] != self.strategy or info.get("plugins", plugins) != plugins:
            raise ValueError(f"{folder} holds a '{info['strategy']}' router with plugins {info.get('plugins')}, "
                             f"not '{self.strategy}' with {plugins}")
        self.cfg = info["config"]
        self.seed = int(info["seed"])
        self.net = None
        self.search.clear()
        net = self.ensure_net()
        net.registry.resize_to(info["registry"]["ids"], info["registry"]["first_experience"])
        net.to(net.device)
        net.load_tracked(torch.load(folder / "weights.pt", map_location="cpu", weights_only=True))
        if self.prior is not None:
            self.prior.ncm.load(folder / "prior")
            self.prior.align(net.registry.ids)
        self.finished = int(info["finished"])
        self.n_experiences = info.get("n_experiences")
        self.history = list(info.get("history", []))
        self.previous = None
        frames = {name: pl.read_parquet(folder / f"{name}.parquet") for name in info.get("frames", [])}
        state = {"tensors": torch.load(folder / "strategy.pt", map_location="cpu", weights_only=True),
                 "frames": frames, "json": info.get("json", {})}
        for plugin in self.plugins:
            plugin.load_state(self, state)


def strategy(config: str, name: str, doc: str, **fixed: Any) -> Callable[..., TrainableRouter]:
    """A registered router: the trainable router with strategy ``config`` under ``name``, with ``fixed``
    settings (each still overridable)."""
    def factory(seed: int = 0, **overrides: Any) -> TrainableRouter:
        for key, value in {"name": name, **fixed}.items():
            overrides.setdefault(key, value)
        return TrainableRouter(seed=seed, strategy=config, **overrides)
    factory.__name__ = factory.__qualname__ = name.replace("-", "_")
    factory.__doc__ = doc
    return factory
