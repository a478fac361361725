"""Online EWC (Schwarz et al. 2018, as in Avalanche): a quadratic penalty pulling every tracked parameter
towards its value at the end of the previous experience, weighted by a running diagonal Fisher.

After experience t: F_t = decay * F_{t-1} + F(experience t), with F(experience t) the mean over
mini-batches of the squared gradient of the routing loss on that experience's training examples
(Avalanche's estimate); anchor theta*_t = the parameters at that point. While training experience
t+1: L = L_route + lambda * sum_i F_i (theta_i - theta*_i)^2. Registry rows added after the anchor
have no Fisher (new rows are free). The paper's value for LoRA is lambda = 25,000; the scale of F
depends on the parameterisation, so ours is set for the MiniLM router (configs/ewc.yaml).
"""

from __future__ import annotations

from typing import Any

import polars as pl
import torch

from cmrbench.baselines.trainable.plugins import StrategyPlugin, register_plugin
from cmrbench.baselines.trainable.router import TrainableRouter, strategy
from cmrbench.baselines.trainable.training import RouterNet, StepContext, routing_loss, seeded_generator
from cmrbench.data import Experience


def ewc_penalty(params: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor],
                fisher: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum_i F_i (theta_i - theta*_i)^2 over the leading rows each anchor covers (grown tables are sliced)."""
    total = None
    for name, f in fisher.items():
        p = params[name]
        a = anchor[name].to(p.device)
        if p.shape != a.shape:                   # a grown registry: only the rows the anchor knows
            p = p[:a.shape[0]]
        term = (f.to(p.device) * (p - a) ** 2).sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return total


def estimate_fisher(net: RouterNet, examples: pl.DataFrame, batch_size: int, max_examples: int,
                    seed: int) -> dict[str, torch.Tensor]:
    """Mean over mini-batches of squared gradients of the routing loss (full softmax), eval mode."""
    if max_examples and examples.height > max_examples:
        order = torch.randperm(examples.height, generator=seeded_generator(seed, 17))[:max_examples].tolist()
        examples = examples[sorted(order)]
    params = net.tracked_parameters()
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    targets = net.registry.rows(examples["model_id"].to_list())
    prompts = examples["prompt"].to_list()
    was = net.training
    net.eval()
    n_batches = 0
    for lo in range(0, len(prompts), batch_size):
        net.zero_grad(set_to_none=True)
        z = net.embed(prompts[lo:lo + batch_size])
        tgt = targets[lo:lo + batch_size]
        loss = routing_loss(net.logits(z), tgt, torch.ones(len(tgt), device=z.device))
        loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2
        n_batches += 1
    net.zero_grad(set_to_none=True)
    net.train(was)
    return {n: f / max(1, n_batches) for n, f in fisher.items()}


class EWCPenalty:
    name = "ewc"

    def __init__(self, lam: float, anchor: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor]):
        self.lam = float(lam)
        self.anchor = anchor
        self.fisher = fisher

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        return self.lam * ewc_penalty(ctx.net.tracked_parameters(), self.anchor, self.fisher)


@register_plugin("ewc")
class EWCPlugin(StrategyPlugin):
    """Online-EWC penalty (Fisher decay ``ewc_decay``, strength ``ewc_lambda``) against the previous experience."""

    def __init__(self, router: TrainableRouter):
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def loss_hooks(self, router: TrainableRouter, experience: Experience) -> list:
        if not self.fisher:
            return []
        return [EWCPenalty(router.cfg["ewc_lambda"], self.anchor, self.fisher)]

    def after_experience(self, router: TrainableRouter, experience: Experience, current: pl.DataFrame,
                         trained_on: pl.DataFrame | None) -> None:
        net = router.ensure_net()
        new = estimate_fisher(net, current, router.cfg["batch_size"], router.cfg["ewc_fisher_examples"],
                              router.seed * 1000 + experience.current_experience)
        decay = float(router.cfg["ewc_decay"])
        for name, f in new.items():
            old = self.fisher.get(name)
            if old is not None:
                if old.shape != f.shape:          # registry grew: old Fisher covers the leading rows
                    padded = torch.zeros_like(f)
                    padded[:old.shape[0]] = old
                    old = padded
                f = decay * old + f
            new[name] = f
        self.fisher = new
        self.anchor = net.snapshot()

    def state(self) -> dict[str, Any]:
        return {"tensors": {**{f"fisher::{n}": f for n, f in self.fisher.items()},
                            **{f"anchor::{n}": a for n, a in self.anchor.items()}}}

    def load_state(self, router: TrainableRouter, state: dict[str, Any]) -> None:
        tensors = state.get("tensors", {})
        self.fisher = {k.split("::", 1)[1]: v for k, v in tensors.items() if k.startswith("fisher::")}
        self.anchor = {k.split("::", 1)[1]: v for k, v in tensors.items() if k.startswith("anchor::")}


ewc = strategy("ewc", "ewc", "Sequential fine-tuning with an online-EWC penalty.")
