"""Continual-learning strategies for the trainable router: plugins, and the registered routers built from them.

Plugins (:mod:`cmrbench.baselines.trainable.plugins`): ``replay``, ``ewc``, ``lwf``, ``cumulative``, ``joint``,
``merging``; CARvE's are in :mod:`cmrbench.baselines.carve.router`. Routers: naive (sequential fine-tuning, no
plugin), replay-10 / replay-20 (random replay), cumulative, joint, ewc (online EWC), lwf (Learning without
Forgetting), merge-avg / merge-ties / merge-dare (model merging). A strategy's plugins and settings are in
``configs/<strategy>.yaml``.
"""

from cmrbench.baselines.trainable.router import strategy

from . import cumulative, ewc, lwf, merging, replay  # noqa: F401 - each registers its plugins

naive = strategy("naive", "naive", "Sequential fine-tuning of the embedding router (the lower bound of the "
                                   "continual strategies).")
