"""Trainable routers: text backbone + projection + append-only model registry (paper §4.1 / §5).

- :mod:`.backbone` — encoders (offline MiniLM by default) and decoder LLMs (LoRA via peft), pooling,
  frozen-layer cache; tiny offline models for tests.
- :mod:`.registry` — the append-only model registry (ids never re-indexed).
- :mod:`.training` — :class:`RouterNet` (cosine / tau scoring), the training loop and its hooks
  (candidate samplers, batch samplers, loss hooks, callbacks).
- :mod:`.router` — :class:`TrainableRouter`, the protocol implementation; a strategy is its plugin list.
- :mod:`.plugins` — the strategy plugin hooks and their registry.
- :mod:`.buffer` — replay buffers with pluggable selection.
- :mod:`.generative` — the Gorilla-style generative router.
- :mod:`.config` — per-strategy YAML configurations (``cmrbench/baselines/configs``).

The continual strategies' plugins live in :mod:`cmrbench.baselines.strategies` and :mod:`cmrbench.baselines.carve`.
"""
