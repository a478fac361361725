"""Learning without Forgetting (Li & Hoiem 2017) for the router: distil the previous router's scores
over the old models into the current one.

At the start of experience t the router as it ended experience t-1 (the teacher) scores every
training example against the models registered before t (rows [0, n_old)); these logits are computed
once, without dropout, and kept. While training, for each example the loss adds
alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) over the old models, T = 2. As in the
paper's code, by default only examples whose gold model is an old model are distilled
(``lwf_only_old_examples``); set it false to distil on every example.
"""

from __future__ import annotations

import polars as pl
import torch
import torch.nn.functional as F

from cmrbench.baselines.trainable.plugins import StrategyPlugin, register_plugin
from cmrbench.baselines.trainable.router import TrainableRouter, strategy
from cmrbench.baselines.trainable.training import StepContext
from cmrbench.data import Experience


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                      weights: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), mean over rows (weighted); 0 when they agree."""
    t = float(temperature)
    log_p_student = F.log_softmax(student / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher / t, dim=-1)
    per_row = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1) * t * t
    if weights is None:
        return per_row.mean()
    return (per_row * weights).sum() / weights.sum().clamp(min=1e-12)


class LwFLoss:
    """The distillation term on the examples of a batch the teacher scored (found by prompt id, so examples other
    plugins add, before or after, are simply not distilled)."""

    name = "lwf"

    def __init__(self, teacher_logits: torch.Tensor, prompt_ids: list[str], old_rows: int, temperature: float,
                 alpha: float, only_old: torch.Tensor | None):
        self.teacher = teacher_logits            # (n_examples, old_rows)
        self.position = {p: i for i, p in enumerate(prompt_ids)}
        self.old_rows = old_rows
        self.temperature = temperature
        self.alpha = alpha
        self.only_old = only_old                 # (n_examples,) bool mask of examples to distil, or None

    def __call__(self, ctx: StepContext) -> torch.Tensor | None:
        found = torch.tensor([self.position.get(p, -1) for p in ctx.batch.frame["prompt_id"].to_list()])
        keep = found >= 0
        if self.only_old is not None:
            keep &= self.only_old[found.clamp(min=0)]
        if not bool(keep.any()):
            return None
        z = ctx.z if bool(keep.all()) else ctx.z[keep.to(ctx.z.device)]
        student = z @ ctx.net.registry.normalized()[:self.old_rows].T / ctx.net.tau
        teacher = self.teacher[found[keep]].to(student.device)
        return self.alpha * distillation_loss(student, teacher, self.temperature)


@register_plugin("lwf")
class LwFPlugin(StrategyPlugin):
    """Distillation of the previous router's scores over the old models."""

    def __init__(self, router: TrainableRouter):
        self.hook: LwFLoss | None = None

    def before_experience(self, router: TrainableRouter, experience: Experience, current: pl.DataFrame) -> None:
        self.hook = None
        if router.previous is None or router.previous.n_models == 0:
            return
        net = router.ensure_net()
        old = router.previous.n_models
        # the teacher scores this experience's own examples (examples other plugins add are not distilled)
        with torch.no_grad():
            z = net.encode(current["prompt"].to_list(), router.cfg["eval_batch_size"])
            teacher = (z @ net.registry.normalized()[:old].T / net.tau).cpu()
        only_old = None
        if router.cfg["lwf_only_old_examples"]:
            old_ids = set(net.registry.ids[:old])
            only_old = torch.tensor([m in old_ids for m in current["model_id"].to_list()], dtype=torch.bool)
        self.hook = LwFLoss(teacher, current["prompt_id"].to_list(), old, router.cfg["lwf_temperature"],
                            router.cfg["lwf_alpha"], only_old)

    def loss_hooks(self, router: TrainableRouter, experience: Experience) -> list:
        return [self.hook] if self.hook is not None else []


lwf = strategy("lwf", "lwf", "Sequential fine-tuning with Learning without Forgetting.")
