"""Upstream files CMRBench is built from, and the resolver that turns a name into a verified local file.

Each file is pinned by (repository or Hub dataset, commit/revision, path) and a checksum. The
resolver looks in a mirror folder first (``--sources DIR`` or ``CMRBENCH_SOURCES``; the mirror
uses the ``key`` of each file as its relative path), then, unless offline, downloads the pinned
revision into a cache. Every file is checksum-verified before it is handed out.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import platformdirs

SOURCES_ENV = "CMRBENCH_SOURCES"
OFFLINE_ENV = "CMRBENCH_OFFLINE"
GITHUB_RAW_ENV = "CMRBENCH_GITHUB_RAW_BASE"  # lets tests serve GitHub raw files on loopback
GITHUB_RAW_BASE = "https://raw.githubusercontent.com"

GORILLA = ("ShishirPatil/gorilla", "6ea57973c7a6097fd7c5915698c54c17c5b1b6c8", "Apache-2.0")
MLLM_TOOL = ("MLLM-Tool/MLLM-Tool", "0114f7c5da6505ce86b2981a8ab840a6b29134d0", "MIT")
CMR = ("collagelab/CMR", "712e77b31d254918d38b5c126ba7d793b841d20b", "MIT")
MODEL_CARDS = ("Weixin-Liang/AI-model-card-analysis-HuggingFace", "6bcc76fe6142e119732491805e7f0240ebb8eca5",
               "none declared (research use)")
JARVIS = ("microsoft/JARVIS", "c62e0faac76c4a2907cabe2cfe4bbe5f2e613400", "MIT")


class SourceError(RuntimeError):
    """A source file is missing, unreachable or fails its checksum."""


@dataclass(frozen=True)
class SourceFile:
    """One pinned upstream file.

    ``sha256`` is known for every file that was ever mirrored; for the few files that were never
    seen here only the git blob id (a SHA-1 over the content, fixed by the commit) is known, and
    it is verified instead. ``optional`` files are used when present and their absence is reported.
    """

    key: str
    repo: str
    revision: str
    path: str
    license: str
    sha256: str | None = None
    git_blob: str | None = None
    optional: bool = False

    @property
    def url(self) -> str:
        base = os.environ.get(GITHUB_RAW_ENV, GITHUB_RAW_BASE).rstrip("/")
        return f"{base}/{self.repo}/{self.revision}/{self.path}"

    def verify(self, local: Path) -> str:
        """Check ``local`` against the pinned checksum; return its sha256."""
        data_sha256 = hashlib.sha256()
        blob = hashlib.sha1(f"blob {local.stat().st_size}\0".encode())
        with open(local, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                data_sha256.update(chunk)
                blob.update(chunk)
        digest = data_sha256.hexdigest()
        if self.sha256 and digest != self.sha256:
            raise SourceError(f"checksum mismatch for source '{self.key}' at {local}: sha256 {digest}, "
                              f"expected {self.sha256} ({self.repo}@{self.revision[:7]}:{self.path}). "
                              "The file is corrupt or from another revision; delete it and fetch it again.")
        if not self.sha256 and self.git_blob and blob.hexdigest() != self.git_blob:
            raise SourceError(f"checksum mismatch for source '{self.key}' at {local}: git blob "
                              f"{blob.hexdigest()}, expected {self.git_blob}.")
        return digest


def _gh(key: str, repo: tuple[str, str, str], path: str, sha256: str | None = None, *,
        git_blob: str | None = None, optional: bool = False) -> SourceFile:
    name, revision, license_ = repo
    return SourceFile(key, name, revision, path, license_, sha256, git_blob, optional)


SOURCES: dict[str, SourceFile] = {s.key: s for s in [
    # APIBench (Gorilla)
    _gh("apibench/huggingface_api.jsonl", GORILLA, "data/api/huggingface_api.jsonl",
        "6757c59091abcf6d0f32f878a765b4ae28a9db7f88c7a1a4ee8bfeda72472f6d"),
    _gh("apibench/tensorflowhub_api.jsonl", GORILLA, "data/api/tensorflowhub_api.jsonl",
        "bed9819b8d54cda1709fb0942f18d7cd5f39788b22ba03c9f89e9fc0287b2c0a"),
    _gh("apibench/torchhub_api.jsonl", GORILLA, "data/api/torchhub_api.jsonl",
        "30c762a4f8ae1be605aa45c74669e8b64a806fa4f3be52bd625199000540b080"),
    _gh("apibench/huggingface_eval.json", GORILLA, "data/apibench/huggingface_eval.json",
        "d314b1617fe4021bdd7b2e81ca7c1aeda0c7f9921b512aa5f222398e83744c43"),
    _gh("apibench/tensorflow_eval.json", GORILLA, "data/apibench/tensorflow_eval.json",
        "14fd83b6e1fb61ccb43609483a13b658cc31bd55bd5e118bc19067ab73164f0a"),
    _gh("apibench/torchhub_eval.json", GORILLA, "data/apibench/torchhub_eval.json",
        "e575eec9289ee46a577b80ee3065111dd8accf4e6145d6ad5fd919879a79efe9"),
    _gh("apibench/torchhub_train.json", GORILLA, "data/apibench/torchhub_train.json",
        "02256a7d21cd4531514466ba624c075d0d11c5e4eb7746b99208b9c25c6cb30d"),
    _gh("apibench/huggingface_train.json", GORILLA, "data/apibench/huggingface_train.json",
        git_blob="1416879c69acbd5db06cdf7f59240ae0c06e0bf5", optional=True),
    _gh("apibench/tensorflow_train.json", GORILLA, "data/apibench/tensorflow_train.json",
        git_blob="542019d3de34729d895bf0c11eda11f8093a03b4", optional=True),
    # ToolMMBench (MLLM-Tool)
    _gh("toolmmbench/audio_tx2t.json", MLLM_TOOL, "data/IT_data_ins/T+X-T_data/audio_tx2t.json",
        "9c3572a5dfa779cea2b9366d1af4fa8c231fd523c52033d93ae1376c601acc2a"),
    _gh("toolmmbench/video_tx2t.json", MLLM_TOOL, "data/IT_data_ins/T+X-T_data/video_tx2t.json",
        "a771c07fbbfb76204161e30bd5712c1b5c96de218505ba15d249a881ed14e0ae"),
    _gh("toolmmbench/combined_data.json", MLLM_TOOL, "data/IT_data_ins/T+X-T_data/combined_data.json",
        "8224d5a537a7cc7633863684db78ae3c5be7c34423bce9d4a9d43d821d7ddecc"),
    _gh("toolmmbench/image_tx2t.json", MLLM_TOOL, "data/IT_data_ins/T+X-T_data/image_tx2t.json",
        git_blob="b5cd71b8bb45921853ff96820d912cabfc082e45", optional=True),
    _gh("toolmmbench/text_t2t.json", MLLM_TOOL, "data/IT_data_ins/T+X-T_data/text_t2t.json",
        git_blob="739107dc4e02134698be8dcef0cb0a73afc78b4b", optional=True),
    # Hub metadata snapshots standing in for a live scrape
    _gh("huggingbench/ai-model-card-analysis/model_info.parquet", MODEL_CARDS, "data/model_info.parquet",
        "3e87098483f5201116b3e9e261017eaa6ed74ec1fd6d3c1bc4d598615043a146"),
    _gh("huggingbench/hugginggpt/p0_models.jsonl", JARVIS, "hugginggpt/server/data/p0_models.jsonl",
        "0135386bf70a15a01a6df3a67bdbd572eabfe753df03ec38b8f1349d5a8bd118"),
]}


def _register_cmr_release() -> None:
    """The authors' release (collagelab/CMR). Checksums are those of the pinned commit's files."""
    files = CMR_RELEASE_SHA256
    upstream = {"hf-tasks.txt": "self-instruct/data/tasks"}
    for rel, digest in sorted(files.items()):
        SOURCES[f"cmr-release/{rel}"] = _gh(f"cmr-release/{rel}", CMR, upstream.get(rel, f"data/{rel}"), digest)
    for exp in ("apibench-hf", "mllm", "hugging-bench-1", "hugging-bench-2"):
        rel = f"processed/cleaned-{exp}-train.json"
        SOURCES[f"cmr-release/{rel}"] = _gh(f"cmr-release/{rel}", CMR, f"data/{rel}", optional=True)
    for exp in ("exp3", "exp4"):
        rel = f"raw/{exp}/{exp}-train.jsonl"
        SOURCES[f"cmr-release/{rel}"] = _gh(f"cmr-release/{rel}", CMR, f"data/{rel}", optional=True)


CMR_RELEASE_SHA256: dict[str, str] = {
    "hf-tasks.txt": "edac75f083427982edbf7efd07fe569506e94f53930f925b1c789382b6208a04",
    "model_indices/e1.json": "95d0830836809d3ed47ca9568f47104f7c66229ba4ebdd829cc7c3080116db3d",
    "model_indices/e1_e2.json": "c66a9da370e65a43aa28d868bc754d727e4784fbb119fb8d9ef0a008236e2d70",
    "model_indices/e1_e2_e3.json": "e5a97e4849c579b23cf106f52c896647b3acf985a1af68dd992baa3383cfa5dc",
    "model_indices/e1_e2_e3_e4.json": "bd6145abce21f62ebe0050f01b20122f02c3c315998ca04d70e4e31858be3e4e",
    "processed/cleaned-apibench-hf-eval.json": "54cabaa2698b9f7aa98b0457b2bc16bd22c6d7e8d83885c5885e7fe3857a10b3",
    "processed/cleaned-apibench-hf-val.json": "662ec2e9b1776ee16876f9e40550a47a31951908be0038a352edc984712ef1b6",
    "processed/cleaned-hugging-bench-1-eval.json": "65c7ea130edd46f59505c8210ae086bf786c7cf04aae951b1a84ce3ffd295498",
    "processed/cleaned-hugging-bench-1-val.json": "ded5405c99032a852806e56775a8e68ed5722fdfb048a29f1cbac3644825d027",
    "processed/cleaned-hugging-bench-2-eval.json": "c2a4ee5377b73cd8f6a88c2a9ee746994b4de5e59139b568d145970ade5e9f15",
    "processed/cleaned-hugging-bench-2-val.json": "2ac90b32b24cbf4c40bfc8d757cd7cd9aa54982f9046ec6b5795991568ff4096",
    "processed/cleaned-mllm-eval.json": "bee73f2895bb2a5f42ed889397fbc1589d8dbdc3f7b6f22472fb7e8151e7aae1",
    "processed/cleaned-mllm-val.json": "ce51a6969f85096e988087cf4bf0c15b2a0a3fa30528752b3c4e149f3cca4303",
    "processed/hugging-bench-domains.json": "8343ef18c215bcb2282151d466bca3d004bbbf4382a92c71fb6c6ca275fdda2a",
    "raw/exp3/exp3-eval.jsonl": "028e27a7ec55525f355446618e85b089ae7ee82eedaa96ad5822a211c23d3f89",
    "raw/exp3/exp3-test.jsonl": "99d62de6467a5470b96fde37bb63657b9254d8eb38d2d3036b5104eb7f575774",
    "raw/exp3/exp3-val.jsonl": "a8a78843099a4bf319934521c27b87a3f34c8caf03a8b47e29a620c5453675e3",
    "raw/exp4/exp4-eval.jsonl": "fe97aef739a881b3857e3000b6a3d190a13ceae737bf0adc7ddce90edc1bd066",
    "raw/exp4/exp4-test.jsonl": "7f00b280e2266eeab16aceba21efcabfc9d0b2cda6f5a5c7f4299705380fb0e3",
    "raw/exp4/exp4-val.jsonl": "960f18d4452f0cde6d5c234c1a7f0b63659d04bd852a7537ca2d76d1ef524649",
}
_register_cmr_release()


def default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("cmrbench")) / "sources"


class SourceResolver:
    """Hands out verified local copies of pinned upstream files.

    Lookup order: the mirror folder, then the download cache, then (unless offline) a download of
    the pinned revision into the cache. ``resolve`` raises :class:`SourceError` naming the file and
    every place it looked; ``available`` answers without raising, for optional files.
    """

    def __init__(self, mirror: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 offline: bool | None = None):
        mirror = mirror if mirror is not None else os.environ.get(SOURCES_ENV)
        self.mirror = Path(mirror).expanduser().resolve() if mirror else None
        if self.mirror is not None and not self.mirror.is_dir():
            raise SourceError(f"sources folder {self.mirror} does not exist (from --sources or ${SOURCES_ENV}).")
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        if offline is None:
            offline = os.environ.get(OFFLINE_ENV, "") not in ("", "0") or os.environ.get("HF_HUB_OFFLINE", "") == "1"
        self.offline = offline
        self.sha256: dict[str, str] = {}

    def _candidates(self, key: str) -> list[Path]:
        places = [self.cache_dir / key]
        if self.mirror is not None:
            places.insert(0, self.mirror / key)
        return places

    def resolve(self, key: str) -> Path:
        if key not in SOURCES:
            raise SourceError(f"unknown source '{key}'; known sources: see `cmrbench sources`.")
        spec = SOURCES[key]
        for place in self._candidates(key):
            if place.is_file():
                self.sha256[key] = spec.verify(place)
                return place
        if self.offline:
            looked = ", ".join(str(p) for p in self._candidates(key))
            raise SourceError(f"source '{key}' ({spec.repo}@{spec.revision[:7]}:{spec.path}) not found; looked in "
                              f"{looked}. Point --sources (or ${SOURCES_ENV}) at a mirror that has it, "
                              "or allow downloads.")
        return self._download(spec)

    def available(self, key: str) -> bool:
        try:
            self.resolve(key)
        except SourceError as err:
            if "checksum mismatch" in str(err):
                raise
            return False
        return True

    def _download(self, spec: SourceFile) -> Path:
        target = self.cache_dir / spec.key
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(spec.url, timeout=60) as resp:
                shutil.copyfileobj(resp, out)
            self.sha256[spec.key] = spec.verify(Path(tmp))
            os.replace(tmp, target)
        except (urllib.error.URLError, OSError) as err:
            Path(tmp).unlink(missing_ok=True)
            looked = ", ".join(str(p) for p in self._candidates(spec.key))
            raise SourceError(f"source '{spec.key}' not found in {looked}, and downloading {spec.url} failed: "
                              f"{err}. Offline? Use --sources DIR with a mirror.") from err
        except SourceError:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target
