"""Model merging: one set of weights per experience, all trained from the same base, merged at test time.

For each experience t the router's tracked parameters (trainable backbone layers or LoRA adapters,
projection) are reset to the base (the pre-trained backbone and the seeded projection: the same
starting point for every experience), the registry rows are reset to their initial values, and the
router is trained on experience t alone. Its delta tau_t = theta_t - theta_base is stored. At test
time after experience t the routed weights are theta_base + merge(tau_1..tau_t), and each model's
registry row is the one trained by the latest experience whose training data contained the model
(rows of models never trained keep their initial values).

Merge operators on state-dict deltas (written here, not peft's, because they must also cover full
fine-tuning; for LoRA they act on the A/B matrices like peft's ``add_weighted_adapter``):

- ``average``: sum_t w_t tau_t with w_t = 1/n (task arithmetic with the mean);
- ``ties`` (Yadav et al. 2023): keep each delta's top-``density`` entries by magnitude (per tensor),
  elect a sign per entry as the sign of the sum of the weighted trimmed deltas, and average only the
  entries that agree with it (disjoint mean; peft's ``disjoint_merge``); weights 1.0 each as in the paper;
- ``dare`` (Yu et al. 2024, DARE-linear): drop each delta entry with probability 1 - density (seeded),
  rescale the survivors by 1/density, then the weighted sum (w_t = 1/n by default).
"""

from __future__ import annotations

from typing import Any, Sequence

import polars as pl
import torch

from cmrbench.baselines.trainable.plugins import StrategyPlugin, register_plugin
from cmrbench.baselines.trainable.router import TrainableRouter, strategy
from cmrbench.baselines.trainable.training import seeded_generator
from cmrbench.data import Experience

METHODS = ("average", "ties", "dare")


def magnitude_trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``density`` share of entries with the largest |value| (ties broken by position), zero the rest."""
    n = delta.numel()
    k = int(round(density * n))
    if k >= n:
        return delta.clone()
    if k <= 0:
        return torch.zeros_like(delta)
    flat = delta.flatten()
    order = torch.sort(flat.abs(), descending=True, stable=True).indices[:k]
    out = torch.zeros_like(flat)
    out[order] = flat[order]
    return out.view_as(delta)


def ties_merge(deltas: Sequence[torch.Tensor], weights: Sequence[float], density: float) -> torch.Tensor:
    """TIES: trim, elect sign (sum of weighted trimmed deltas), disjoint mean of the agreeing entries."""
    trimmed = torch.stack([magnitude_trim(d, density) * float(w) for d, w in zip(deltas, weights)])
    sign = torch.sign(trimmed.sum(0))
    agree = (torch.sign(trimmed) == sign.unsqueeze(0)) & (trimmed != 0)
    total = (trimmed * agree).sum(0)
    count = agree.sum(0).clamp(min=1)
    return total / count


def dare_merge(deltas: Sequence[torch.Tensor], weights: Sequence[float], density: float,
               generator: torch.Generator) -> torch.Tensor:
    """DARE-linear: random drop with keep probability ``density``, rescale by 1/density, weighted sum."""
    out = torch.zeros_like(deltas[0])
    for d, w in zip(deltas, weights):
        keep = torch.rand(d.shape, generator=generator) < density
        out = out + float(w) * torch.where(keep.to(d.device), d / density, torch.zeros_like(d))
    return out


def average_merge(deltas: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    out = torch.zeros_like(deltas[0])
    for d, w in zip(deltas, weights):
        out = out + float(w) * d
    return out


def merge_deltas(deltas: Sequence[dict[str, torch.Tensor]], method: str, *, density: float = 0.3,
                 weights: Sequence[float] | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Merge per-experience state-dict deltas tensor by tensor."""
    if method not in METHODS:
        raise ValueError(f"merge method must be one of {METHODS}, not {method!r}")
    if not deltas:
        return {}
    n = len(deltas)
    if weights is None:
        weights = [1.0] * n if method == "ties" else [1.0 / n] * n
    out = {}
    for i, name in enumerate(sorted(deltas[0])):
        parts = [d[name] for d in deltas]
        if method == "average":
            out[name] = average_merge(parts, weights)
        elif method == "ties":
            out[name] = ties_merge(parts, weights, density)
        else:
            out[name] = dare_merge(parts, weights, density, seeded_generator(seed, 23, i))
    return out


@register_plugin("merging")
class MergingPlugin(StrategyPlugin):
    """One router per experience from the same base; deltas merged at test time (average / TIES / DARE)."""

    def __init__(self, router: TrainableRouter):
        if router.cfg["merge_method"] not in METHODS:
            raise ValueError(f"merge_method must be one of {METHODS}")
        self.deltas: dict[int, dict[str, torch.Tensor]] = {}    # experience -> tracked delta (no registry)
        self.row_init: torch.Tensor | None = None                # initial value of every registry row
        self.rows: torch.Tensor | None = None                    # assembled registry (latest trainer wins)
        self.row_source: list[int] = []                          # experience whose weights gave each row (0 = init)

    def before_experience(self, router: TrainableRouter, experience: Experience, current: pl.DataFrame) -> None:
        net = router.ensure_net()
        weight = net.registry.weight.detach().cpu()
        n_old = 0 if self.row_init is None else self.row_init.shape[0]
        init = weight.clone() if self.row_init is None else torch.cat([self.row_init, weight[n_old:].clone()])
        self.row_init = init
        state = {n: v for n, v in router.base.items() if n != "registry.weight"}
        state["registry.weight"] = init
        net.load_tracked(state)                  # the same base for every experience

    def after_experience(self, router: TrainableRouter, experience: Experience, current: pl.DataFrame,
                         trained_on: pl.DataFrame | None) -> None:
        net = router.ensure_net()
        t = experience.current_experience
        params = net.tracked_parameters()
        self.deltas[t] = {n: (params[n].detach() - router.base[n]).cpu() for n in params if n != "registry.weight"}
        rows = self.row_init.clone() if self.rows is None else torch.cat(
            [self.rows, self.row_init[self.rows.shape[0]:]])
        source = self.row_source + [0] * (rows.shape[0] - len(self.row_source))
        trained = sorted(set(net.registry.rows(sorted(set(current["model_id"].to_list()))).tolist()))
        rows[trained] = net.registry.weight.detach()[trained].cpu()
        for r in trained:
            source[r] = t
        self.rows, self.row_source = rows, source
        self.install(router)

    def install(self, router: TrainableRouter) -> None:
        """Put base + merge(deltas) and the assembled registry rows into the network."""
        net = router.ensure_net()
        order = sorted(self.deltas)
        c = router.cfg
        merged = merge_deltas([self.deltas[t] for t in order], c["merge_method"], density=c["merge_density"],
                              weights=None if c["merge_weights"] == "auto" else
                              [float(w) for w in str(c["merge_weights"]).split(",")][:len(order)],
                              seed=router.seed)
        state = {n: router.base[n] + merged[n].to(router.base[n].device) for n in merged}
        state["registry.weight"] = self.rows
        net.load_tracked(state)

    def state(self) -> dict[str, Any]:
        tensors = {f"delta::{t}::{n}": v for t, d in self.deltas.items() for n, v in d.items()}
        tensors["row_init"] = self.row_init
        tensors["rows"] = self.rows
        return {"tensors": tensors, "json": {"row_source": self.row_source}}

    def load_state(self, router: TrainableRouter, state: dict[str, Any]) -> None:
        tensors = state.get("tensors", {})
        self.deltas = {}
        for key, value in tensors.items():
            if key.startswith("delta::"):
                _, t, name = key.split("::", 2)
                self.deltas.setdefault(int(t), {})[name] = value
        self.row_init = tensors.get("row_init")
        self.rows = tensors.get("rows")
        self.row_source = list(state.get("json", {}).get("row_source", []))
        if self.deltas:
            self.install(router)


merge_average = strategy("merging", "merge-avg", "Model merging by averaging per-experience routers.",
                         merge_method="average")
merge_ties = strategy("merging", "merge-ties", "Model merging by TIES of per-experience routers.", merge_method="ties")
merge_dare = strategy("merging", "merge-dare", "Model merging by DARE of per-experience routers.", merge_method="dare")
