"""Write an assembled CMRBench as a Hub-ready folder: Parquet per config/split, README.md dataset card
with ``configs:``, ``manifest.json`` and ``quarantine.jsonl``.

The folder is written into a temporary sibling and renamed into place, so an interrupted build never
leaves a half-written dataset, and two builds from the same sources are byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import polars as pl

from cmrbench import DATASET_NAME, DATASET_VERSION, __version__
from cmrbench.sources import SOURCES, SourceResolver

from .assemble import SPLITS, STREAMS, Assembled, add_extra_hubs, assemble_paper, reslice_timeline
from .card import render_card
from .records import Quarantine

BUILDER_VERSION = "1.0.0"
MANIFEST = "manifest.json"


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(path, compression="zstd", compression_level=9, statistics=True, row_group_size=1 << 20)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def config_files(data: Assembled) -> dict[str, dict[str, str]]:
    """config name -> split -> relative Parquet path, in the order the card lists them."""
    configs = {f"experience_{e}": {s: f"experience_{e}/{s}.parquet" for s in SPLITS}
               for e in sorted(data.experiences)}
    configs["models"] = {"models": "models/models.parquet"}
    configs["cards"] = {"cards": "cards/cards.parquet"}
    return configs


def statistics(data: Assembled) -> list[dict[str, object]]:
    """Per-experience counts, the table `cmrbench info` prints and the card shows."""
    seen: set[str] = set()
    seen_domains: set[str] = set()
    out = []
    for exp in sorted(data.experiences):
        rows = data.experiences[exp]
        models = set(rows["model_id"].to_list())
        domains = set(rows["domain"].to_list())
        split_counts = dict(rows.group_by("split").len().rows())
        out.append({"experience": exp, "models": len(models), "new_models": len(models - seen),
                    "families": rows["family"].n_unique(), "domains": len(domains),
                    "new_domains": len(domains - seen_domains),
                    **{s: split_counts.get(s, 0) for s in SPLITS},
                    "cards": data.cards.filter(pl.col("experience") <= exp).height})
        seen |= models
        seen_domains |= domains
    return out


def write_folder(data: Assembled, source_sha256: dict[str, str], quarantine: Quarantine, out: Path,
                 overwrite: bool = False) -> dict:
    """Write ``data`` to ``out`` atomically; return the manifest. ``source_sha256`` maps each source key
    read to the checksum of the file that was used."""
    out = Path(out).resolve()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for exp, rows in sorted(data.experiences.items()):
            for split in SPLITS:
                _write_parquet(rows.filter(pl.col("split") == split), tmp / f"experience_{exp}/{split}.parquet")
        _write_parquet(data.models, tmp / "models/models.parquet")
        _write_parquet(data.cards.sort("card_id"), tmp / "cards/cards.parquet")
        quarantine.write(tmp / "quarantine.jsonl")
        files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*.parquet"))}
        manifest = {
            "dataset": DATASET_NAME, "dataset_version": DATASET_VERSION, "builder_version": BUILDER_VERSION,
            "cmrbench_version": __version__, "stream": data.stream, "seed": data.seed,
            "experiences": len(data.experiences),
            "sources": {k: {"repo": SOURCES[k].repo, "revision": SOURCES[k].revision, "path": SOURCES[k].path,
                            "sha256": v, "license": SOURCES[k].license} for k, v in sorted(source_sha256.items())},
            "missing_sources": sorted(data.missing_sources),
            "statistics": statistics(data),
            "unique_models": data.models.height,
            "unique_domains": pl.concat(list(data.experiences.values()))["domain"].n_unique(),
            "quarantine": quarantine.counts(),
            "notes": data.notes,
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(render_card(manifest, config_files(data)), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def build(out: Path, resolver: SourceResolver, *, stream: str = "paper", experiences: int = 4, seed: int = 42,
          extra_hubs: list[str] | None = None, overwrite: bool = False) -> dict:
    """Build CMRBench from sources into ``out``; the function behind ``cmrbench build``."""
    if stream not in STREAMS:
        raise ValueError(f"unknown stream '{stream}'; choose one of {STREAMS}")
    quarantine = Quarantine()
    data = assemble_paper(resolver, quarantine, seed=seed)
    if stream == "timeline":
        data = reslice_timeline(data, experiences)
    if extra_hubs:
        data = add_extra_hubs(data, resolver, quarantine, list(extra_hubs))
    data.missing_sources = sorted(k for k, spec in SOURCES.items() if spec.optional and not resolver.available(k))
    return write_folder(data, resolver.sha256, quarantine, out, overwrite=overwrite)


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a CMRBench folder (no {MANIFEST}); run `cmrbench build` first.")
    return json.loads(path.read_text(encoding="utf-8"))
