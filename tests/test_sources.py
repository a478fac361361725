"""The resolver downloads pinned files when online; tested against a loopback server, never the network."""

from __future__ import annotations

import http.server
import threading

import pytest

from cmrbench.sources import GITHUB_RAW_ENV, SOURCES, SOURCES_ENV, SourceError, SourceResolver

KEY = "apibench/torchhub_api.jsonl"


@pytest.fixture(autouse=True)
def no_mirror(monkeypatch):
    """These tests exercise downloads: no mirror from the environment (CI sets one)."""
    monkeypatch.delenv(SOURCES_ENV, raising=False)


@pytest.fixture()
def server(sources_dir, tmp_path):
    """Serves <repo>/<commit>/<path> like GitHub raw, from the mirror; records the paths asked for."""
    spec = SOURCES[KEY]
    root = tmp_path / "www"
    target = root / spec.repo / spec.revision / spec.path
    target.parent.mkdir(parents=True)
    target.write_bytes((sources_dir / KEY).read_bytes())
    asked: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            asked.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", target, asked
    httpd.shutdown()


def test_download_is_verified_and_cached(server, tmp_path, monkeypatch):
    url, _, asked = server
    monkeypatch.setenv(GITHUB_RAW_ENV, url)
    resolver = SourceResolver(None, cache_dir=tmp_path / "cache", offline=False)
    path = resolver.resolve(KEY)
    assert path == tmp_path / "cache" / KEY and resolver.sha256[KEY] == SOURCES[KEY].sha256
    assert len(asked) == 1
    SourceResolver(None, cache_dir=tmp_path / "cache", offline=False).resolve(KEY)
    assert len(asked) == 1  # second time from the cache


def test_corrupt_download_is_rejected_and_not_cached(server, tmp_path, monkeypatch):
    url, target, _ = server
    target.write_text("not the pinned file\n")
    monkeypatch.setenv(GITHUB_RAW_ENV, url)
    with pytest.raises(SourceError, match="checksum mismatch"):
        SourceResolver(None, cache_dir=tmp_path / "cache", offline=False).resolve(KEY)
    assert not (tmp_path / "cache" / KEY).exists()


def test_unreachable_upstream_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv(GITHUB_RAW_ENV, "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(SourceError, match="Use --sources DIR"):
        SourceResolver(None, cache_dir=tmp_path / "cache", offline=False).resolve(KEY)


def test_unknown_source_and_missing_mirror(tmp_path):
    with pytest.raises(SourceError, match="unknown source"):
        SourceResolver(tmp_path, offline=True).resolve("nope.json")
    with pytest.raises(SourceError, match="does not exist"):
        SourceResolver(tmp_path / "absent", offline=True)
