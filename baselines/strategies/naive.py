"""Sequential fine-tuning ("naive"): train the router on each experience in turn, nothing more."""

from __future__ import annotations

from cmrbench.baselines.trainable.router import TrainableRouter


class NaiveRouter(TrainableRouter):
    """Sequential fine-tuning of the embedding router (the lower bound of the continual strategies)."""

    config_name = "naive"
    description = "sequential fine-tuning of an embedding router: each experience in turn, no protection"
