"""CMRBench v1 built from the mirrored upstream files: the paper's counts, splits, determinism, loaders."""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from cmrbench.builders.folder import build, read_manifest
from cmrbench.builders.records import BuildInputError, dedupe_key
from cmrbench.cli import main
from cmrbench.data import Benchmark
from cmrbench.sources import SourceError, SourceResolver

PAPER_MODELS = {1: 852, 2: 481, 3: 520, 4: 547}
PAPER_TEST = {1: 867, 2: 809, 3: 984, 4: 1033}
PAPER_CARDS = {1: 873, 2: 1354, 3: 1874, 4: 2421}


def test_paper_counts(real_build):
    manifest = read_manifest(real_build)
    stats = {s["experience"]: s for s in manifest["statistics"]}
    assert {e: s["models"] for e, s in stats.items()} == PAPER_MODELS
    assert {e: s["test"] for e, s in stats.items()} == PAPER_TEST
    assert {e: s["cards"] for e, s in stats.items()} == PAPER_CARDS
    assert [s["new_models"] for s in stats.values()] == [852, 361, 450, 464]
    assert manifest["unique_models"] == 2127 and manifest["unique_domains"] == 58
    assert all(s["train"] > 0 and s["validation"] > 0 for s in stats.values())


def test_test_splits_are_the_released_ones_and_never_in_train(real_build, sources_dir):
    bench = Benchmark(real_build)
    all_test = set()
    for t, name in enumerate(["apibench-hf", "mllm", "hugging-bench-1", "hugging-bench-2"], start=1):
        released = [json.loads(line) for line in
                    (sources_dir / f"cmr-release/processed/cleaned-{name}-eval.json").read_text().splitlines()]
        test = bench.split(t, "test")
        assert sorted(zip(test["model_id"], test["prompt"].map_elements(dedupe_key, return_dtype=pl.String))) == \
            sorted((r["model_name"], dedupe_key(r["instruction"])) for r in released)
        all_test |= {dedupe_key(p) for p in test["prompt"]}
    for t in range(1, 5):
        pool = pl.concat([bench.split(t, "train"), bench.split(t, "validation")])
        assert not {dedupe_key(p) for p in pool["prompt"]} & all_test
        assert pool["prompt"].map_elements(dedupe_key, return_dtype=pl.String).is_unique().all()
        assert set(pool["model_id"]) <= bench.experience_models(t)


def test_prompt_ids_are_stable_and_unique(real_build):
    bench = Benchmark(real_build)
    ids = pl.concat([bench.rows(t) for t in range(1, 5)])["prompt_id"]
    assert ids.is_unique().all() and ids.str.starts_with("e").all()


def test_two_builds_are_byte_identical(real_build, sources_dir, tmp_path):
    again = tmp_path / "cmrbench-v1"
    build(again, SourceResolver(sources_dir, offline=True))
    for path in sorted(p for p in real_build.rglob("*") if p.is_file()):
        assert (again / path.relative_to(real_build)).read_bytes() == path.read_bytes(), path.name


def test_loaders_read_the_folder_offline(real_build):
    import datasets
    exp = datasets.load_dataset(str(real_build), "experience_2")
    assert exp["test"].num_rows == 809 and set(exp) == {"train", "validation", "test"}
    models = datasets.load_dataset(str(real_build), "models", split="models")
    assert models.num_rows == 2127
    assert pl.read_parquet(real_build / "cards/cards.parquet").height == 2421
    card = (real_build / "README.md").read_text()
    assert card.startswith("---\n") and "config_name: experience_4" in card and "## Citation" in card
    # the default config is the whole stream, never experience 1 alone
    stream = datasets.load_dataset(str(real_build))
    assert stream["test"].num_rows == 3693 and set(stream["test"]["experience"]) == {1, 2, 3, 4}
    # the card is one the Hub accepts: metadata fields it expects with license "other", sources cited
    from huggingface_hub import DatasetCard
    hub_card = DatasetCard.load(real_build / "README.md")
    meta = hub_card.data.to_dict()
    assert meta["license"] == "other" and meta["license_link"] == "LICENSE.md" and (real_build / "LICENSE.md").is_file()
    assert meta["size_categories"] == ["10K<n<100K"] and len(meta["source_datasets"]) == 3
    assert "https://arxiv.org/abs/2605.28577" in hub_card.text
    assert "@article{patil2023gorilla" in hub_card.text and "@article{wang2024mllmtool" in hub_card.text


def test_manifest_lists_checksums_and_gaps(real_build):
    manifest = read_manifest(real_build)
    assert manifest["sources"]["toolmmbench/audio_tx2t.json"]["sha256"].startswith("9c3572a5")
    assert "cmr-release/processed/cleaned-mllm-train.json" in manifest["missing_sources"]
    for rel, digest in manifest["files"].items():
        assert len(digest) == 64 and (real_build / rel).is_file()
    assert manifest["notes"]["family_agreement"]["pair_f1"] > 0.8


def test_timeline_stream_reslices_the_same_prompts(real_build, sources_dir, tmp_path):
    out = tmp_path / "timeline"
    manifest = build(out, SourceResolver(sources_dir, offline=True), stream="timeline", experiences=6)
    assert manifest["experiences"] == 6 and manifest["unique_models"] == 2127
    bench = Benchmark(out)
    born = dict(bench.models.select("model_id", "created_at").rows())
    dates = [[born[m] for m in bench.experience_models(t)] for t in range(1, 7)]
    assert all(max(dates[i]) <= min(dates[i + 1]) for i in range(5))  # oldest models first, no overlap


def test_extra_hubs_append_experiences(sources_dir, tmp_path):
    out = tmp_path / "extended"
    manifest = build(out, SourceResolver(sources_dir, offline=True), extra_hubs=["torchhub", "tensorflowhub"])
    assert manifest["stream"] == "paper+torchhub+tensorflowhub" and manifest["experiences"] == 6
    stats = {s["experience"]: s for s in manifest["statistics"]}
    assert [stats[t]["models"] for t in range(1, 5)] == list(PAPER_MODELS.values())  # the paper's part unchanged
    assert stats[5]["test"] == 186 and stats[5]["train"] > 0  # Torch Hub: eval pairs test, train pairs train
    assert stats[6]["train"] == 0 and stats[6]["test"] > 600  # TF Hub's train file is missing offline
    bench = Benchmark(out)
    torch_models = bench.experience_models(5)
    assert sum(":" in m for m in torch_models) > 0.8 * len(torch_models)  # repo:entrypoint labels
    assert set(bench.experience(6).cards["model_id"]) >= bench.experience_models(6)
    assert bench.rows(5)["family"].null_count() == 0


def test_info_command(real_build, capsys):
    assert main(["info", "--data", str(real_build)]) == 0
    out = capsys.readouterr().out
    assert "2,127 unique models" in out and "1,033" in out


# ---------------------------------------------------------------------------------------- bad input

@pytest.fixture()
def broken_mirror(sources_dir, tmp_path, monkeypatch) -> Path:
    """A copy of the release files whose checksums are not enforced, so tests can damage them."""
    from cmrbench import sources
    mirror = tmp_path / "mirror"
    shutil.copytree(sources_dir, mirror)
    monkeypatch.setattr(sources, "SOURCES", {k: replace(v, sha256=None, git_blob=None)
                                             for k, v in sources.SOURCES.items()})
    return mirror


def test_malformed_and_incomplete_rows_are_quarantined_with_counts(broken_mirror, tmp_path):
    path = broken_mirror / "cmr-release/processed/cleaned-mllm-val.json"
    lines = path.read_text().splitlines()
    row = json.loads(lines[0])
    lines[0] = "{not json"
    lines[1] = json.dumps({**row, "domain": "Cooking Recipe Generation"})
    lines[2] = json.dumps({k: v for k, v in row.items() if k != "model_name"})
    lines[3] = json.dumps({**row, "instruction": "###Instruction:   "})
    path.write_text("\n".join(lines) + "\n")
    manifest = build(tmp_path / "out", SourceResolver(broken_mirror, offline=True))
    q = manifest["quarantine"]
    assert q["empty prompt"] >= 1 and q["unknown domain"] >= 1 and q["missing field: model_name"] >= 1
    assert q["malformed JSON (Expecting property name enclosed in double quotes)"] == 1
    quarantined = gzip.decompress((tmp_path / "out/quarantine.jsonl.gz").read_bytes()).decode()
    assert "cmr-release/processed/cleaned-mllm-val.json:1" in quarantined


def test_broken_card_index_is_a_clear_error(broken_mirror, tmp_path):
    path = broken_mirror / "cmr-release/model_indices/e1_e2.json"
    path.write_text("garbage\n" + path.read_text())
    with pytest.raises(BuildInputError, match="e1_e2.json: the cumulative card index does not extend"):
        build(tmp_path / "out", SourceResolver(broken_mirror, offline=True))
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_missing_and_corrupt_sources_name_the_file(sources_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="source 'cmr-release/processed/cleaned-apibench-hf-val.json'.*looked in"):
        build(tmp_path / "out", SourceResolver(empty, cache_dir=tmp_path / "cache", offline=True))
    bad = tmp_path / "bad"
    shutil.copytree(sources_dir, bad)
    (bad / "apibench/huggingface_eval.json").write_text("tampered\n")
    with pytest.raises(SourceError, match="checksum mismatch for source 'apibench/huggingface_eval.json'"):
        SourceResolver(bad, offline=True).resolve("apibench/huggingface_eval.json")
