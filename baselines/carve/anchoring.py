"""Checkpoint-based anchoring (paper §4.2): keep old registry rows and the projection close to the
snapshot taken at the end of the previous experience; new rows stay free."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def embedding_anchor_loss(rows: torch.Tensor, snapshot: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(v_t(m), v_{t-1}(m)) over the old rows (the first ``len(snapshot)`` rows of
    ``rows``); zero when nothing is old."""
    n_old = snapshot.shape[0]
    if n_old == 0:
        return rows.sum() * 0.0
    return (1.0 - F.cosine_similarity(rows[:n_old], snapshot, dim=-1)).mean()


def projection_anchor_loss(params: dict[str, torch.Tensor], snapshot: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean squared drift of the projection parameters from their snapshot (per-element mean)."""
    drifts = [((params[k] - snapshot[k]) ** 2).reshape(-1) for k in snapshot]
    return torch.cat(drifts).mean()
