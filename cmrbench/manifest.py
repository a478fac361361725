"""The dataset contract: ``manifest.json`` of a built CMRBench folder, as a typed model.

Builders write it (validated before it reaches disk), :class:`cmrbench.data.Benchmark` reads it (validated
again, then every data file checked against the sha256 it lists). Names that end up in file names (dataset,
version, stream) are restricted to safe characters, so a crafted manifest cannot steer where results go.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"
SHA256 = r"^[0-9a-f]{64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceRef(_Strict):
    repo: str
    revision: str
    path: str
    sha256: str = Field(pattern=SHA256)
    license: str


class ExperienceStats(_Strict):
    experience: int
    models: int
    new_models: int
    families: int
    domains: int
    new_domains: int
    train: int
    validation: int
    test: int
    cards: int


class Manifest(_Strict):
    dataset: str = Field(pattern=SAFE_NAME)
    dataset_version: str = Field(pattern=SAFE_NAME)
    builder_version: str
    cmrbench_version: str
    stream: str = Field(pattern=SAFE_NAME)
    seed: int
    experiences: int = Field(ge=1)
    sources: dict[str, SourceRef]
    missing_sources: list[str]
    statistics: list[ExperienceStats]
    unique_models: int
    unique_domains: int
    quarantine: dict[str, int]
    notes: dict[str, Any]
    files: dict[str, str] = Field(description="relative path of every Parquet file -> its sha256")

    @field_validator("files")
    @classmethod
    def _relative_paths(cls, files: dict[str, str]) -> dict[str, str]:
        import re
        for rel, digest in files.items():
            parts = rel.split("/")
            if rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts):
                raise ValueError(f"file path {rel!r} is not a plain relative path")
            if not re.fullmatch(SHA256, digest):
                raise ValueError(f"sha256 of {rel} is not 64 hex digits")
        return files


def manifest_json_schema() -> str:
    return json.dumps(Manifest.model_json_schema(), indent=2, sort_keys=True) + "\n"
