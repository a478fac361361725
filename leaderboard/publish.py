"""Push a built CMRBench folder and/or a folder of results to a Hub dataset repo (``cmrbench publish``).

One atomic commit (``HfApi.create_commit``) holds exactly the files that ``--dry-run`` lists, and the
commit sha is reported back: that is the revision to pin (``load_dataset(repo, config, revision=sha)``).
Before anything is sent the folders are checked: a dataset folder must hold its card (``README.md``) and
``manifest.json``, and every Parquet file must match the sha256 the manifest records; every ``*.json``
of a results folder must be a valid results or leaderboard file. ``--dry-run`` needs no network and no
token. Offline (``HF_HUB_OFFLINE=1``) or without a connection, the command stops with one clear line.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cmrbench.analysis import verify
from cmrbench.data import Benchmark, default_data_dir
from cmrbench.fileio import sha256_file
from cmrbench.leaderboard.board import Leaderboard
from cmrbench.results import RESULTS_NAME, load_results

DEFAULT_ENDPOINT = "https://huggingface.co"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class PublishError(RuntimeError):
    """A publish that cannot go ahead; the message is one line meant for the user."""


@dataclass(frozen=True)
class PlannedFile:
    path_in_repo: str
    local_path: Path
    size: int
    sha256: str
    source: str = "dataset"  # "dataset" or "results"


@dataclass(frozen=True)
class PublishReport:
    repo_id: str
    repo_url: str
    endpoint: str
    branch: str
    commit_sha: str
    commit_url: str
    pr_url: str | None
    n_files: int
    n_bytes: int


def _walk(folder: Path) -> list[Path]:
    """Regular files under ``folder``, sorted, skipping hidden names (.git, .cache, ...), __pycache__ and router
    checkpoints (``*.checkpoints/``: weights for resuming, not results)."""
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).parts
        if any(part.startswith(".") or part == "__pycache__" or part.endswith(".checkpoints") for part in rel):
            continue
        if p.is_symlink():
            raise PublishError(f"{p}: symbolic links are not published; copy the file instead")
        if p.is_file():
            out.append(p)
    return out


def _check_dataset(folder: Path, files: dict[str, PlannedFile]) -> dict:
    for required in ("README.md", "manifest.json"):
        if not (folder / required).is_file():
            raise PublishError(f"{folder}: not a built CMRBench folder ({required} is missing; run `cmrbench build`)")
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except ValueError as err:
        raise PublishError(f"{folder / 'manifest.json'}: not valid JSON ({err})") from err
    for rel, sha in sorted((manifest.get("files") or {}).items()):
        planned = files.get(rel)
        if planned is None:
            raise PublishError(f"{folder}: {rel} is listed in manifest.json but missing")
        if planned.sha256 != sha:
            raise PublishError(f"{folder / rel}: sha256 {planned.sha256[:12]}… differs from manifest.json "
                               f"({sha[:12]}…); rebuild the folder")
    return manifest


def _check_results_file(path: Path, bench: Benchmark) -> None:
    """A results file must verify against its predictions on the build; a leaderboard file must validate."""
    if RESULTS_NAME.match(path.name):
        try:
            verify(path, bench)
        except (ValueError, FileNotFoundError) as err:
            raise PublishError(f"{path}: not published, it does not verify: {err}") from err
        return
    try:
        load_results(path)
        raise PublishError(f"{path}: a results file must be named <router>__<dataset>__seed<N>.json")
    except ValueError as results_err:
        try:
            Leaderboard.model_validate_json(path.read_text(encoding="utf-8"))
            return
        except ValueError:
            first = str(results_err).splitlines()[0]
            raise PublishError(f"{path}: neither a results file nor a leaderboard file ({first})") from results_err


def plan_upload(dataset: Path | None = None, results: Path | None = None,
                results_prefix: str = "results", data: Path | None = None) -> list[PlannedFile]:
    """Exactly the files one publish commits, with their path in the repo, size and sha256, sorted by path.

    Args:
        dataset: a built CMRBench folder; its files go to the root of the repo.
        results: a folder of results (``*.json`` checked, predictions Parquet and anything else kept);
            its files go under ``results_prefix`` (``""``: the root).
        results_prefix: folder in the repo for the results files.
        data: the build results files are verified against (default: ``dataset``, else where ``cmrbench build``
            writes).
    """
    if dataset is None and results is None:
        raise PublishError("nothing to publish: give --dataset DIR and/or --results DIR")
    planned: dict[str, PlannedFile] = {}

    def add(folder: Path, prefix: str, source: str) -> dict[str, PlannedFile]:
        if not folder.is_dir():
            raise PublishError(f"{folder}: no such folder")
        added = {}
        for p in _walk(folder):
            rel = p.relative_to(folder).as_posix()
            in_repo = f"{prefix.strip('/')}/{rel}" if prefix.strip("/") else rel
            if in_repo in planned:
                raise PublishError(f"{in_repo} would be uploaded twice (from the dataset and the results folder); "
                                   "use --results-prefix")
            added[rel] = planned[in_repo] = PlannedFile(in_repo, p, p.stat().st_size, sha256_file(p), source)
        return added

    if dataset is not None:
        dataset = Path(dataset)
        _check_dataset(dataset, add(dataset, "", "dataset"))
    if results is not None:
        results = Path(results)
        added = add(results, results_prefix, "results")
        jsons = [f for f in added.values() if f.local_path.suffix == ".json"]
        if not jsons:
            raise PublishError(f"{results}: no results files (*.json) to publish")
        bench = Benchmark(data or dataset or default_data_dir())
        for f in jsons:
            _check_results_file(f.local_path, bench)
    return [planned[k] for k in sorted(planned)]


def format_plan(files: list[PlannedFile], repo_id: str, branch: str, endpoint: str) -> str:
    """The dry-run listing: one line per file (path, size in bytes, sha256) and a total."""
    total = sum(f.size for f in files)
    width = max([len("path")] + [len(f.path_in_repo) for f in files])
    lines = [f"dry run: {len(files)} files, {total:,} bytes would be committed to dataset {repo_id} "
             f"(branch {branch}) on {endpoint}; nothing was sent",
             f"{'path'.ljust(width)}  {'bytes':>12}  sha256"]
    lines += [f"{f.path_in_repo.ljust(width)}  {f.size:>12,}  {f.sha256}" for f in files]
    return "\n".join(lines)


def _offline() -> bool:
    from huggingface_hub import constants
    check = getattr(constants, "is_offline_mode", None)
    return bool(check() if callable(check) else getattr(constants, "HF_HUB_OFFLINE", False))


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300] + ("…" if len(text) > 300 else "")


def _explain(err: BaseException, endpoint: str) -> PublishError:
    """Turn what huggingface_hub / the HTTP client raised into one line for the user."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
    chain, e = [], err
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if isinstance(e, OfflineModeIsEnabled):
            return PublishError(f"offline (HF_HUB_OFFLINE is set): cannot reach {endpoint}; unset it to publish, "
                                "or use --dry-run to list the files")
    for e in chain:
        if isinstance(e, HfHubHTTPError):
            status = getattr(getattr(e, "response", None), "status_code", None)
            if status in (401, 403):
                return PublishError(f"{endpoint} refused the upload (HTTP {status}): use a token with write access "
                                    "to the repo (`hf auth login`, HF_TOKEN, or --token-env VAR)")
            return PublishError(f"{endpoint} answered with an error: {_one_line(e)}")
    names = {type(e).__name__ for e in chain}
    network = {"ConnectError", "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout", "NetworkError",
               "RemoteProtocolError", "ProxyError", "ReadError", "WriteError", "TransportError", "ConnectionError",
               "gaierror", "ConnectionRefusedError", "TimeoutError"}
    if names & network or any(isinstance(e, OSError) for e in chain):
        return PublishError(f"cannot reach {endpoint} (no connection: {_one_line(chain[-1])}); check the network, "
                            "or use --dry-run to list the files")
    return PublishError(f"upload to {endpoint} failed: {type(err).__name__}: {_one_line(err)}")


def default_message(files: list[PlannedFile], dataset: Path | None) -> str:
    parts = []
    if dataset is not None:
        try:
            m = json.loads((Path(dataset) / "manifest.json").read_text(encoding="utf-8"))
            parts.append(f"{m.get('dataset', 'CMRBench')} {m.get('dataset_version', '')} "
                         f"({m.get('stream', '?')} stream, builder {m.get('builder_version', '?')})".replace("  ", " "))
        except (OSError, ValueError):
            parts.append("CMRBench dataset")
    n_results = sum(1 for f in files if f.source == "results" and f.local_path.suffix == ".json")
    if n_results:
        parts.append(f"{n_results} results files")
    return "Publish " + " and ".join(parts) + " with cmrbench publish"


def publish(files: list[PlannedFile], repo_id: str, *, branch: str | None = None, endpoint: str | None = None,
            token: str | None = None, message: str = "Publish with cmrbench", create_pr: bool = False,
            private: bool | None = None, api: Any = None) -> PublishReport:
    """Create the dataset repo if needed and commit ``files`` in one commit; return the pinned revision.

    Args:
        files: from :func:`plan_upload` (the same list ``--dry-run`` prints).
        repo_id: ``ORG/NAME`` of a dataset repo.
        branch: branch to commit to (created from main when missing); default ``main``.
        endpoint: Hub URL (default ``$HF_ENDPOINT`` or https://huggingface.co).
        token: write token (default: huggingface_hub's own lookup: ``HF_TOKEN``, then the stored login).
        message: commit message.
        create_pr: open a pull request with the commit instead of committing to the branch.
        private: visibility of a newly created repo (an existing repo keeps its own).
        api: an ``HfApi``-like object (default ``HfApi(endpoint=endpoint, token=token)``).
    """
    if not REPO_ID.match(repo_id or ""):
        raise PublishError(f"--repo {repo_id!r}: use ORG/NAME")
    if not files:
        raise PublishError("nothing to publish: the folders hold no files")
    from huggingface_hub import CommitOperationAdd, HfApi, constants
    endpoint = (endpoint or constants.ENDPOINT or DEFAULT_ENDPOINT).rstrip("/")
    if _offline():
        raise PublishError(f"offline (HF_HUB_OFFLINE is set): cannot reach {endpoint}; unset it to publish, "
                           "or use --dry-run to list the files")
    api = api or HfApi(endpoint=endpoint, token=token)
    target = branch or "main"
    try:
        repo_url = api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private)
        if target != "main" and not create_pr:
            api.create_branch(repo_id, branch=target, repo_type="dataset", exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=str(f.local_path))
                      for f in files]
        info = api.create_commit(repo_id, operations=operations, commit_message=message, repo_type="dataset",
                                 revision=None if create_pr else target, create_pr=create_pr)
    except PublishError:
        raise
    except Exception as err:  # noqa: BLE001 - everything becomes one line; CMRBENCH_DEBUG shows the chain
        raise _explain(err, endpoint) from err
    return PublishReport(repo_id=repo_id, repo_url=str(repo_url), endpoint=endpoint, branch=target,
                         commit_sha=info.oid, commit_url=info.commit_url, pr_url=getattr(info, "pr_url", None),
                         n_files=len(files), n_bytes=sum(f.size for f in files))


def format_report(report: PublishReport, has_dataset: bool) -> str:
    lines = [f"pushed {report.n_files} files ({report.n_bytes:,} bytes) to dataset {report.repo_id} on "
             f"{report.endpoint}",
             f"pinned revision: {report.commit_sha}" + (f" (pull request {report.pr_url})" if report.pr_url
                                                         else f" (branch {report.branch})"),
             f"commit: {report.commit_url}"]
    if has_dataset:
        lines.append(f'load it with: datasets.load_dataset("{report.repo_id}", "experience_1", '
                     f'revision="{report.commit_sha}")')
    return "\n".join(lines)


def plan_as_json(files: list[PlannedFile]) -> str:
    return json.dumps([{"path": f.path_in_repo, "size": f.size, "sha256": f.sha256} for f in files], indent=2)


def report_as_json(report: PublishReport) -> str:
    return json.dumps(asdict(report), indent=2)


def token_from_env(name: str | None) -> str | None:
    """The token in environment variable ``name``; None (huggingface_hub's own lookup) when no name is given."""
    if not name:
        return None
    value = os.environ.get(name, "").strip()
    if not value:
        raise PublishError(f"--token-env {name}: the environment variable {name} is not set or empty")
    return value
