"""The APIBench and ToolMMBench builders: on the mirrored upstream files, and on small broken files."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import date, datetime, timezone
from pathlib import Path

import polars as pl
import pytest

import cmrbench.sources
from cmrbench.builders.apibench import (APIBENCH_SCHEMA, HF_CUTOFF, build_apibench, hf_model_id, parse_model_id,
                                        tfhub_model_id, torchhub_model_id)
from cmrbench.builders.hub_metadata import epoch_ms
from cmrbench.builders.records import BuildInputError, Quarantine, dedupe_key
from cmrbench.builders.taxonomy import KNOWN_DOMAINS
from cmrbench.builders.toolmmbench import TOOLMM_CUTOFF, TOOLMMBENCH_SCHEMA, build_toolmmbench
from cmrbench.sources import SOURCES_ENV, SourceResolver


@pytest.fixture(scope="module")
def mirror() -> Path:
    """The mirrored raw data: $CMRBENCH_SOURCES, else shared/data/raw next to the repository."""
    path = Path(os.environ.get(SOURCES_ENV) or Path(__file__).resolve().parents[2] / "shared/data/raw")
    if not (path / "apibench/huggingface_eval.json").is_file():
        pytest.skip(f"no source mirror at {path} (set {SOURCES_ENV})")
    return path


@pytest.fixture(scope="module")
def resolver(mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> SourceResolver:
    return SourceResolver(mirror=mirror, cache_dir=tmp_path_factory.mktemp("cache"), offline=True)


def _build(builder, resolver: SourceResolver, **kwargs) -> tuple[pl.DataFrame, Quarantine]:
    quarantine = Quarantine()
    return builder(resolver, quarantine, **kwargs), quarantine


@pytest.fixture(scope="module")
def hf(resolver: SourceResolver) -> tuple[pl.DataFrame, Quarantine]:
    return _build(build_apibench, resolver)


@pytest.fixture(scope="module")
def toolmm(resolver: SourceResolver) -> tuple[pl.DataFrame, Quarantine]:
    return _build(build_toolmmbench, resolver)


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


# --- model ids, on api_call strings taken from the upstream files ---------------------------------------

@pytest.mark.parametrize("api_call, expected", [
    ("AutoModel.from_pretrained('princeton-nlp/unsup-simcse-roberta-base')", "princeton-nlp/unsup-simcse-roberta-base"),
    ("./run.sh --skip_data_prep false --skip_train true --download_model mio/amadeus", "mio/amadeus"),
    ("pipeline('fill-mask', model='albert-base-v2')", "albert-base-v2"),
    ("T5Model.from_pretrained('t5-small')", "t5-small"),
    ("timm.create_model('mobilenetv3_large_100.ra_in1k', pretrained=True)", "timm/mobilenetv3_large_100.ra_in1k"),
    ("timm.create_model('hf_hub:timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k')",
     "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"),
    ("Pipeline.from_pretrained('pyannote/speaker-diarization@2.1',use_auth_token='ACCESS_TOKEN_GOES_HERE')",
     "pyannote/speaker-diarization"),
    ("pipeline(sentiment-analysis, model=AutoModel.from_pretrained('cardiffnlp/twitter-roberta-base-sentiment-latest'),"
     " tokenizer=AutoTokenizer.from_pretrained('cardiffnlp/twitter-roberta-base-sentiment-latest'))",
     "cardiffnlp/twitter-roberta-base-sentiment-latest"),
    # unquoted ids (upstream typos)
    ("pipeline('text-to-image', model=SG161222/Realistic_Vision_V1.4)", "SG161222/Realistic_Vision_V1.4"),
    ("separator.from_hparams(source=speechbrain/sepformer-wham16k-enhancement, "
     "savedir='pretrained_models/sepformer-wham16k-enhancement')", "speechbrain/sepformer-wham16k-enhancement"),
    # URL and file paths are not ids
    ("Wav2Vec2Model.from_pretrained(cached_download('https://huggingface.co/facebook/textless_sm_cs_en/resolve/main/"
     "model.pt'))", "facebook/textless_sm_cs_en"),
    ("load('path_to_folder/sklearn_model.joblib')", None),
    ("joblib.load('model.joblib')", None),
    ("StableDiffusionPipeline.from_pretrained(model_id, torch_dtype=torch.float16)", None),
    ("S2THubInterface()", None),
])
def test_parse_model_id(api_call: str, expected: str | None) -> None:
    assert parse_model_id(api_call) == expected


@pytest.mark.parametrize("api_call, api_name, expected", [
    ("joblib.load('model.joblib')", "abhishek/autotrain-iris-knn", "abhishek/autotrain-iris-knn"),
    ("classifier(sequence, candidate_labels, hypothesis_template=hypothesis_template)",
     "AutoModelForSequenceClassification.from_pretrained('Sahajtomar/German_Zeroshot')", "Sahajtomar/German_Zeroshot"),
    ("joblib.load('model.joblib')", "autotrain-dragino-7-7-1860763606", None),
    ("HubertModel.from_pretrained('facebook/hubert-large-ll60k')", "hubert-large-ll60k", "facebook/hubert-large-ll60k"),
])
def test_hf_model_id_falls_back_to_api_name(api_call: str, api_name: str, expected: str | None) -> None:
    assert hf_model_id(api_call, api_name) == expected


def test_hub_model_ids() -> None:
    assert tfhub_model_id("hub.KerasLayer('https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/4')") \
        == "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/4"
    assert torchhub_model_id("torch.hub.load(repo_or_dir='pytorch/vision', model='deeplabv3_resnet50', "
                             "pretrained=True)") == "pytorch/vision:deeplabv3_resnet50"
    assert torchhub_model_id("model = torch.hub.load('intel-isl/MiDaS', 'DPT_Hybrid', pretrained=True)") \
        == "intel-isl/MiDaS:DPT_Hybrid"
    assert torchhub_model_id("torch.hub.load(repo_or_dir='NVIDIA/DeepLearningExamples:torchhub', "
                             "model='nvidia_resnet50', pretrained=True)") \
        == "NVIDIA/DeepLearningExamples:nvidia_resnet50"
    assert torchhub_model_id("torch.hub.load(repo_or_dir='pytorch/fairseq')") == "pytorch/fairseq"
    assert torchhub_model_id("hub.load('https://tfhub.dev/google/universal-sentence-encoder/4')") is None


# --- the mirror --------------------------------------------------------------------------------------------

def test_apibench_hf_eval(hf: tuple[pl.DataFrame, Quarantine], resolver: SourceResolver) -> None:
    frame, quarantine = hf
    assert dict(frame.schema) == APIBENCH_SCHEMA
    eval_lines = _lines(resolver.resolve("apibench/huggingface_eval.json"))
    evals = frame.filter(pl.col("upstream_split") == "eval")
    eval_rejected = [r for r in quarantine.rows if r["origin"].startswith("apibench/huggingface_eval.json:")]
    assert eval_lines == 911
    assert evals.height + len(eval_rejected) == eval_lines  # every row kept or quarantined
    assert 880 <= evals.height <= 911
    assert set(quarantine.counts()) <= {"no model id"} and quarantine.counts().get("no model id", 0) <= 15
    if not resolver.available("apibench/huggingface_train.json"):
        assert frame["upstream_split"].unique().to_list() == ["eval"]
    assert frame["model_id"].null_count() == 0 and frame["model_id"].str.contains("/").mean() > 0.9
    assert set(frame["domain"]) <= KNOWN_DOMAINS
    assert frame["source"].unique().to_list() == ["APIBench"]
    assert not frame["prompt"].str.contains("(?i)#+ ?(instruction|output)").any()
    assert (frame["prompt"].str.len_chars() > 0).all()
    assert frame["created_at"].drop_nulls().max() <= epoch_ms(HF_CUTOFF)
    assert frame["created_at"].null_count() < frame.height / 2
    card = json.loads(frame.filter(pl.col("model_id") == "princeton-nlp/unsup-simcse-roberta-base")["card"][0])
    assert card["model_name"] == "princeton-nlp/unsup-simcse-roberta-base"
    assert not {"api_arguments", "python_environment_requirements", "example_code"} & set(card)
    assert frame["origin"].to_list() == sorted(frame["origin"], key=lambda o: (o.rsplit(":", 1)[0],
                                                                               int(o.rsplit(":", 1)[1])))


def test_apibench_rows_with_spaced_instruction_prefix(resolver: SourceResolver) -> None:
    """PROVENANCE: 5 eval rows begin "### Instruction" (3 in the HF file, 2 in the TF one)."""
    spaced = 0
    for hub, key in (("huggingface", "apibench/huggingface_eval.json"),
                     ("tensorflowhub", "apibench/tensorflow_eval.json")):
        lines = resolver.resolve(key).read_text(encoding="utf-8").splitlines()
        origins = [f"{key}:{n}" for n, line in enumerate(lines, start=1)
                   if json.loads(line)["code"].startswith("### Instruction")]
        prompts = _build(build_apibench, resolver, hub=hub)[0].filter(pl.col("origin").is_in(origins))["prompt"]
        assert prompts.len() == len(origins) and not prompts.str.starts_with("#").any()
        spaced += len(origins)
    assert spaced == 5


def test_apibench_is_deterministic(hf: tuple[pl.DataFrame, Quarantine], resolver: SourceResolver) -> None:
    assert _build(build_apibench, resolver)[0].equals(hf[0])


@pytest.mark.parametrize("hub, rows", [("tensorflowhub", 688), ("torchhub", 186 + 837)])
def test_apibench_extra_hubs(resolver: SourceResolver, hub: str, rows: int) -> None:
    frame, quarantine = _build(build_apibench, resolver, hub=hub)
    assert frame.height + len(quarantine.rows) == rows
    assert frame.height > 0.95 * rows
    assert set(frame["domain"]) <= KNOWN_DOMAINS  # hub task names mapped into the HF taxonomy
    assert frame["created_at"].null_count() == frame.height
    if hub == "tensorflowhub":
        assert frame["model_id"].str.starts_with("https://tfhub.dev/").all()
    else:
        assert set(frame["upstream_split"]) == {"eval", "train"}
        assert frame.filter(pl.col("model_id") == "intel-isl/MiDaS:DPT_Hybrid").height > 0


def test_toolmmbench_mirror(toolmm: tuple[pl.DataFrame, Quarantine], resolver: SourceResolver) -> None:
    frame, quarantine = toolmm
    assert dict(frame.schema) == TOOLMMBENCH_SCHEMA
    counts = quarantine.counts()
    read = [k for k in ("toolmmbench/audio_tx2t.json", "toolmmbench/video_tx2t.json", "toolmmbench/combined_data.json",
                        "toolmmbench/image_tx2t.json", "toolmmbench/text_t2t.json") if resolver.available(k)]
    total = sum(len(json.loads(resolver.resolve(k).read_text(encoding="utf-8"))) for k in read)
    prompt_rejects = sum(1 for r in quarantine.rows if r["origin"].startswith("toolmmbench/"))
    assert frame.height + prompt_rejects == total  # every upstream row kept or quarantined
    if len(read) == 3:  # the staged mirror: 28 + 12 + 83 "unknown" answers
        assert counts["unknown answer"] == 123
    assert counts["duplicate prompt"] > 1000 and counts["model below min prompts"] > 0
    # unknown dropped, one row per prompt, >= 7 prompts per model
    assert not frame["model_id"].str.to_lowercase().is_in(["unknown"]).any()
    assert not frame["acceptable_models"].list.contains("unknown").any()
    assert frame["prompt"].map_elements(dedupe_key, return_dtype=pl.String).n_unique() == frame.height
    assert frame.group_by("model_id").len()["len"].min() >= 7
    assert (frame["acceptable_models"].list.first() == frame["model_id"]).all()
    assert set(frame["domain"]) <= KNOWN_DOMAINS
    assert set(frame["modality"]) <= {"text", "image", "audio", "video"}
    assert frame["created_at"].drop_nulls().max() <= epoch_ms(TOOLMM_CUTOFF)
    assert frame["source"].unique().to_list() == ["ToolMMBench"]
    assert frame.height > 500 and frame["model_id"].n_unique() > 40
    assert all(json.loads(c)["model_name"] == m for c, m in frame.select("card", "model_id").iter_rows())


def test_toolmmbench_min_prompts_is_a_parameter(toolmm: tuple[pl.DataFrame, Quarantine],
                                                resolver: SourceResolver) -> None:
    loose, _ = _build(build_toolmmbench, resolver, min_prompts=1)
    assert loose["model_id"].n_unique() > toolmm[0]["model_id"].n_unique()


# --- small broken inputs -----------------------------------------------------------------------------------

@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """write(key, text) puts a file into a scratch mirror with checksums off for it; resolver() reads the mirror."""

    def write(key: str, text: str | bytes) -> Path:
        monkeypatch.setitem(cmrbench.sources.SOURCES, key,
                            dataclasses.replace(cmrbench.sources.SOURCES[key], sha256=None, git_blob=None))
        path = tmp_path / "mirror" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return path

    def resolver() -> SourceResolver:
        return SourceResolver(mirror=tmp_path / "mirror", cache_dir=tmp_path / "cache", offline=True)

    return write, resolver


def _jsonl(rows: list) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def _model_info(write, rows: list[tuple[str, datetime | None, str]]) -> None:
    frame = pl.DataFrame(rows, schema={"modelId": pl.String(), "creation_time": pl.Datetime("us", "UTC"),
                                       "task_category": pl.String()}, orient="row")
    path = write("huggingbench/ai-model-card-analysis/model_info.parquet", b"")
    frame.write_parquet(path)


def _pair(instruction: str, api_call: str, domain: str = "Natural Language Processing Fill-Mask", **api_data) -> dict:
    return {"code": f"###Instruction: {instruction}\n###Output: <<<domain>>>: {domain}", "api_call": api_call,
            "provider": "Hugging Face", "api_data": {"domain": domain, "api_name": "x", "api_call": api_call,
                                                     "example_code": "long", **api_data}}


def test_apibench_broken_rows_are_quarantined(scratch) -> None:
    write, resolver = scratch
    good = _pair("Fill in the blank.", "pipeline('fill-mask', model='bert-base-uncased')")
    write("apibench/huggingface_eval.json", _jsonl([
        good,
        '{"code": "###Instruction: cut off',
        {k: v for k, v in good.items() if k != "api_call"},
        _pair("   ", "pipeline('fill-mask', model='bert-base-uncased')"),
        _pair("Translate this.", "Translator()"),
        _pair("Do magic.", "AutoModel.from_pretrained('a/b')", domain="Wizardry Spells"),
        "[1, 2]",
        {**good, "code": good["code"].replace("###Instruction: Fill", "### Instruction: Also fill")},
        _pair("Newer model.", "AutoModel.from_pretrained('new/model')"),
    ]))
    _model_info(write, [("bert-base-uncased", datetime(2018, 11, 14, tzinfo=timezone.utc), "fill-mask"),
                        ("new/model", datetime(2024, 2, 1, tzinfo=timezone.utc), "fill-mask")])
    quarantine = Quarantine()
    frame = build_apibench(resolver(), quarantine)
    reasons = quarantine.counts()
    assert reasons.pop("missing field: api_call") == 1
    assert reasons.pop("empty prompt") == 1
    assert reasons.pop("no model id") == 1
    assert reasons.pop("unknown domain") == 1
    assert reasons.pop("not a JSON object") == 1
    assert [(reason.startswith("malformed JSON"), n) for reason, n in reasons.items()] == [(True, 1)]
    assert frame["origin"].to_list() == ["apibench/huggingface_eval.json:1", "apibench/huggingface_eval.json:8",
                                         "apibench/huggingface_eval.json:9"]
    assert frame["prompt"].to_list() == ["Fill in the blank.", "Also fill in the blank.", "Newer model."]
    born = epoch_ms(date(2018, 11, 14))
    assert frame["created_at"].to_list() == [born, born, epoch_ms(HF_CUTOFF)]  # the 2024 model is clamped
    assert "example_code" not in json.loads(frame["card"][0])


def test_torchhub_unparsable_code_is_quarantined(scratch) -> None:
    write, resolver = scratch
    pair = {"api_call": "torch.hub.load(repo_or_dir='pytorch/vision', model='resnet18', pretrained=True)",
            "provider": "PyTorch", "api_data": {"domain": "Classification"}}
    write("apibench/torchhub_eval.json", _jsonl([{**pair, "code": "###Instruction: Classify.\n###Output: {}"}]))
    write("apibench/torchhub_train.json", _jsonl([
        {**pair, "code": "{'Instruction': Sort my photos, please., 'Output': {'domain': 'Classification'}}"},
        {**pair, "code": "{'Instruction': no output key here}"},
        {**pair, "code": "{'Instruction': 'Quoted request.', 'Output': {}}", "api_data": {}},
    ]))
    quarantine = Quarantine()
    frame = build_apibench(resolver(), quarantine, hub="torchhub")
    assert quarantine.counts() == {"missing field: api_data.domain": 1, "unparsable code": 1}
    assert frame.select("prompt", "model_id", "domain", "upstream_split").rows() == [
        ("Classify.", "pytorch/vision:resnet18", "Computer Vision Image Classification", "eval"),
        ("Sort my photos, please.", "pytorch/vision:resnet18", "Computer Vision Image Classification", "train")]


def _conversation(prompt: str, answer: str | list[str], modality: str = "text") -> dict:
    return {"input_modality": modality, "conversations": [{"from": "human", "value": prompt},
                                                          {"from": "gpt", "value": answer}]}


def _toolmm_metadata(write, api_docs: list[dict], p0: list[dict], model_info: list) -> None:
    write("apibench/huggingface_api.jsonl", _jsonl(api_docs))
    write("huggingbench/hugginggpt/p0_models.jsonl", _jsonl(p0))
    _model_info(write, model_info)


@pytest.mark.parametrize("broken", ['{"not": "an array"}', '[{"id": 1}', ""])
def test_toolmmbench_broken_file_names_it(scratch, broken: str) -> None:
    write, resolver = scratch
    write("toolmmbench/audio_tx2t.json", broken)
    write("toolmmbench/video_tx2t.json", "[]")
    write("toolmmbench/combined_data.json", "[]")
    _toolmm_metadata(write, [], [], [])
    with pytest.raises(BuildInputError, match="toolmmbench/audio_tx2t.json"):
        build_toolmmbench(resolver(), Quarantine())


def test_toolmmbench_rules(scratch) -> None:
    write, resolver = scratch
    common = [_conversation(f"Common prompt {i}.", "org/common") for i in range(9)]
    rare = [_conversation(f"Rare prompt {i}.", ["org/rare", "org/common"], "image") for i in range(7)]
    write("toolmmbench/audio_tx2t.json", json.dumps([
        _conversation("Shared   prompt.", "org/common", "audio"),  # duplicate: org/rare has fewer rows
        _conversation("What is this?", "unknown", "audio"),
        {"id": 3, "input_modality": "audio"},
    ]))
    write("toolmmbench/video_tx2t.json", json.dumps([_conversation(f"Few {i}.", "org/few", "video") for i in range(3)]))
    write("toolmmbench/combined_data.json", json.dumps(
        common + rare + [_conversation("shared prompt.", ["org/rare"]), _conversation("Unknown too.", ["unknown"])]
        + [_conversation(f"Orphan {i}.", "org/orphan") for i in range(7)]
        + [_conversation(f"Tagged {i}.", " org/tagged") for i in range(7)]))
    _toolmm_metadata(
        write,
        api_docs=[{"domain": "Natural Language Processing Fill-Mask", "api_name": "org/common",
                   "api_call": "pipeline('fill-mask', model='org/common')", "example_code": "long"}],
        p0=[{"id": "org/rare", "pipeline_tag": "image-classification", "description": "d" * 1500}],
        model_info=[("org/tagged", datetime(2025, 1, 1, tzinfo=timezone.utc), "text-generation"),
                    ("org/orphan", datetime(2020, 1, 1, tzinfo=timezone.utc), "unknown")])
    quarantine = Quarantine()
    frame = build_toolmmbench(resolver(), quarantine)
    assert quarantine.counts() == {"duplicate prompt": 1, "missing field: conversations": 1,
                                   "model below min prompts": 3, "no domain": 7, "unknown answer": 2}
    assert [r["origin"] for r in quarantine.rows if r["reason"] == "missing field: conversations"] \
        == ["toolmmbench/audio_tx2t.json:3"]
    assert [r["origin"] for r in quarantine.rows if r["reason"] == "duplicate prompt"] \
        == ["toolmmbench/audio_tx2t.json:1"]
    per_model = dict(frame.group_by("model_id").len().iter_rows())
    assert per_model == {"org/common": 9, "org/rare": 8, "org/tagged": 7}
    domains = dict(frame.select("model_id", "domain").unique().iter_rows())
    assert domains == {"org/common": "Natural Language Processing Fill-Mask",
                       "org/rare": "Computer Vision Image Classification",
                       "org/tagged": "Natural Language Processing Text Generation"}
    rare_row = frame.filter(pl.col("model_id") == "org/rare").row(0, named=True)
    assert rare_row["acceptable_models"] == ["org/rare", "org/common"] and rare_row["modality"] == "image"
    card = json.loads(rare_row["card"])
    assert card["functionality"] == "Image Classification" and len(card["description"]) == 1000
    assert card["framework"] == "Hugging Face" and card["api_call"] == ""
    assert "example_code" not in json.loads(frame.filter(pl.col("model_id") == "org/common")["card"][0])
    created = dict(frame.select("model_id", "created_at").unique().iter_rows())
    assert created == {"org/common": None, "org/rare": None, "org/tagged": epoch_ms(TOOLMM_CUTOFF)}


def test_toolmmbench_duplicate_tie_breaks_on_model_id(scratch) -> None:
    write, resolver = scratch
    rows = [_conversation(f"B {i}.", "org/b") for i in range(7)] + [_conversation(f"A {i}.", "org/a") for i in range(7)]
    write("toolmmbench/audio_tx2t.json", json.dumps([_conversation("Same.", "org/b")]))
    write("toolmmbench/video_tx2t.json", json.dumps([_conversation("Same.", "org/a")]))
    write("toolmmbench/combined_data.json", json.dumps(rows))
    _toolmm_metadata(write, [], [{"id": m, "pipeline_tag": "fill-mask"} for m in ("org/a", "org/b")], [])
    frame = build_toolmmbench(resolver(), Quarantine())
    assert frame.filter(pl.col("prompt") == "Same.")["model_id"].to_list() == ["org/a"]
