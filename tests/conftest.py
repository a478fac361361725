"""Shared fixtures: the mirrored upstream data, a synthetic hub, and one real build per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Tests never touch the network: the Hub libraries read these at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def mirror_dir() -> Path:
    """The upstream mirror: $CMRBENCH_SOURCES, else ../shared/data/raw beside the repository."""
    return Path(os.environ.get("CMRBENCH_SOURCES") or REPO.parent / "shared" / "data" / "raw")


@pytest.fixture(scope="session")
def sources_dir() -> Path:
    path = mirror_dir()
    if not path.is_dir():
        pytest.fail(f"the upstream mirror {path} is missing: set CMRBENCH_SOURCES to it")
    return path


@pytest.fixture(scope="session")
def synthetic_hub(tmp_path_factory) -> Path:
    from cmrbench.builders.synthetic import make_synthetic_hub
    return make_synthetic_hub(tmp_path_factory.mktemp("synthetic") / "hub")


@pytest.fixture(scope="session")
def real_build(tmp_path_factory, sources_dir) -> Path:
    """CMRBench v1 built once from the mirror (the paper stream)."""
    from cmrbench.builders.folder import build
    from cmrbench.sources import SourceResolver
    out = tmp_path_factory.mktemp("real") / "cmrbench-v1"
    build(out, SourceResolver(sources_dir, offline=True))
    return out
