"""The router protocol: what any router, ours or a third party's, implements to be evaluated.

No base class to inherit: a class with ``meta``, ``learn`` and ``route`` satisfies :class:`Router`
(checked with ``isinstance`` at run time). Routers that can save their state also satisfy
:class:`CheckpointableRouter`, which lets ``cmrbench evaluate --resume`` skip re-learning.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from .data import Experience

Ranking = list[tuple[str, float]]


class RouterMeta(BaseModel):
    """Who the router is and how it was trained; stored in every result file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="registered or chosen name, e.g. 'bm25'")
    version: str = Field(default="0", description="version of the router's code or weights")
    description: str = ""
    reference: str | None = Field(default=None, description="paper or repository URL")
    parameters: dict[str, Any] = Field(default_factory=dict, description="hyper-parameters that change results")
    zero_shot: bool = Field(description="True when the router learns nothing from training prompts")
    training_data: list[str] = Field(default_factory=list,
                                     description="data used beyond CMRBench train splits (contamination check)")
    reference_row: bool = Field(default=False, description="a harness reference (random, oracle...), not a router")
    statistics: dict[str, int | float] = Field(
        default_factory=dict, description="counts the router reports about its own run so far (e.g. LLM answers "
                                          "it could not parse); not settings, so never compared on resume")


@runtime_checkable
class Router(Protocol):
    """A continual router.

    ``learn`` is called once per experience, in order, with a view that holds only what may be known
    at that point (train / validation prompts of this experience, model cards and labels of models
    seen so far). ``route`` returns, for each prompt, up to ``top_k`` (model id, score) pairs, best
    first, over the models seen so far.
    """

    meta: RouterMeta

    def learn(self, experience: Experience) -> None: ...

    def route(self, prompts: Sequence[str], top_k: int) -> list[Ranking]: ...


@runtime_checkable
class ReferenceRouter(Router, Protocol):
    """A harness reference that reads the answer key (the oracles): ``needs_gold = True``, and the evaluator
    calls ``route_with_gold(prompts, top_k, gold_rows)`` instead of ``route``. Only routers whose meta says
    ``reference_row=True`` may declare it (any other is refused); results record ``answer_key: true`` and
    leaderboards list such rows apart, never ranked."""

    needs_gold: bool

    def route_with_gold(self, prompts: Sequence[str], top_k: int, gold: Any) -> list[Ranking]: ...


@runtime_checkable
class CheckpointableRouter(Router, Protocol):
    """A router that can save and restore its state after an experience (used by ``--resume``)."""

    def save(self, folder: Path) -> None: ...

    def load(self, folder: Path) -> None: ...
