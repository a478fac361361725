"""Write an assembled CMRBench as a Hub-ready folder: Parquet per config/split, README.md dataset card
with ``configs:``, ``LICENSE.md`` (the sources' licenses), ``manifest.json`` and ``quarantine.jsonl.gz``.

The folder is written into a temporary sibling and renamed into place, so an interrupted build never
leaves a half-written dataset, and two builds from the same sources are byte-identical.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import polars as pl

from cmrbench import DATASET_NAME, DATASET_VERSION, __version__
from cmrbench.fileio import sha256_file
from cmrbench.manifest import Manifest
from cmrbench.sources import SOURCES, SourceResolver

from .assemble import SPLITS, STREAMS, Assembled, add_extra_hubs, assemble_paper, reslice_timeline
from .card import render_card, render_license
from .records import Quarantine

BUILDER_VERSION = "1.0.0"
MANIFEST = "manifest.json"


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(path, compression="zstd", compression_level=9, statistics=True, row_group_size=1 << 20)


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


QUARANTINE = "quarantine.jsonl.gz"
# the uncompressed quarantine.jsonl of earlier builds stays ours, so that --overwrite can replace those builds
OWN_FILES = (MANIFEST, "README.md", "LICENSE.md", QUARANTINE, "quarantine.jsonl")


class NotOurFolderError(FileExistsError):
    """``--overwrite`` was asked of a folder that is not (only) a CMRBench build."""


def check_replaceable(out: Path, overwrite: bool) -> None:
    """Refuse to write over ``out`` unless it is absent, or ``overwrite`` is set and ``out`` is a CMRBench build
    holding nothing but what a build writes (its manifest's files, the card, the quarantine file).

    ``--overwrite`` thus never deletes a folder the project did not create, nor a file someone added to one.
    """
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it.")
    if out.is_symlink() or not out.is_dir():
        raise NotOurFolderError(f"{out} is not a folder; --overwrite only replaces a CMRBench build. Choose "
                                "another --out.")
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        listed = set(manifest["files"])
        ours = isinstance(manifest, dict) and "dataset" in manifest and "dataset_version" in manifest
    except (OSError, ValueError, KeyError, TypeError):
        ours = False
    if not ours:
        raise NotOurFolderError(f"{out} is not a CMRBench build (no valid {MANIFEST}); --overwrite never deletes "
                                "a folder cmrbench did not create. Choose another --out, or remove it yourself.")
    foreign = []
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if path.is_symlink() or (path.is_file() and rel not in listed and rel not in OWN_FILES):
            foreign.append(rel)
        elif path.is_dir() and not any(f == rel or f.startswith(rel + "/") for f in listed):
            foreign.append(rel + "/")
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise NotOurFolderError(f"{out} holds files a build did not write ({shown}); --overwrite would delete "
                                "them, so it refuses. Move them out first.")


def write_folder(data: Assembled, source_sha256: dict[str, str], quarantine: Quarantine, out: Path,
                 overwrite: bool = False) -> dict:
    """Write ``data`` to ``out`` atomically; return the manifest. ``source_sha256`` maps each source key
    read to the checksum of the file that was used. An existing ``out`` is replaced only when ``overwrite``
    is set and it is a CMRBench build with nothing else in it (:func:`check_replaceable`)."""
    out = Path(out).resolve()
    check_replaceable(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for exp, rows in sorted(data.experiences.items()):
            for split in SPLITS:
                _write_parquet(rows.filter(pl.col("split") == split), tmp / f"experience_{exp}/{split}.parquet")
        _write_parquet(data.models, tmp / "models/models.parquet")
        _write_parquet(data.cards.sort("card_id"), tmp / "cards/cards.parquet")
        quarantine.write(tmp / QUARANTINE)
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
        Manifest.model_validate(manifest)          # the dataset contract, checked before it reaches disk
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(render_card(manifest, config_files(data)), encoding="utf-8")
        (tmp / "LICENSE.md").write_text(render_license(manifest), encoding="utf-8")
        if out.exists():
            check_replaceable(out, overwrite)    # again: the folder may have changed while we built
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def build(out: Path, resolver: SourceResolver, *, stream: str = "paper", experiences: int = 4, seed: int = 42,
          extra_hubs: list[str] | None = None, overwrite: bool = False) -> dict:
    """Build CMRBench from sources into ``out``; the function behind ``cmrbench build``."""
    check_replaceable(Path(out).resolve(), overwrite)        # before minutes of work, not after
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
