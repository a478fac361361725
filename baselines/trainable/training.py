"""The router network and its training loop, with the hooks the continual strategies (and CARvE) use.

Scoring (paper §4.1): z(q) = normalise(W h(q)), e(m) = normalise(v(m)), s(q, m) = z.e / tau.

One call of :meth:`Trainer.fit` trains on a table of examples for a number of epochs. What changes
between strategies plugs in from outside:

- ``sampler`` (:class:`CandidateSampler`): which registry rows each example is scored against —
  every registered model (:class:`AllModels`, the default) or a sampled candidate set with the
  positive first (:class:`RandomCandidates`; CARvE plugs in hard / semantic / far negatives). A
  sampler may return soft targets (a probability row per example).
- ``batches`` (:data:`BatchSampler`): the order and grouping of examples per epoch (default: a seeded
  shuffle; CARvE plugs in domain-aware batches).
- ``losses`` (:class:`LossHook`): extra terms added to the routing loss at each step (EWC penalty, LwF
  distillation, CARvE anchoring), each seeing the step context.
- ``callbacks`` (:class:`Callback`): called before every optimiser step with the trainer, which exposes
  ``set_trainable(group, flag)``, ``base_lr`` and per-example ``weight`` (CARvE's two-phase schedule
  and replay up-weighting).

Examples are a polars frame with at least ``prompt`` and ``model_id``; ``weight`` (default 1) scales
an example's routing loss, and any other column (domain, family, experience, replay...) travels with
the batch for samplers and hooks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import nn

from cmrbench import progress
from cmrbench.distributed import rank_and_size, sum_gradients

from .backbone import TextBackbone
from .registry import ModelRegistry

GROUPS = ("backbone", "projection", "registry")


def seeded_generator(*parts: int) -> torch.Generator:
    """A torch generator seeded from integers (seed, experience, purpose...)."""
    value = 0
    for p in parts:
        value = (value * 1_000_003 + int(p)) % (2 ** 63 - 1)
    return torch.Generator().manual_seed(value)


PROJECTION_INITS = ("xavier", "orthogonal")


def projection_weight(fan_in: int, fan_out: int, init: str, seed: int) -> torch.Tensor:
    """The projection's initial (fan_out, fan_in) weight, drawn from a seeded generator.

    ``xavier``: Xavier-uniform (the paper's). ``orthogonal``: orthonormal rows or columns (QR of a Gaussian
    draw); with ``dim >= hidden`` it is an isometry, so cosine similarities of backbone vectors -- and hence
    prototype-initialised rows -- are exactly those of the backbone at the start of training.
    """
    generator = seeded_generator(seed, 7)
    if init == "xavier":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        return (torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound
    if init == "orthogonal":
        big, small = max(fan_in, fan_out), min(fan_in, fan_out)
        q, r = torch.linalg.qr(torch.randn(big, small, generator=generator, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r))     # a unique QR: the draw alone fixes the matrix
        return (q if fan_out >= fan_in else q.T).to(torch.float32)
    raise ValueError(f"projection_init must be one of {PROJECTION_INITS}, not {init!r}")


class RouterNet(nn.Module):
    """Backbone + bias-free projection to ``dim`` + model registry; scores are cosine / tau."""

    def __init__(self, backbone: TextBackbone, dim: int, tau: float, seed: int, projection_init: str = "xavier"):
        super().__init__()
        self.backbone = backbone
        self.tau = float(tau)
        self.projection = nn.Linear(backbone.hidden_size, int(dim), bias=False)
        with torch.no_grad():
            self.projection.weight.copy_(projection_weight(backbone.hidden_size, int(dim), projection_init, seed))
        self.registry = ModelRegistry(dim)
        self.to(backbone.device_)
        # parameters that may ever change (saved in checkpoints, snapshotted, regularised)
        self.tracked = [n for n, p in self.named_parameters() if p.requires_grad]

    @property
    def device(self) -> torch.device:
        return self.backbone.device_

    def group_of(self, name: str) -> str:
        if name.startswith("projection."):
            return "projection"
        if name.startswith("registry."):
            return "registry"
        return "backbone"

    def tracked_parameters(self) -> dict[str, nn.Parameter]:
        params = dict(self.named_parameters())
        return {n: params[n] for n in self.tracked}

    def embed(self, prompts: Sequence[str]) -> torch.Tensor:
        """z(q): (B, dim), unit norm."""
        return F.normalize(self.projection(self.backbone(prompts)), dim=-1)

    def logits(self, z: torch.Tensor, index: torch.Tensor | None = None, detach_rows: bool = False) -> torch.Tensor:
        """Scores over every registry row (``index`` None) or over each example's candidates (B, K); with
        ``detach_rows`` no gradient reaches the rows."""
        e = self.registry.normalized()
        if detach_rows:
            e = e.detach()
        if index is None:
            return z @ e.T / self.tau
        return torch.einsum("bd,bkd->bk", z, e[index]) / self.tau

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A detached copy of every tracked parameter (the state to anchor to / distil from)."""
        return {n: p.detach().clone() for n, p in self.tracked_parameters().items()}

    def load_tracked(self, state: dict[str, torch.Tensor]) -> None:
        params = self.tracked_parameters()
        missing = sorted(set(params) - set(state))
        if missing:
            raise KeyError(f"checkpoint lacks parameters {missing[:5]}")
        with torch.no_grad():
            for n, p in params.items():
                value = state[n]
                if value.shape != p.shape:
                    raise ValueError(f"parameter {n}: checkpoint shape {tuple(value.shape)} != {tuple(p.shape)}")
                p.copy_(value.to(p.device, p.dtype))

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """z for many prompts in eval mode (no grad)."""
        was = self.training
        self.eval()
        try:
            self.backbone.warm_cache(prompts)
            out = [self.embed(prompts[lo:lo + batch_size]) for lo in range(0, len(prompts), batch_size)]
        finally:
            self.train(was)
        return torch.cat(out) if out else torch.zeros(0, self.registry.dim, device=self.device)


# ------------------------------------------------------------------------------------ candidate sets

@dataclass
class CandidateSet:
    """What each example of a batch is scored against.

    ``index`` (B, K) registry rows, or None for every registered row. ``target``: (B,) long class
    positions (into ``index``'s columns, or registry rows when ``index`` is None) or (B, K | N) float
    probability rows (soft targets). ``allowed`` (B, N) bool, with ``index`` None: the rows each example is
    scored against (the others are masked out of its softmax); None for all. ``detach_outside``: the rows
    outside ``allowed`` stay in the softmax as negatives that the loss does not move (only the prompt's side
    learns to score below them).
    """

    index: torch.Tensor | None
    target: torch.Tensor
    allowed: torch.Tensor | None = None
    detach_outside: bool = False


class CandidateSampler(Protocol):
    def __call__(self, batch: "Batch", net: RouterNet, step: int) -> CandidateSet: ...


class AllModels:
    """Cross-entropy over every registered model (the registry holds exactly the models seen so far).

    ``scope`` (registry rows of the current experience's models, with its number ``current``): the asymmetric
    cross-entropy of ER-ACE (Caccia et al., ICLR 2022). An example of the current experience is scored against
    that experience's models only, so learning new models never pushes the rows of old ones down; an example
    of an earlier experience (replayed, or kept by cumulative training) is scored against every model.

    ``old_scope`` (registry rows): with ``scope``, the models an earlier experience's example is scored against
    instead of every model; ``softmax_scope=memory`` passes the models that have an example in this experience's
    training set, so a replayed prompt never pushes down an old model that has no replayed prompt of its own.

    ``detach_outside``: the rows outside an example's scope are not masked out but scored as negatives with no
    gradient to them (``out_of_scope=detached``): old rows are never pushed down, yet a new prompt learns not to
    land on them.

    ``domain_smoothing`` = eps > 0 makes the target (1 - eps) on the gold model and eps spread evenly over the
    other models of the gold domain it is scored against (``domain_rows``: domain -> registry rows), one-hot
    when there is none: label smoothing that teaches which models are interchangeable at domain level.
    """

    def __init__(self, domain_smoothing: float = 0.0, domain_rows: dict[str, list[int]] | None = None,
                 scope: Sequence[int] | None = None, current: int | None = None,
                 old_scope: Sequence[int] | None = None, detach_outside: bool = False):
        self.eps = float(domain_smoothing)
        self.detach_outside = bool(detach_outside)
        self.domain_rows = domain_rows or {}
        self.scope = None if scope is None else torch.as_tensor(list(scope), dtype=torch.long)
        self.old_scope = None if old_scope is None else torch.as_tensor(list(old_scope), dtype=torch.long)
        self.current = current

    def __call__(self, batch: "Batch", net: RouterNet, step: int) -> CandidateSet:
        allowed = None
        if self.scope is not None:
            n = len(net.registry)
            in_scope = torch.zeros(n, dtype=torch.bool)
            in_scope[self.scope] = True
            current = torch.as_tensor((batch.frame["experience"] == self.current).to_numpy())
            in_old_scope = torch.ones(n, dtype=torch.bool)
            if self.old_scope is not None:
                in_old_scope = torch.zeros(n, dtype=torch.bool)
                in_old_scope[self.old_scope] = True
            allowed = torch.where(current[:, None], in_scope[None, :], in_old_scope[None, :])
            allowed = allowed.to(net.device)
        if self.eps <= 0:
            return CandidateSet(None, batch.targets, allowed, self.detach_outside)
        others = torch.zeros(len(batch.rows), len(net.registry), dtype=torch.bool)
        for i, domain in enumerate(batch.frame["domain"].to_list()):
            others[i, self.domain_rows.get(domain, [])] = True
        others = others.to(net.device)
        gold = batch.targets.to(net.device)
        others[torch.arange(len(gold), device=net.device), gold] = False
        if allowed is not None:
            others &= allowed
        count = others.sum(1, keepdim=True)
        target = others.float() * (self.eps / count.clamp(min=1))
        target.scatter_(1, gold[:, None], torch.where(count > 0, 1.0 - self.eps, 1.0).float())
        return CandidateSet(None, target, allowed, self.detach_outside)


class RandomCandidates:
    """The positive at column 0 plus ``k - 1`` distinct uniformly drawn other registered models."""

    def __init__(self, k: int, seed: int):
        self.k = int(k)
        self.generator = seeded_generator(seed, 11)

    def __call__(self, batch: "Batch", net: RouterNet, step: int) -> CandidateSet:
        n = len(net.registry)
        k = min(self.k, n)
        rows = []
        for gold in batch.targets.tolist():
            perm = torch.randperm(n, generator=self.generator)
            negatives = perm[perm != gold][:k - 1]
            rows.append(torch.cat([torch.tensor([gold]), negatives]))
        index = torch.stack(rows).to(net.device)
        return CandidateSet(index, torch.zeros(len(rows), dtype=torch.long, device=net.device))


# ------------------------------------------------------------------------------------ batches and hooks

@dataclass
class Batch:
    rows: list[int]                 # positions in the examples frame
    frame: pl.DataFrame             # the examples' rows (every column)
    prompts: list[str]
    targets: torch.Tensor           # (B,) registry rows of the gold models
    weights: torch.Tensor           # (B,) per-example weights of the routing loss

    def shard(self, rank: int, size: int) -> Batch:
        """Process ``rank``'s share of the batch out of ``size``: every size-th example from the rank-th."""
        keep = list(range(rank, len(self.rows), size))
        return Batch(rows=[self.rows[i] for i in keep], frame=self.frame[keep], prompts=[self.prompts[i] for i in keep],
                     targets=self.targets[keep], weights=self.weights[keep])


BatchSampler = Callable[[pl.DataFrame, int, torch.Generator], list[list[int]]]


def shuffled_batches(batch_size: int) -> BatchSampler:
    """Default: a seeded permutation of the examples, cut into batches."""
    def make(examples: pl.DataFrame, epoch: int, generator: torch.Generator) -> list[list[int]]:
        order = torch.randperm(examples.height, generator=generator).tolist()
        return [order[lo:lo + batch_size] for lo in range(0, len(order), batch_size)]
    return make


@dataclass
class StepContext:
    net: RouterNet
    batch: Batch
    z: torch.Tensor                 # (B, dim) query embeddings
    logits: torch.Tensor            # (B, K) or (B, N)
    candidates: CandidateSet
    step: int
    total_steps: int
    trainer: "Trainer"


class LossHook(Protocol):
    """An extra loss term; ``name`` labels it in the training log."""

    name: str

    def __call__(self, ctx: StepContext) -> torch.Tensor | None: ...


class Callback(Protocol):
    def __call__(self, trainer: "Trainer", step: int, total_steps: int) -> None: ...


class Prior(Protocol):
    """Fixed scores mixed into the router's logits (a frozen prototype classifier, see ``prior_weight``)."""

    weight: float

    def cosines(self, prompts: Sequence[str]) -> torch.Tensor: ...   # (B, registry rows), in [-1, 1]


def mix_prior(logits: torch.Tensor, prior: Prior | None, prompts: Sequence[str], index: torch.Tensor | None,
              tau: float) -> torch.Tensor:
    """(1 - w) * the router's logits + w * the prior's cosines / tau, over all rows or each example's candidates.

    The prior is constant, so the router learns what it misses (a residual) and whatever the router forgets,
    the prior's share of every score stays."""
    if prior is None or prior.weight <= 0:
        return logits
    cos = prior.cosines(prompts).to(logits)
    if index is not None:
        cos = torch.gather(cos, 1, index)
    return (1.0 - prior.weight) * logits + prior.weight * cos / tau


def routing_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean cross-entropy (hard or soft targets)."""
    per = F.cross_entropy(logits, target, reduction="none")
    return (per * weights).sum() / weights.sum().clamp(min=1e-12)


# ------------------------------------------------------------------------------------ the trainer

@dataclass
class FitStats:
    examples: int = 0
    steps: int = 0
    epochs: int = 0
    seconds: float = 0.0
    losses: dict[str, float] = field(default_factory=dict)   # mean of each term over the last epoch

    def as_dict(self) -> dict[str, Any]:
        return {"examples": self.examples, "steps": self.steps, "epochs": self.epochs,
                "seconds": round(self.seconds, 3), "losses": {k: round(v, 6) for k, v in self.losses.items()}}


class Trainer:
    """AdamW with one learning rate per parameter group, linear warm-up then linear decay, grad clipping."""

    def __init__(self, net: RouterNet, *, lr_backbone: float, lr_projection: float, lr_registry: float,
                 weight_decay: float = 0.0, warmup_steps: int = 0, grad_clip: float | None = 1.0,
                 schedule: str = "linear", prior: Prior | None = None):
        self.net = net
        self.prior = prior
        self.base_lr = {"backbone": float(lr_backbone), "projection": float(lr_projection),
                        "registry": float(lr_registry)}
        self.weight_decay = float(weight_decay)
        self.warmup_steps = int(warmup_steps)
        self.grad_clip = grad_clip
        self.schedule = schedule
        self.groups: dict[str, list[nn.Parameter]] = {g: [] for g in GROUPS}
        for name, p in net.tracked_parameters().items():
            self.groups[net.group_of(name)].append(p)
        self.trainable = {g: bool(ps) for g, ps in self.groups.items()}
        self.optimizer = torch.optim.AdamW(
            [{"params": ps, "name": g, "lr": self.base_lr[g],
              "weight_decay": self.weight_decay if g != "registry" else 0.0}
             for g, ps in self.groups.items() if ps], lr=1e-3)
        self.extra_weight: Callable[[Batch], torch.Tensor] | None = None

    def set_trainable(self, group: str, flag: bool) -> None:
        """Freeze / unfreeze a parameter group (a frozen group gets neither gradients nor updates)."""
        self.trainable[group] = bool(flag)
        for p in self.groups[group]:
            p.requires_grad_(bool(flag))

    def _factor(self, step: int, total: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        rest = max(1, total - self.warmup_steps)
        return max(0.0, 1.0 - (step - self.warmup_steps) / rest)

    def _step(self, batch: Batch, sampler: CandidateSampler, losses: Sequence[LossHook], step: int, total: int,
              whole_weight: torch.Tensor | None = None, processes: int = 1, idle: bool = False) -> dict[str, float]:
        """Forward and backward of one batch; returns the loss terms. Given ``whole_weight`` (the summed example
        weights of the batch this one is a process's share of), the routing loss is this share's part of the
        whole batch's weighted mean and each extra term counts 1 / ``processes``, so the gradients summed over
        the processes that have an example are the whole batch's. ``idle``: this process has none and runs
        ``batch`` only to take part in the others' collective operations; its loss counts zero."""
        net = self.net
        terms: dict[str, float] = {}
        if not batch.rows:                       # a batch smaller than the number of processes
            return terms
        z = net.embed(batch.prompts)
        cands = sampler(batch, net, step)
        raw = net.logits(z, cands.index)
        if cands.allowed is not None and cands.detach_outside:
            raw = torch.where(cands.allowed, raw, net.logits(z, cands.index, detach_rows=True))
        logits = mix_prior(raw, self.prior, batch.prompts, cands.index, net.tau)
        if cands.allowed is not None and not cands.detach_outside:   # a finite floor: soft targets' zeros times it stay 0
            logits = logits.masked_fill(~cands.allowed, -1e9)
        loss = routing_loss(logits, cands.target, batch.weights)
        if whole_weight is not None:
            loss = loss * (batch.weights.sum() / whole_weight.clamp(min=1e-12))
        terms["route"] = float(loss.detach())
        ctx = StepContext(net, batch, z, logits, cands, step, total, self)
        for hook in losses:
            extra = hook(ctx)
            if extra is not None:
                extra = extra / processes          # dividing by 1 is exact: one process is unchanged
                loss = loss + extra
                terms[hook.name] = float(extra.detach())
        if idle:
            loss, terms = loss * 0.0, {}
        loss.backward()
        return terms

    def fit(self, examples: pl.DataFrame, *, epochs: int, batches: BatchSampler, seed: int,
            sampler: CandidateSampler | None = None, losses: Sequence[LossHook] = (),
            callbacks: Sequence[Callback] = (), log: Callable[[str], None] | None = None) -> FitStats:
        net = self.net
        sampler = sampler or AllModels()
        stats = FitStats(examples=examples.height, epochs=epochs)
        if examples.height == 0 or epochs <= 0:
            return stats
        t0 = time.perf_counter()
        registry_rows = net.registry.rows(examples["model_id"].to_list()).cpu()
        weights = (examples["weight"].cast(pl.Float32).to_numpy() if "weight" in examples.columns
                   else np.ones(examples.height, dtype=np.float32))
        prompts = examples["prompt"].to_list()
        net.backbone.warm_cache(prompts)
        plan = [batches(examples, epoch, seeded_generator(seed, 101, epoch)) for epoch in range(epochs)]
        total = sum(len(p) for p in plan)
        step = 0
        net.train()
        rank, size = rank_and_size()   # launched as several processes: each takes its share of every batch
        shown = progress.bar(total, desc="learning", unit="step")
        for epoch, epoch_batches in enumerate(plan):
            shown.set_description(f"learning, epoch {epoch + 1}/{epochs}")
            sums: dict[str, float] = {}
            for rows in epoch_batches:
                for cb in callbacks:
                    cb(self, step, total)
                batch = Batch(rows=rows, frame=examples[rows], prompts=[prompts[i] for i in rows],
                              targets=registry_rows[rows].to(net.device),
                              weights=torch.as_tensor(weights[rows], device=net.device))
                if self.extra_weight is not None:
                    batch.weights = batch.weights * self.extra_weight(batch)
                factor = self._factor(step, total)
                for group in self.optimizer.param_groups:
                    group["lr"] = self.base_lr[group["name"]] * factor
                self.optimizer.zero_grad(set_to_none=True)
                if size == 1:
                    terms = self._step(batch, sampler, losses, step, total)
                else:
                    share = batch.shard(rank, size)
                    # a batch smaller than the number of processes leaves some without an example: the extra
                    # terms are shared among those that have one. With sharded weights every process runs the
                    # network at every step (FSDP's gathers are collective): one without an example runs the
                    # batch's first, counted zero
                    active = min(size, len(batch.rows))
                    idle = not share.rows and net.backbone.sharded > 0
                    terms = self._step(batch.shard(0, len(batch.rows)) if idle else share, sampler, losses, step,
                                       total, batch.weights.sum(), active, idle)
                if size > 1:
                    sum_gradients(p for g, ps in self.groups.items() if self.trainable[g] for p in ps)
                live = [p for g, ps in self.groups.items() if self.trainable[g] for p in ps if p.grad is not None]
                if self.grad_clip and live:
                    torch.nn.utils.clip_grad_norm_(live, float(self.grad_clip))
                self.optimizer.step()   # frozen groups have no .grad, so AdamW leaves them untouched
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v
                step += 1
                shown.update(1)
            stats.losses = {k: v / max(1, len(epoch_batches)) for k, v in sums.items()}
            shown.set_postfix({k: f"{v:.3f}" for k, v in stats.losses.items()})
            if log:
                log(f"epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in stats.losses.items()))
        shown.close()
        for group, params in self.groups.items():
            if params:
                self.set_trainable(group, True)
        net.eval()
        stats.steps = step
        stats.seconds = time.perf_counter() - t0
        return stats
