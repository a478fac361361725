"""Continual strategies as plugins of the trainable router, after Avalanche's strategy plugins.

A strategy is :class:`~cmrbench.baselines.trainable.router.TrainableRouter` plus a list of plugins named in its
YAML file (``plugins: [replay]``); ``--router-arg plugins=replay,ewc`` composes others (each plugin's settings
come with it from ``configs/plugins/<name>.yaml``). A plugin owns its state and checkpoints it. The router
calls each hook on every plugin, in list order:

======================  =======================================================================================
``before_experience``   the registry holds this experience's models and their rows are initialised
``training_examples``   what to train on: each plugin gets the previous one's examples (replay adds its buffer)
``initialise_rows``     new registry rows: the first plugin that returns True has set them
``candidate_sampler``   what each example is scored against: the first plugin that returns one
``batch_sampler``       how examples are batched: the first plugin that returns one
``loss_hooks``          extra loss terms (EWC, LwF, anchoring): all of them
``callbacks``           per-step trainer callbacks (schedules): all of them
``epochs``              epochs of this experience: the first plugin that returns a number
``after_experience``    after training (a Fisher estimate, the replay buffer, merged weights)
``state``               tensors / frames / JSON for checkpoints, restored by ``load_state``
======================  =======================================================================================

Plugins register where they are defined (:func:`register_plugin`); ``package.module:Class`` names a plugin of
another package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable

import polars as pl

if TYPE_CHECKING:
    from cmrbench.data import Experience

    from .router import TrainableRouter
    from .training import BatchSampler, Callback, CandidateSampler, LossHook

# modules whose plugins the names in strategy files refer to (imported when a router is built)
PLUGIN_MODULES = ("cmrbench.baselines.strategies", "cmrbench.baselines.carve.router")


class StrategyPlugin:
    """Hooks that do nothing: a plugin overrides those it needs. ``router`` is the trainable router."""

    name = ""

    def before_experience(self, router: TrainableRouter, experience: Experience, current: pl.DataFrame) -> None:
        """Before the training set is assembled (``current``: this experience's own examples)."""

    def training_examples(self, router: TrainableRouter, experience: Experience, current: pl.DataFrame,
                          examples: pl.DataFrame) -> pl.DataFrame:
        return examples

    def initialise_rows(self, router: TrainableRouter, experience: Experience, current: pl.DataFrame,
                        rows: list[int]) -> bool:
        return False

    def candidate_sampler(self, router: TrainableRouter, experience: Experience,
                          examples: pl.DataFrame) -> CandidateSampler | None:
        return None

    def batch_sampler(self, router: TrainableRouter, experience: Experience) -> BatchSampler | None:
        return None

    def loss_hooks(self, router: TrainableRouter, experience: Experience) -> list[LossHook]:
        return []

    def callbacks(self, router: TrainableRouter, experience: Experience) -> list[Callback]:
        return []

    def epochs(self, router: TrainableRouter, experience: Experience) -> int | None:
        return None

    def after_experience(self, router: TrainableRouter, experience: Experience, current: pl.DataFrame,
                         trained_on: pl.DataFrame | None) -> None:
        """After training on ``trained_on`` (what :meth:`training_examples` returned)."""

    def state(self) -> dict[str, Any]:
        """For checkpoints: ``{"tensors": {key: Tensor}, "frames": {key: DataFrame}, "json": {...}}``; keys must
        not collide with other plugins' (checked)."""
        return {}

    def load_state(self, router: TrainableRouter, state: dict[str, Any]) -> None:
        """Restore from the merged state of every plugin (take your own keys)."""


PLUGINS: dict[str, type[StrategyPlugin]] = {}


def register_plugin(name: str) -> Callable[[type[StrategyPlugin]], type[StrategyPlugin]]:
    """Class decorator: the plugin is built as ``cls(router)`` when a strategy lists ``name``."""
    def add(cls: type[StrategyPlugin]) -> type[StrategyPlugin]:
        if name in PLUGINS and PLUGINS[name] is not cls:
            raise ValueError(f"plugin name '{name}' is taken by {PLUGINS[name].__qualname__}")
        cls.name = name
        PLUGINS[name] = cls
        return cls
    return add


def plugin_class(name: str) -> type[StrategyPlugin]:
    """The class of a plugin name (registered, or ``package.module:Class``)."""
    if ":" in name:
        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)
    for module in PLUGIN_MODULES:
        importlib.import_module(module)
    if name not in PLUGINS:
        raise ValueError(f"no strategy plugin '{name}'; known: {', '.join(sorted(PLUGINS))} (or package.module:Class)")
    return PLUGINS[name]


def make_plugin(spec: str, router: TrainableRouter) -> StrategyPlugin:
    """The plugin ``spec`` names, built for ``router``; one of another package is known by its ``module:Class``."""
    plugin = plugin_class(spec)(router)
    if not plugin.name:
        plugin.name = spec
    return plugin


def merge_states(plugins: list[StrategyPlugin]) -> dict[str, Any]:
    """Every plugin's checkpoint state in one (refusing two plugins that use the same key)."""
    merged: dict[str, dict[str, Any]] = {"tensors": {}, "frames": {}, "json": {}}
    for plugin in plugins:
        for part, values in plugin.state().items():
            clash = set(values) & set(merged[part])
            if clash:
                raise ValueError(f"plugins use the same checkpoint key(s) {sorted(clash)} ({plugin.name})")
            merged[part].update(values)
    return merged
