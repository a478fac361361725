"""Progress bars inside routers (training steps, encoding): shown when the run shows progress.

``evaluate(progress=False)`` and ``--no-progress`` switch them off through ``$CMRBENCH_PROGRESS`` (``0``), which
worker processes (``--isolate``) inherit; a router asks :func:`enabled` or opens a :func:`bar`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from tqdm.auto import tqdm

ENV = "CMRBENCH_PROGRESS"


def enabled() -> bool:
    return os.environ.get(ENV, "1") != "0"


@contextmanager
def switched(on: bool) -> Iterator[None]:
    """Progress on or off for the duration (restored afterwards)."""
    before = os.environ.get(ENV)
    os.environ[ENV] = "1" if on else "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


@contextmanager
def quiet_model_loading() -> Iterator[None]:
    """Load a transformers / sentence-transformers model without the load report (e.g. the unused pooler of
    sentence-transformers checkpoints) and, when progress is off, without the loading and download bars."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        yield
        return
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    bars = hf_logging.is_progress_bar_enabled()
    if not enabled():
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def bar(total: int | None = None, desc: str | None = None, unit: str = "it") -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled(), leave=False, dynamic_ncols=True)
